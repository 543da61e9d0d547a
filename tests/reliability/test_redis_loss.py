"""Redis loss: the engine's Redis dies and comes back empty, its command stream is deleted,
or everything is flushed, while traders place and cancel through the API.

PostgreSQL is the journal (a pending row, a recorded cancel): whatever Redis loses,
the engine's reconciliation applies from the database, exactly once. This test runs
the whole stack (web, engine, worker with its beat) on a private redis-server, so it
can kill it; the machine's shared Redis is never touched.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from tests.reliability import harness
from tests.reliability.harness import Journal, Load, scale

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def private_redis(tmp_path, settings):
    from exchange.infra import redis_client

    original = settings.REDIS_URL
    server = harness.PrivateRedis(tmp_path / "redis", db=int(original.rsplit("/", 1)[1] or 0))
    server.start()
    settings.REDIS_URL = server.url  # this process's checks (heartbeats, snapshots) read it too
    redis_client.cache_clear()
    yield server
    server.stop()
    settings.REDIS_URL = original
    redis_client.cache_clear()


@pytest.mark.timeout(scale(240, 3600))
def test_redis_loss(wallet_server, btc_market, private_redis, project_processes, make_user, tmp_path, figures, seed):
    from matching import feed
    from orders.models import Trade
    from tests.support.processes import process_env

    rng = random.Random(seed)
    env = process_env(WALLET_URL=wallet_server.url, REDIS_URL=private_redis.url)
    engines = harness.EngineController(symbols=["BTC-USDT"], log_dir=tmp_path / "engines", env=env, seed=seed)
    try:
        engines.spawn()
        engines.wait_live()
        web = harness.start_web(project_processes, env=env)
        # The worker (with its beat) may exit when its broker vanishes (kombu cannot restore
        # unacked messages to a dead Redis): the deployment's supervisor restarts it.
        worker = harness.Supervised(lambda: harness.start_worker(project_processes, env=harness.worker_env(env)))
        traders = []
        for _ in range(4):
            user = make_user()
            harness.fund(user, "USDT", "1000000")
            harness.fund(user, "BTC", "10000")
            traders.append(harness.Trader(web.url, user))
        journal = Journal()
        load = Load(traders, journal, seed=seed, threads_per_trader=2).start()
        faults: Counter = Counter()
        try:
            for _ in range(scale(6, 60)):
                time.sleep(rng.uniform(0.5, 2.0))
                fault = rng.choice(("restart_empty", "delete_stream", "flushall"))
                if fault == "restart_empty":
                    private_redis.restart_empty(downtime=rng.uniform(0.0, 2.0))
                else:
                    client = private_redis.client()
                    try:
                        if fault == "delete_stream":
                            client.delete(feed.stream_key("BTC-USDT"))
                        else:
                            client.flushall()
                    finally:
                        client.close()
                faults[fault] += 1
            time.sleep(1.0)
        finally:
            load.stop()
        assert not load.errors, load.errors

        # One more loss, on a quiet market: whatever Redis held must come back by itself.
        private_redis.restart_empty(downtime=0.5)
        faults["restart_empty (quiet market)"] += 1
        harness.wait_for(lambda: engines.owner_pid("BTC-USDT") is not None, timeout=30, what="the engine's heartbeat back")
        time.sleep(1.5)

        unexpected = []
        incarnation = engines.current
        if not engines.alive(incarnation):
            unexpected.append(f"engine died ({incarnation.exit_code}):\n{incarnation.logs()[-3000:]}")
            engines.spawn()
            engines.wait_live()
        quiet_seconds = harness.wait_engine_quiet(timeout=60)
        drain_seconds = harness.wait_outbox_drained(timeout=120)

        verdict = harness.check_outcomes(journal)
        harness.check_invariants(quiescent=True, verdict=verdict)
        verdict.add("engine_died", unexpected)
        known_gaps = verdict.tolerate(harness.KNOWN_INVARIANT_GAPS)
        verdict.add("unexpected_server_errors", harness.unexpected_server_errors(web))
        worker.stop()
        figures.update(
            {
                "known bugs met (open, pinned)": verdict.figures.get("known_bugs_met", {}),
                "faults": dict(faults),
                "orders placed / accepted": f"{verdict.figures['placed']} / {verdict.figures['accepted']}",
                "answered 202 / 503 / 5xx / no answer": (
                    f"{verdict.figures['answered_202']} / {verdict.figures['answered_503']} / "
                    f"{verdict.figures['answered_5xx']} / {verdict.figures['unanswered']}"
                ),
                "5xx answers / of them created an order": f"{verdict.figures['answered_5xx']} / {verdict.figures['created_despite_5xx']}",
                "server tracebacks of known bugs": harness.known_server_errors(web),
                "invariant violations of known bugs": known_gaps,
                "cancels": verdict.figures["cancels"],
                "trades": Trade.objects.count(),
                "engine survived every fault": not unexpected,
                "worker restarts (supervisor)": worker.restarts,
                "settle after load (s)": round(quiet_seconds, 2),
                "outbox drain (s)": round(drain_seconds, 2),
                "commands lost": verdict.count("lost_orders") + verdict.count("cancel_mismatch"),
                "applied twice": (
                    verdict.count("invariant.no_duplicate_trade") + verdict.count("invariant.no_replayed_trade")
                    + verdict.count("invariant.fills_match_trades")
                ),
                "phantom orders": verdict.count("phantom_orders"),
                "invariant violations": sum(len(v) for k, v in verdict.problems.items() if k.startswith("invariant.")),
            }
        )
        assert verdict.ok, verdict.describe()
    finally:
        engines.close()
