"""Settlement faults: the worker settles live trades through a wallet that fails on purpose.

Between the Celery worker and the real wallet sits `FaultyWallet`: 503s, dropped
connections, slow answers, and timeouts *after* the wallet applied the transfer. The
worker is `kill -9`ed in the middle of its wallet calls (and its pool processes die at
the settlement crash points); a supervisor restarts it like the deployment does. Some
trades are refused for good (poisoned): they, and only they, must end as dead letters;
every other trade settles, and no money moves twice. Finally staff retry the dead
letters once the refusal is lifted, and everything must balance to the last unit.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.reliability import harness
from tests.reliability.harness import Journal, Load, scale

pytestmark = pytest.mark.django_db(transaction=True)

SETTLEMENT_CRASH_POINTS = (
    "settlement.after_claim_before_wallet",
    "settlement.after_wallet_before_mark",
    "settlement.after_mark",
)
POISON_MODULUS = 13  # trade ids divisible by it are refused by the wallet proxy


def _ready(process) -> bool:
    return process.alive() and " ready." in process.logs(tail=400)


def _poisoned(key: str) -> bool:
    return key.startswith("trade:") and int(key.split(":")[1]) % POISON_MODULUS == 0


@pytest.mark.timeout(scale(300, 3600))
def test_settlement_faults(wallet_server, btc_market, engines, web, traders, stack_env, project_processes, figures, seed):
    from orders.models import Trade
    from settlement.models import Settlement
    from settlement.services import settlements_retry

    rng = random.Random(seed)
    client_timeout = 1.0
    proxy = harness.FaultyWallet(wallet_server.url, seed=seed, client_timeout=client_timeout, poison=_poisoned)
    crash_spec = ",".join(f"{point}=0.01" for point in SETTLEMENT_CRASH_POINTS)
    env = harness.worker_env(
        stack_env,
        WALLET_URL=proxy.url,
        WALLET_TIMEOUT_SECONDS=client_timeout,
        SETTLEMENT_MAX_ATTEMPTS=25,  # transient faults alone must not dead-letter a trade
        SETTLEMENT_BATCH_SIZE=3,  # many small wallet calls: many faults
        EXCHANGE_CRASH_POINTS=crash_spec,
    )
    worker = harness.Supervised(lambda: harness.start_worker(project_processes, env=env))

    kill_wanted = threading.Event()
    kills = []

    def kill_mid_call():
        # Runs in the proxy as a worker's wallet call arrives: the worker dies mid-task;
        # the call then goes on (applied or not, as the fault draw says).
        if kill_wanted.is_set():
            kill_wanted.clear()
            process = worker.process
            if process.alive():
                process.kill()
                kills.append(time.monotonic())

    proxy.on_operations = kill_mid_call
    try:
        engines.spawn()
        engines.wait_live()
        journal = Journal()
        load = Load(traders(4), journal, seed=seed, threads_per_trader=2, pause=scale(0.0, 0.05)).start()
        wanted = scale(5, 100)
        started = time.monotonic()
        min_seconds, deadline = scale(15, 300), started + scale(150, 3000)
        try:
            while (len(kills) < wanted or time.monotonic() < started + min_seconds) and time.monotonic() < deadline:
                # Let the restarted worker work a while under the wallet's faults, then
                # kill it in the middle of its next wallet call.
                harness.wait_for(lambda: _ready(worker.process), timeout=60, what="worker ready")
                time.sleep(rng.uniform(1.0, 3.0))
                if len(kills) < wanted or rng.random() < 0.3:
                    kill_wanted.set()
                    harness.wait_for(lambda: not kill_wanted.is_set(), timeout=30, what="a wallet call to kill the worker in")
            time.sleep(1.0)
        finally:
            load.stop()
        kill_wanted.clear()
        assert not load.errors, load.errors
        assert len(kills) >= wanted, f"only {len(kills)} worker kills in time"

        harness.wait_engine_quiet(timeout=60)
        proxy.faulty = False  # faults end; the poisoned trades stay refused
        drain_seconds = harness.wait_outbox_drained(timeout=scale(180, 1200))

        trades = set(Trade.objects.values_list("id", flat=True))
        expected_dead = {t for t in trades if t % POISON_MODULUS == 0}
        dead = set(Settlement.objects.filter(status="failed").values_list("trade_id", flat=True))
        settled = set(Settlement.objects.filter(status="settled").values_list("trade_id", flat=True))
        verdict = harness.check_outcomes(journal)
        harness.check_invariants(quiescent=True, settled=False, verdict=verdict)
        verdict.add("dead_letters_not_expected", [f"trade {t} dead-lettered" for t in sorted(dead - expected_dead)])
        verdict.add("poisoned_not_dead", [f"trade {t} poisoned but not dead-lettered" for t in sorted(expected_dead - dead)])
        verdict.add("not_settled", [f"trade {t} neither settled nor dead" for t in sorted(trades - settled - dead)])
        from exchange import invariants

        # Before the retry: balances are deposits + settled trades exactly (the dead
        # letters moved nothing, nothing moved twice).
        moved_twice = invariants.balances_match_trades()
        verdict.add("money_moved_twice_or_wrongly", moved_twice)

        # Staff lift the refusal and retry the dead letters: now everything settles.
        proxy.poison = lambda key: False
        settlements_retry(trade_ids=sorted(dead), actor=None)
        retry_seconds = harness.wait_outbox_drained(timeout=120)
        harness.check_invariants(quiescent=True, verdict=verdict)
        verdict.add("unexpected_server_errors", harness.unexpected_server_errors(web))

        crash_hits = sum(p.log_path.read_text(errors="replace").count("crash point hit: settlement.") for p in worker.processes if p.log_path.exists())
        figures.update(
            {
                "known bugs met (open, pinned)": verdict.figures.get("known_bugs_met", {}),
                "worker kills mid-call (kill -9)": len(kills),
                "pool processes lost at crash points": crash_hits,
                "worker restarts (supervisor)": worker.restarts,
                "wallet calls under faults": dict(proxy.counts),
                "wallet calls after faults ended": proxy.calls_after_faults,
                "wallet answers": dict(proxy.results),
                "trades": len(trades),
                "settled / dead letters (expected)": f"{len(settled)} / {len(dead)} ({len(expected_dead)})",
                "outbox drain after load (s)": round(drain_seconds, 2),
                "dead letters retried by staff, settled in (s)": round(retry_seconds, 2),
                "money moved twice": len(moved_twice) + verdict.count("invariant.balances_match_trades"),
                "orders placed / accepted": f"{verdict.figures['placed']} / {verdict.figures['accepted']}",
                "invariant violations": sum(len(v) for k, v in verdict.problems.items() if k.startswith("invariant.")),
            }
        )
        assert verdict.ok, verdict.describe()
    finally:
        worker.stop()
        proxy.close()
