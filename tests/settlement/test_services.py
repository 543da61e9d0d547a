"""Settlement services against the real wallet process (HTTP) and PostgreSQL, no worker."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from settlement import bench, services
from settlement.clients.wallet import owner_for_user, wallet_client
from settlement.models import HoldRelease, Settlement, SettlementAttempt
from tests.settlement.helpers import statuses
from tests.support.processes import free_port


def history(trade_id: int) -> list[str]:
    return list(
        SettlementAttempt.objects.filter(settlement_id=trade_id)
        .order_by("at", "id")
        .values_list("outcome", flat=True)
    )


def balances(scenario) -> dict[tuple[str, str], Decimal]:
    client = wallet_client()
    owners = {owner_for_user(p.buyer_id) for p in scenario.pairs} | {
        owner_for_user(p.seller_id) for p in scenario.pairs
    }
    out = {}
    for owner in owners | {"exchange-fees"}:
        for balance in client.balances(owner):
            out[(owner, balance.asset)] = balance.total
    return out


@pytest.fixture
def wallet_down(settings):
    """wallet_down(): point the client at a port nobody listens on (connection refused: transient)."""

    def down():
        settings.WALLET_URL = f"http://127.0.0.1:{free_port()}"
        wallet_client.cache_clear()

    yield down
    wallet_client.cache_clear()


def test_settles_every_trade_once_and_conserves_money(scenario):
    made = scenario(pairs=3, trades=12)
    report = services.settlements_process(trade_ids=made.trade_ids)
    assert sorted(report.done) == sorted(made.trade_ids)
    assert report.wallet_calls == 1 and report.claimed == 12
    assert statuses(made.trade_ids) == {"settled": 12}
    row = Settlement.objects.get(trade_id=made.trade_ids[0])
    assert row.attempts == 1 and row.settled_at is not None and row.next_attempt_at is None
    assert history(row.trade_id) == ["applied"]
    # the rest of each buy hold goes back
    released = bench.releases_commit(made)
    assert len(released) == 3
    release_report = services.releases_process(order_ids=released)
    assert sorted(release_report.done) == sorted(released)
    assert bench.scenario_check(made) == []


def test_processing_again_moves_nothing(scenario):
    made = scenario(pairs=2, trades=4)
    services.settlements_process(trade_ids=made.trade_ids)
    before = balances(made)
    again = services.settlements_process(trade_ids=made.trade_ids)
    assert again.claimed == 0 and again.wallet_calls == 0
    assert balances(made) == before


def test_a_lost_mark_is_answered_duplicate_and_moves_money_once(scenario):
    made = scenario(pairs=2, trades=4)
    services.settlements_process(trade_ids=made.trade_ids)
    before = balances(made)
    # as if the worker died after the wallet call, before marking: rows still pending
    Settlement.objects.filter(trade_id__in=made.trade_ids).update(
        status="pending", next_attempt_at=timezone.now(), settled_at=None
    )
    report = services.settlements_process(trade_ids=made.trade_ids)
    assert sorted(report.done) == sorted(made.trade_ids)
    assert balances(made) == before
    assert history(made.trade_ids[0]) == ["applied", "duplicate"]


def test_a_claimed_row_is_left_alone_until_its_lease_runs_out(scenario, settings):
    made = scenario(pairs=1, trades=2)
    settings.SETTLEMENT_LEASE_SECONDS = 30
    with connection.cursor() as cursor:
        claimed = services._claim_settlements(cursor, ids=made.trade_ids, limit=50, top_up=False)
    assert len(claimed) == 2
    assert (
        services.settlements_process(trade_ids=made.trade_ids).claimed == 0
    )  # in flight elsewhere
    Settlement.objects.filter(trade_id__in=made.trade_ids).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    report = services.settlements_process(trade_ids=made.trade_ids)  # that worker died: take over
    assert sorted(report.done) == sorted(made.trade_ids)
    assert Settlement.objects.get(trade_id=made.trade_ids[0]).attempts == 2


def test_a_stale_worker_cannot_overwrite_a_newer_claim(scenario):
    made = scenario(pairs=1, trades=1)
    (trade_id,) = made.trade_ids
    with connection.cursor() as cursor:
        (first,) = services._claim_settlements(cursor, ids=[trade_id], limit=1, top_up=False)
    Settlement.objects.filter(trade_id=trade_id).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    with connection.cursor() as cursor:
        (second,) = services._claim_settlements(cursor, ids=[trade_id], limit=1, top_up=False)
    assert (first[0], second[0]) == (1, 2)
    later = timezone.now() + timedelta(hours=1)
    stale = services._Mark(
        trade_id, 1, "pending", "unavailable", later, "wallet_unavailable: x", "wallet_unavailable"
    )
    assert services._mark_settlements([stale], actor="t") == {}
    row = Settlement.objects.get(trade_id=trade_id)
    assert row.next_attempt_at < later and row.last_error == ""  # the newer claim's lease stands
    assert history(trade_id) == ["unavailable"]  # the attempt is still on record


def test_top_up_fills_a_batch_with_other_due_rows(scenario, settings):
    made = scenario(pairs=2, trades=6)
    settings.SETTLEMENT_BATCH_SIZE = 50
    report = services.settlements_process(trade_ids=made.trade_ids[:1], top_up=True)
    assert report.claimed == 6 and report.wallet_calls == 1
    assert statuses(made.trade_ids) == {"settled": 6}


def test_batches_are_split_by_batch_size(scenario, settings):
    made = scenario(pairs=2, trades=7)
    settings.SETTLEMENT_BATCH_SIZE = 3
    report = services.settlements_process(trade_ids=made.trade_ids, top_up=False)
    assert report.wallet_calls == 3 and len(report.done) == 7


def test_transient_errors_back_off_then_fail_after_the_last_attempt(
    scenario, settings, wallet_down
):
    made = scenario(pairs=1, trades=2)
    wallet_down()
    settings.SETTLEMENT_MAX_ATTEMPTS = 3
    settings.SETTLEMENT_BACKOFF_BASE_SECONDS = 10
    settings.SETTLEMENT_BACKOFF_MAX_SECONDS = 100
    ids = made.trade_ids
    for attempt in (1, 2):
        started = timezone.now()
        report = services.settlements_process(trade_ids=ids)
        assert sorted(report.retry_ids) == sorted(ids) and not report.done and not report.failed
        ceiling = 10 * 2 ** (attempt - 1)
        for row in Settlement.objects.filter(trade_id__in=ids):
            assert row.status == "pending" and row.attempts == attempt
            assert row.last_error_code == "wallet_unavailable"
            wait = (row.next_attempt_at - started).total_seconds()
            assert ceiling / 2 - 1 <= wait <= ceiling + 1, wait
        assert 0 < report.retry_countdown() <= ceiling + 1
        assert services.settlements_process(trade_ids=ids).claimed == 0  # not due yet
        Settlement.objects.filter(trade_id__in=ids).update(next_attempt_at=timezone.now())
    report = services.settlements_process(trade_ids=ids)
    assert sorted(report.failed) == sorted(ids) and not report.retry
    row = Settlement.objects.get(trade_id=ids[0])
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 3, None)
    assert row.last_error.startswith("wallet_unavailable: ")
    assert history(ids[0]) == ["unavailable", "unavailable", "gave_up"]


def test_a_refused_transfer_fails_at_once(scenario):
    made = scenario(pairs=1, trades=2)
    trade_id = made.trade_ids[0]
    # the buy hold was already used up elsewhere: the wallet refuses (hold_exceeded)
    pair = made.pairs[0]
    wallet_client().apply(
        [
            {
                "key": "release:order:x",
                "type": "release",
                "hold": f"order:{pair.buy_order_id}",
                "amount": pair.buy_hold,
            }
        ]
    )
    report = services.settlements_process(trade_ids=made.trade_ids)
    assert sorted(report.failed) == sorted(made.trade_ids)
    row = Settlement.objects.get(trade_id=trade_id)
    assert (row.status, row.attempts, row.last_error_code) == ("failed", 1, "hold_exceeded")
    assert history(trade_id) == ["rejected"]


def test_a_4xx_from_the_wallet_is_permanent(scenario, settings):
    made = scenario(pairs=1, trades=1)
    settings.WALLET_TOKEN = "not-the-token"
    wallet_client.cache_clear()
    try:
        report = services.settlements_process(trade_ids=made.trade_ids)
    finally:
        wallet_client.cache_clear()
    assert report.failed == made.trade_ids
    assert Settlement.objects.get(trade_id=made.trade_ids[0]).last_error_code == "not_authenticated"


def test_a_trade_that_cannot_balance_fails_without_a_wallet_call(scenario):
    made = scenario(pairs=1, trades=2)
    from orders.models import Trade

    Trade.objects.filter(pk=made.trade_ids[0]).update(buyer_fee=Decimal("1000"))
    report = services.settlements_process(trade_ids=made.trade_ids)
    assert report.failed == [made.trade_ids[0]] and report.done == [made.trade_ids[1]]
    assert Settlement.objects.get(trade_id=made.trade_ids[0]).last_error_code == "invalid_trade"


def test_the_same_settlement_processed_concurrently_moves_money_once(scenario):
    made = scenario(pairs=2, trades=8)
    barrier = threading.Barrier(4)
    reports, errors = [], []

    def run():
        try:
            barrier.wait()
            reports.append(services.settlements_process(trade_ids=made.trade_ids, top_up=False))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sum(len(r.done) for r in reports) == 8  # each row marked by exactly one of them
    assert statuses(made.trade_ids) == {"settled": 8}
    assert (
        SettlementAttempt.objects.filter(
            settlement_id__in=made.trade_ids, outcome="applied"
        ).count()
        == 8
    )
    services.releases_process(order_ids=bench.releases_commit(made))
    assert bench.scenario_check(made) == []


def test_releases_are_idempotent_and_refusals_fail(scenario):
    made = scenario(pairs=2, trades=2)
    services.settlements_process(trade_ids=made.trade_ids)
    released = bench.releases_commit(made)
    services.releases_process(order_ids=released)
    HoldRelease.objects.filter(order_id__in=released).update(
        status="pending", next_attempt_at=timezone.now()
    )
    report = services.releases_process(order_ids=released)
    assert sorted(report.done) == sorted(released)  # answered "duplicate": released once
    assert bench.scenario_check(made) == []
    # a release of a hold already used up is refused: failed at once
    sell_order_id = made.pairs[0].sell_order_id
    HoldRelease.objects.create(
        order_id=sell_order_id,
        asset=made.base,
        amount=Decimal("0.1"),
        next_attempt_at=timezone.now(),
        created_at=timezone.now(),
    )
    report = services.releases_process(order_ids=[sell_order_id])
    row = HoldRelease.objects.get(order_id=sell_order_id)
    assert report.failed == [sell_order_id] and (row.status, row.last_error_code) == (
        "failed",
        "hold_exceeded",
    )


def test_release_transient_errors_retry(scenario, settings, wallet_down):
    made = scenario(pairs=1, trades=1)
    released = bench.releases_commit(made)
    wallet_down()
    settings.SETTLEMENT_MAX_ATTEMPTS = 2
    report = services.releases_process(order_ids=released)
    assert report.retry_ids == released
    HoldRelease.objects.update(next_attempt_at=timezone.now())
    report = services.releases_process(order_ids=released)
    assert report.failed == released
    assert HoldRelease.objects.get(order_id=released[0]).last_error_code == "wallet_unavailable"
