"""Engine crash loop: `kill -9` of the matching engine under load, over and over.

Traders place and cancel crossing orders through the real API (gunicorn) while the
engine is killed at random instants and made to die at each named crash point
(`EXCHANGE_CRASH_POINTS` in its environment). After every death a new engine takes
over; at the end the system settles and every answer a client got is checked
against the database, with all the invariants.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from collections import Counter

import pytest

from tests.reliability import harness
from tests.reliability.harness import Journal, Load, scale

pytestmark = pytest.mark.django_db(transaction=True)

CRASH_POINTS = (
    "engine.mid_batch",
    "engine.after_commit_before_reply",
    "engine.after_reply_before_ack",
    "engine.between_commit_and_enqueue",
)


def _restart(engines, arm, next_mode: str, deaths: Counter, *, cold: bool = False):
    """A new engine (armed for the next planned death), once it owns the symbol. An armed
    engine may die at its crash point before its first heartbeat (its first batch is the
    backlog): that is one more death of that kind; another is started."""
    incarnation = engines.spawn(crash_points=arm(next_mode), cold=cold)
    while True:
        try:
            engines.wait_live(incarnation, timeout=60)
            return incarnation
        except RuntimeError:
            if next_mode not in CRASH_POINTS or incarnation.crash_point_hit() != next_mode:
                raise
            deaths[next_mode] += 1
            incarnation = engines.spawn(crash_points=arm(next_mode))


def _dead_letters() -> int:
    from exchange.infra import redis_client
    from matching import feed

    return redis_client().xlen(feed.dead_letter_key("BTC-USDT"))


@pytest.mark.timeout(scale(300, 3600))
def test_engine_crash_loop(btc_market, engines, web, traders, figures, seed, request):
    rng = random.Random(seed)
    settle = harness.settlement_available()
    if settle:
        request.getfixturevalue("worker")
    # The plan: each named crash point several times, random external kills, a few cold
    # restarts, kills of an owner with a standby waiting, and pauses (SIGSTOP) of the owner.
    plan = [point for point in CRASH_POINTS for _ in range(scale(2, 15))]
    plan += ["kill"] * scale(9, 110) + ["cold"] * scale(2, 10) + ["standby"] * scale(2, 20) + ["pause"] * scale(2, 10)
    rng.shuffle(plan)

    def arm(mode: str) -> dict | None:
        return {mode: round(rng.uniform(0.05, 0.3), 3)} if mode in CRASH_POINTS else None

    incarnation = engines.spawn(crash_points=arm(plan[0]))
    engines.wait_live(incarnation)
    journal = Journal()
    load = Load(traders(4), journal, seed=seed, threads_per_trader=2).start()
    verdict = harness.Verdict()
    recoveries: dict[str, list[float]] = {"warm": [], "cold": [], "standby": []}
    deaths: Counter = Counter()
    unexpected: list[str] = []
    downtimes: list[float] = []
    pauses: list[float] = []
    try:
        for n, mode in enumerate(plan):
            next_mode = plan[n + 1] if n + 1 < len(plan) else "final"
            if mode == "pause":
                # A stalled owner (GC pause, overloaded host): it must simply carry on.
                time.sleep(rng.uniform(0.05, 0.5))
                pause = rng.uniform(0.5, 4.0)
                os.killpg(incarnation.pid, signal.SIGSTOP)
                time.sleep(pause)
                os.killpg(incarnation.pid, signal.SIGCONT)
                pauses.append(pause)
                if next_mode in CRASH_POINTS:  # the next death needs an armed engine
                    engines.kill(incarnation)
                    deaths["kill -9"] += 1
                    died_at = incarnation.exited_at or time.monotonic()
                    incarnation = _restart(engines, arm, next_mode, deaths)
                    recoveries["warm"].append(time.monotonic() - died_at)
                continue
            if mode == "standby":
                # A second engine for the symbol must stand by (one owner per symbol) and
                # take over when the owner dies.
                standby = engines.spawn(crash_points=arm(next_mode))
                time.sleep(rng.uniform(0.5, 1.5))
                if engines.owner_pid("BTC-USDT") != incarnation.pid or not engines.alive(standby):
                    unexpected.append(f"standby {standby.pid} took the symbol from live owner {incarnation.pid} or died:\n{standby.logs()[-2000:]}")
                engines.kill(incarnation)
                deaths["kill -9 (standby waiting)"] += 1
                died_at = incarnation.exited_at or time.monotonic()
                incarnation = standby
                engines.wait_live(incarnation, timeout=60)
                recoveries["standby"].append(time.monotonic() - died_at)
                continue
            if mode in CRASH_POINTS:
                code = engines.wait_exit(incarnation, timeout=30)
                if code is None:  # never reached under this load: kill it instead
                    engines.kill(incarnation)
                    deaths["kill (crash point not reached)"] += 1
                else:
                    hit = incarnation.crash_point_hit()
                    if code != 137 or hit != mode:
                        unexpected.append(f"engine {incarnation.pid} armed with {mode} exited {code} at {hit}:\n{incarnation.logs()[-3000:]}")
                    deaths[hit or f"exit {code}"] += 1
            else:
                time.sleep(rng.uniform(0.05, 1.0))
                if not engines.alive(incarnation):
                    unexpected.append(f"engine {incarnation.pid} died on its own ({incarnation.exit_code}):\n{incarnation.logs()[-3000:]}")
                engines.kill(incarnation)
                deaths["kill -9"] += 1
            died_at = incarnation.exited_at or time.monotonic()
            stayed_down = False
            if mode == "kill" and rng.random() < 0.3:
                # Stay down a while: requests time out (202), the backlog piles up.
                downtime = rng.uniform(0.5, 3.0)
                time.sleep(downtime)
                downtimes.append(downtime)
                stayed_down = True
            cold = mode == "cold"
            incarnation = _restart(engines, arm, next_mode, deaths, cold=cold)
            # Recovery: from the death (or the restart, after a deliberate downtime) until
            # the new engine owns the symbol, its book rebuilt.
            recover_from = incarnation.started if stayed_down else died_at
            recoveries["cold" if cold else "warm"].append(time.monotonic() - recover_from)
            if n % 5 == 4:
                harness.check_invariants(quiescent=False, verdict=verdict, pending_grace_seconds=60)
                harness.log(f"{n + 1}/{len(plan)} events, {len(journal.outcomes)} requests, recovery max {max(recoveries['warm'], default=0):.2f}s")
    finally:
        load.stop()
    assert not load.errors, load.errors

    # Settle: the last engine is unarmed; it applies whatever is still journaled, and
    # the worker drains the outbox.
    assert engines.alive() and not engines.current.crash_points
    quiet_seconds = harness.wait_engine_quiet(timeout=60)
    drain_seconds = harness.wait_outbox_drained(timeout=scale(120, 900)) if settle else None

    outcome_verdict = harness.check_outcomes(journal)
    verdict.figures.update(outcome_verdict.figures)
    for name, found in outcome_verdict.problems.items():
        verdict.add(name, found)
    harness.check_invariants(quiescent=True, settled=settle, verdict=verdict)
    verdict.add("engine_died_unexpectedly", unexpected)
    verdict.add("unexpected_server_errors", harness.unexpected_server_errors(web))

    from orders.models import Trade

    kills = sum(deaths.values())
    warm = sorted(recoveries["warm"]) or [0.0]
    figures.update(
        {
            "known bugs met (open, pinned)": verdict.figures.get("known_bugs_met", {}),
            "kills (total)": kills,
            "kills by kind": dict(deaths),
            "crash points hit": {point: deaths[point] for point in CRASH_POINTS},
            "recovery max, warm restart (s)": round(max(warm), 3),
            "recovery p50, warm restart (s)": round(statistics.median(warm), 3),
            "recovery max, cold start (s)": round(max(recoveries["cold"]), 3) if recoveries["cold"] else None,
            "standby takeover max (s)": round(max(recoveries["standby"]), 3) if recoveries["standby"] else None,
            "owner paused (SIGSTOP) n, max s": f"{len(pauses)}, {max(pauses, default=0):.2f}",
            "deliberate downtimes (n, max s)": f"{len(downtimes)}, {max(downtimes, default=0):.2f}",
            "orders placed / accepted": f"{verdict.figures['placed']} / {verdict.figures['accepted']}",
            "answered 202 / 503 / no answer": f"{verdict.figures['answered_202']} / {verdict.figures['answered_503']} / {verdict.figures['unanswered']}",
            "answered 500 (known bugs)": f"{verdict.figures['answered_5xx']} ({harness.known_server_errors(web)} known tracebacks)",
            "cancels": verdict.figures["cancels"],
            "trades": Trade.objects.count(),
            "engine dead letters": _dead_letters(),
            "settle after load (s)": round(quiet_seconds, 2),
            "outbox drain (s)": round(drain_seconds, 2) if drain_seconds is not None else "no worker",
            "lost orders": verdict.count("lost_orders"),
            "duplicate trades": verdict.count("invariant.no_duplicate_trade") + verdict.count("invariant.no_replayed_trade"),
            "phantom orders": verdict.count("phantom_orders"),
            "replies ahead of the DB": verdict.count("reply_ahead_of_db"),
            "invariant violations": sum(len(v) for k, v in verdict.problems.items() if k.startswith("invariant.")),
        }
    )
    assert kills >= scale(20, 200)
    assert all(deaths[point] >= 1 for point in CRASH_POINTS), deaths
    assert verdict.ok, verdict.describe()
