"""End to end: real Celery worker subprocesses (threads pool, embedded beat), the real
wallet over HTTP (through a fault-injecting proxy), PostgreSQL and Redis."""

from __future__ import annotations

import pytest

from settlement import bench, services
from settlement.models import HoldRelease, Settlement, SettlementAttempt
from tests.settlement.helpers import all_settled, scrape, statuses, wait_until

pytestmark = pytest.mark.slow


def outcomes(trade_ids) -> dict[str, int]:
    from django.db.models import Count

    rows = (
        SettlementAttempt.objects.filter(settlement_id__in=trade_ids)
        .values("outcome")
        .annotate(n=Count("pk"))
    )
    return {row["outcome"]: row["n"] for row in rows}


def releases_done(order_ids) -> bool:
    return HoldRelease.objects.filter(order_id__in=order_ids).exclude(status="done").count() == 0


def test_happy_path_every_trade_settles_and_money_is_conserved(scenario, workers):
    made = scenario(pairs=10, trades=200)
    released = bench.releases_commit(made)
    worker = workers.start()
    services.outbox_dispatch(trade_ids=made.trade_ids, released_order_ids=released)
    wait_until(lambda: all_settled(made.trade_ids), timeout=30, message="all settled")
    wait_until(lambda: releases_done(released), timeout=30, message="releases done")
    assert bench.scenario_check(made) == []
    assert outcomes(made.trade_ids) == {"applied": 200}
    samples = wait_until(
        lambda: (
            (s := scrape(worker.extra["metrics_url"])).get(
                'settlement_outcomes_total{kind="settlement",outcome="settled"}'
            )
            == 200
            and s
        ),
        timeout=10,
        message="metrics",
    )
    assert samples['settlement_outcomes_total{kind="hold_release",outcome="done"}'] == 10
    assert samples["settlement_trade_to_settled_seconds_count"] == 200
    assert samples['settlement_attempts_total{kind="settlement",result="applied"}'] == 200
    wait_until(
        lambda: (
            scrape(worker.extra["metrics_url"]).get('settlement_backlog{kind="settlement"}') == 0
        ),
        timeout=10,
        message="backlog gauge at 0",
    )
    assert samples['settlement_failed_awaiting_review{kind="settlement"}'] == 0


def test_wallet_503_for_a_while_then_recovering_settles_everything(scenario, workers, wallet_proxy):
    made = scenario(pairs=4, trades=40)
    released = bench.releases_commit(made)
    wallet_proxy.mode = "503"
    workers.start(SETTLEMENT_MAX_ATTEMPTS=8)
    services.outbox_dispatch(trade_ids=made.trade_ids, released_order_ids=released)
    wait_until(
        lambda: (
            Settlement.objects.filter(trade_id__in=made.trade_ids, attempts__gte=2).count() == 40
        ),
        timeout=20,
        message="two failed attempts each",
    )
    assert statuses(made.trade_ids) == {"pending": 40}
    wallet_proxy.mode = "pass"
    wait_until(
        lambda: all_settled(made.trade_ids), timeout=30, message="all settled after recovery"
    )
    wait_until(lambda: releases_done(released), timeout=30, message="releases done")
    seen = outcomes(made.trade_ids)
    assert seen["applied"] == 40 and seen["unavailable"] >= 80 and "duplicate" not in seen
    assert (
        Settlement.objects.filter(
            trade_id__in=made.trade_ids, last_error_code="wallet_unavailable"
        ).count()
        == 40
    )
    assert bench.scenario_check(made) == []


def test_wallet_down_past_the_last_attempt_fails_then_a_staff_retry_settles_once(
    scenario, workers, wallet_proxy, admin_user
):
    made = scenario(pairs=2, trades=6)
    wallet_proxy.mode = "drop"  # connections closed unanswered
    workers.start(SETTLEMENT_MAX_ATTEMPTS=3)
    services.outbox_dispatch(trade_ids=made.trade_ids, released_order_ids=[])
    wait_until(
        lambda: statuses(made.trade_ids) == {"failed": 6}, timeout=30, message="dead letters"
    )
    row = Settlement.objects.get(trade_id=made.trade_ids[0])
    assert row.attempts == 3 and row.last_error_code == "wallet_unavailable"
    assert outcomes(made.trade_ids) == {"unavailable": 12, "gave_up": 6}
    wallet_proxy.mode = "pass"
    assert services.settlements_retry(trade_ids=made.trade_ids, actor=admin_user) == 6
    wait_until(lambda: all_settled(made.trade_ids), timeout=30, message="settled after the retry")
    seen = outcomes(made.trade_ids)
    assert seen["applied"] == 6 and seen["retry_requested"] == 6 and "duplicate" not in seen
    services.releases_process(order_ids=bench.releases_commit(made))
    assert bench.scenario_check(made) == []


def test_a_worker_dying_between_the_wallet_and_the_mark_still_settles_exactly_once(
    scenario, workers, wallet_proxy
):
    made = scenario(pairs=2, trades=10)
    doomed = workers.start(
        beat=False, EXCHANGE_CRASH_POINTS="settlement.after_wallet_before_mark=1"
    )
    services.outbox_dispatch(trade_ids=made.trade_ids, released_order_ids=[])
    wait_until(lambda: not doomed.alive(), timeout=30, message="the worker to crash")
    assert "crash point hit: settlement.after_wallet_before_mark" in doomed.logs()
    applied_before = wallet_proxy.operations_calls
    assert applied_before >= 1
    pending = Settlement.objects.filter(
        trade_id__in=made.trade_ids, status="pending", attempts=1
    ).count()
    assert pending >= 1  # claimed, money moved, not marked
    workers.start()  # with beat: the sweep re-sends the rows once their lease is over
    wait_until(lambda: all_settled(made.trade_ids), timeout=30, message="settled after the crash")
    seen = outcomes(made.trade_ids)
    assert seen.get("applied", 0) + seen.get("duplicate", 0) == 10
    services.releases_process(order_ids=bench.releases_commit(made))
    assert bench.scenario_check(made) == []


def test_a_worker_killed_mid_call_still_settles_exactly_once(scenario, workers, wallet_proxy):
    made = scenario(pairs=2, trades=10)
    wallet_proxy.mode = "delay"
    wallet_proxy.delay = 1.5
    victim = workers.start(beat=False)
    services.outbox_dispatch(trade_ids=made.trade_ids, released_order_ids=[])
    wait_until(
        lambda: wallet_proxy.counts.get("delay", 0) >= 1,
        timeout=20,
        message="a wallet call in flight",
    )
    victim.kill()  # SIGKILL, mid-call; the wallet still applies what reached it
    wallet_proxy.mode = "pass"
    assert statuses(made.trade_ids) == {"pending": 10}
    workers.start()
    wait_until(lambda: all_settled(made.trade_ids), timeout=30, message="settled after the kill")
    services.releases_process(order_ids=bench.releases_commit(made))
    assert bench.scenario_check(made) == []


def test_the_same_settlement_enqueued_many_times_moves_money_once(scenario, workers):
    made = scenario(pairs=2, trades=20)
    workers.start(concurrency=8)
    for _ in range(6):
        services.outbox_dispatch(trade_ids=made.trade_ids, released_order_ids=[])
    for trade_id in made.trade_ids[:5]:
        services.outbox_dispatch(trade_ids=[trade_id, trade_id], released_order_ids=[])
    wait_until(lambda: all_settled(made.trade_ids), timeout=30, message="all settled")
    assert outcomes(made.trade_ids) == {"applied": 20}
    services.releases_process(order_ids=bench.releases_commit(made))
    assert bench.scenario_check(made) == []
