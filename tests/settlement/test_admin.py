"""Staff review in Django admin (test client): dead letters first, filters, detail, actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from settlement import services
from settlement.models import HoldRelease, Settlement, SettlementAttempt

CHANGELIST = "admin:settlement_settlement_changelist"


def listed(response) -> list[int]:
    return [row.trade_id for row in response.context["cl"].result_list]


def queued(broker_url: str, queue: str) -> int:
    client = redis.Redis.from_url(broker_url)
    try:
        return client.llen(queue)
    finally:
        client.close()


def test_failed_settlements_come_first(admin_client, db_trade):
    settled = db_trade(status="settled")
    pending = db_trade(status="pending")
    old_failed = db_trade(status="failed", age=timedelta(hours=3))
    new_failed = db_trade(status="failed")
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert listed(response) == [
        new_failed.trade_id,
        old_failed.trade_id,
        pending.trade_id,
        settled.trade_id,
    ]


def test_filters_by_status_market_user_error_and_age(admin_client, db_trade, make_user):
    from marketdata.models import Market

    eth = Market.objects.create(
        symbol="ETH-USDT", base_asset="ETH", quote_asset="USDT", tick_size="0.01", lot_size="0.0001",
        maker_fee="0.001", taker_fee="0.002",
    )  # fmt: skip
    alice = make_user("alice")
    a = db_trade(status="failed", error_code="wallet_unavailable", buyer=alice)
    b = db_trade(status="failed", error_code="hold_exceeded", market=eth, age=timedelta(days=2))
    c = db_trade(
        status="pending", error_code="wallet_unavailable", seller=alice, age=timedelta(minutes=30)
    )
    db_trade(status="settled")
    url = reverse(CHANGELIST)

    def ids(**query):
        response = admin_client.get(url, query)
        assert response.status_code == 200, response.content[:500]
        return sorted(listed(response))

    assert ids(status__exact="failed") == sorted([a.trade_id, b.trade_id])
    assert ids(trade__market__id__exact=eth.pk) == [b.trade_id]
    assert ids(user=alice.pk) == sorted([a.trade_id, c.trade_id])
    assert ids(error="wallet_unavailable") == sorted([a.trade_id, c.trade_id])
    assert ids(error="hold_exceeded", status__exact="failed") == [b.trade_id]
    assert ids(age="old") == [b.trade_id]
    assert ids(age="1h") == [c.trade_id]
    assert ids(q="alice") == sorted([a.trade_id, c.trade_id])
    page = admin_client.get(url).content.decode()
    assert "wallet_unavailable" in page and "hold_exceeded" in page  # error filter choices
    assert "alice" in page  # user filter choices


def test_detail_shows_trade_orders_legs_and_history_read_only(admin_client, db_trade):
    settlement = db_trade(status="failed", error_code="wallet_unavailable")
    SettlementAttempt.objects.create(
        settlement=settlement, outcome="unavailable", error="wallet_unavailable: 503", attempt=1
    )
    SettlementAttempt.objects.create(
        settlement=settlement, outcome="gave_up", error="wallet_unavailable: 503", attempt=2
    )
    trade = settlement.trade
    url = reverse("admin:settlement_settlement_change", args=[settlement.pk])
    page = admin_client.get(url).content.decode()
    assert f"trade #{trade.pk}" in page
    assert f"order:{trade.taker_order_id}" in page and f"order:{trade.maker_order_id}" in page
    assert f"trade:{trade.pk}" in page  # idempotency key
    assert "debit hold" in page and "credit available" in page
    assert "BTC: 0, USDT: 0" in page  # the legs balance per asset
    assert "gave_up" in page and "unavailable" in page
    assert 'name="_save"' not in page  # nothing to edit
    response = admin_client.post(url, {"status": "settled"})
    assert response.status_code == 403
    assert Settlement.objects.get(pk=settlement.pk).status == "failed"


def test_no_add_or_delete(admin_client, db_trade):
    settlement = db_trade()
    assert admin_client.get(reverse("admin:settlement_settlement_add")).status_code == 403
    assert (
        admin_client.get(
            reverse("admin:settlement_settlement_delete", args=[settlement.pk])
        ).status_code
        == 403
    )


def test_staff_only(client, make_user, db_trade):
    db_trade()
    client.force_login(make_user())
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_retry_action_reopens_failed_rows_and_enqueues_them(
    admin_client,
    admin_user,
    db_trade,
    django_capture_on_commit_callbacks,
    settlement_broker,
    settlement_queue,
):
    failed = db_trade(status="failed", error_code="wallet_unavailable")
    settled = db_trade(status="settled")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse(CHANGELIST),
            {"action": "retry_settlements", "_selected_action": [failed.pk, settled.pk]},
            follow=True,
        )
    assert (
        "1 settlement(s) re-sent to the workers; 1 already settled or resolved"
        in response.content.decode()
    )
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("pending", 0)
    assert Settlement.objects.get(pk=settled.pk).status == "settled"
    assert SettlementAttempt.objects.get(settlement=failed).actor == admin_user.username
    assert LogEntry.objects.filter(
        object_id=str(failed.pk), change_message="Retry requested."
    ).exists()
    assert queued(settlement_broker, settlement_queue) == 1


def test_resolve_needs_a_note(admin_client, db_trade):
    failed = db_trade(status="failed")
    url = reverse(CHANGELIST)
    response = admin_client.post(
        url, {"action": "resolve_settlements", "_selected_action": [failed.pk]}
    )
    assert response.status_code == 200 and "Note (required" in response.content.decode()
    response = admin_client.post(
        url,
        {
            "action": "resolve_settlements",
            "_selected_action": [failed.pk],
            "confirm": "yes",
            "note": "  ",
        },
    )
    assert "A note is required." in response.content.decode()
    assert Settlement.objects.get(pk=failed.pk).status == "failed"


@pytest.mark.django_db(transaction=True)
def test_resolve_asks_the_wallet_first(admin_client, admin_user, scenario):
    from settlement import bench

    made = scenario(pairs=1, trades=2)
    applied, never = made.trade_ids
    services.settlements_process(trade_ids=[applied], top_up=False)
    # both dead letters; the first one's transfer did reach the wallet
    Settlement.objects.filter(trade_id__in=made.trade_ids).update(
        status="failed", last_error_code="wallet_unavailable"
    )
    response = admin_client.post(
        reverse(CHANGELIST),
        {
            "action": "resolve_settlements",
            "_selected_action": made.trade_ids,
            "confirm": "yes",
            "note": "checked the wallet",
        },
        follow=True,
    )
    page = response.content.decode()
    assert "1 settlement(s) found applied at the wallet: marked settled." in page
    assert "1 settlement(s) resolved without transfer" in page
    first, second = Settlement.objects.get(pk=applied), Settlement.objects.get(pk=never)
    assert (first.status, first.resolution) == ("settled", "transfer_applied")
    assert (second.status, second.resolution) == ("resolved", "resolved_without_transfer")
    assert second.resolved_by == admin_user and second.resolution_note == "checked the wallet"
    assert (
        SettlementAttempt.objects.get(settlement=second, outcome="resolved_without_transfer").actor
        == admin_user.username
    )
    assert LogEntry.objects.filter(object_id=str(never)).exists()
    # the adjustment is explicit: what stays held is exactly the unresolved trade's captures
    from settlement.selectors import resolved_without_transfer_holds

    trade = second.trade
    assert resolved_without_transfer_holds() == {
        made.base: trade.quantity,
        made.quote: trade.quote_quantity,
    }
    assert bench.scenario_check(made, expect_settled=False) == []
    # resolving again is refused: it is no longer failed
    with pytest.raises(services.SettlementNotResolvable):
        services.settlement_resolve(trade_id=never, actor=admin_user, note="again")


def test_hold_release_admin_lists_and_retries(
    admin_client, db_trade, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    settlement = db_trade(status="settled")
    release = HoldRelease.objects.create(
        order=settlement.trade.taker_order, asset="USDT", amount="1.5", status="failed",
        last_error="hold_exceeded: x", last_error_code="hold_exceeded", created_at=timezone.now(),
    )  # fmt: skip
    done = HoldRelease.objects.create(
        order=db_trade(status="settled").trade.taker_order, asset="USDT", amount="2", status="done",
        created_at=timezone.now(),
    )  # fmt: skip
    url = reverse("admin:settlement_holdrelease_changelist")
    ordered = [row.order_id for row in admin_client.get(url).context["cl"].result_list]
    assert ordered == [release.order_id, done.order_id]  # dead letters first
    page = admin_client.get(url, {"status__exact": "failed"}).content.decode()
    assert f"order #{release.order_id}" in page
    detail = admin_client.get(
        reverse("admin:settlement_holdrelease_change", args=[release.pk])
    ).content.decode()
    assert f"order:{release.order_id}" in detail and 'name="_save"' not in detail
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, {"action": "retry_releases", "_selected_action": [release.pk]})
    release.refresh_from_db()
    assert (release.status, release.attempts) == ("pending", 0)
