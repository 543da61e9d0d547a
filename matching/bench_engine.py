"""Engine-service benchmark: `python -m matching.bench_engine` (make bench-engine).

Creates a fresh database, journals N orders for one symbol as `pending` rows
(a mix that crosses often), starts the real engine process, pushes the PLACE
commands (and some CANCELs) straight into its stream, and measures:

- throughput: commands committed per second while the stream is kept full;
- latency: XADD -> reply for a paced stream of commands after the burst.

Prints one JSON object. Uses DATABASE_URL / REDIS_URL (or the embedded servers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYMBOL = "BENCH-USDT"
# Reply keys are per run: a fresh database reuses order ids, and an earlier run's
# unexpired replies must not answer this one's commands.
RUN = f"{os.getpid()}-{int(time.time())}-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--latency-commands", type=int, default=5_000)
    parser.add_argument("--latency-rate", type=int, default=2_000, help="commands/s in the latency phase")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
    os.environ.setdefault("SECRET_KEY", "bench-engine-secret-key-not-for-production")
    os.environ.setdefault("WALLET_TOKEN", "bench-engine-wallet-token")
    import django

    django.setup()
    from django.conf import settings

    base = settings.DATABASES["default"]
    db_name = f"bench_engine_{os.getpid()}"
    _create_database(base, db_name)
    try:
        result = _run(args, base, db_name, settings.REDIS_URL)
    finally:
        _drop_database(base, db_name)
    print(json.dumps(result))


def _connect(base: dict, dbname: str):
    import psycopg

    return psycopg.connect(
        host=base.get("HOST") or None, port=base.get("PORT") or None, user=base.get("USER") or None,
        password=base.get("PASSWORD") or None, dbname=dbname, autocommit=True,
    )


def _create_database(base: dict, name: str) -> None:
    with _connect(base, "postgres") as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_database(base: dict, name: str) -> None:
    with _connect(base, "postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(base: dict, db_name: str, redis_url: str) -> dict:
    from exchange.processes import database_url

    return {
        **os.environ,
        "DATABASE_URL": database_url({**base, "NAME": db_name}),
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "exchange.settings",
        "PYTHONUNBUFFERED": "1",
    }


def _workload(n: int, seed: int, user_ids: list[int]) -> list[tuple]:
    """(side, type, price, quantity, hold) rows and which of them get cancelled later."""
    rng = random.Random(seed)
    fair = 30_000_00  # ticks of 0.01
    rows = []
    for _ in range(n):
        fair += rng.choice((-1, 0, 1)) * rng.randint(0, 3)
        side = rng.choice(("buy", "sell"))
        qty_lots = rng.randint(1, 50)  # lots of 0.0001
        r = rng.random()
        if r < 0.70:  # rests away from the fair value
            offset = 1 + int(rng.expovariate(1 / 6))
            ticks = fair - offset if side == "buy" else fair + offset
            kind = "limit"
        elif r < 0.95:  # crosses through the touch
            offset = rng.randint(0, 3)
            ticks = fair + offset if side == "buy" else fair - offset
            kind = "limit"
        else:
            ticks, kind = None, "market"
        price = Decimal(ticks) / 100 if ticks else None
        qty = Decimal(qty_lots) / 10_000
        if side == "sell":
            hold = qty
        elif kind == "market":
            hold = Decimal(fair * 2 * qty_lots) / 1_000_000
        else:
            hold = price * qty
        rows.append((rng.choice(user_ids), side, kind, price, qty, hold))
    return rows


def _run(args, base: dict, db_name: str, redis_url: str) -> dict:
    import redis

    env = _env(base, db_name, redis_url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    r = redis.Redis.from_url(redis_url)
    from matching import feed

    for key in (feed.stream_key(SYMBOL), feed.book_key(SYMBOL), feed.heartbeat_key(SYMBOL)):
        r.delete(key)

    conn = _connect(base, db_name)
    user_ids = _make_users(conn, 200)
    conn.execute(
        "INSERT INTO marketdata_market (symbol, base_asset, quote_asset, tick_size, lot_size, min_notional, maker_fee,"
        " taker_fee, stp_mode, enabled, last_sequence, created_at, updated_at) VALUES"
        " (%s, 'BENCH', 'USDT', 0.01, 0.0001, 0, 0.001, 0.002, 'expire_taker', true, 0, now(), now())",
        [SYMBOL],
    )
    market_id = conn.execute("SELECT id FROM marketdata_market WHERE symbol = %s", [SYMBOL]).fetchone()[0]
    total = args.orders + args.latency_commands
    rows = _workload(total, args.seed, user_ids)
    with conn.cursor() as cur, cur.copy(
        "COPY orders_order (user_id, market_id, side, type, time_in_force, post_only, price, quantity, hold_asset,"
        " hold_amount, filled_quantity, filled_quote, fee_total, status, created_at, updated_at) FROM STDIN"
    ) as copy:
        for user_id, side, kind, price, qty, hold in rows:
            copy.write_row((user_id, market_id, side, kind, "gtc" if kind == "limit" else "ioc", False, price, qty,
                            "USDT" if side == "buy" else "BENCH", hold, 0, 0, 0, "pending", "now", "now"))
    order_ids = [row[0] for row in conn.execute("SELECT id FROM orders_order ORDER BY id").fetchall()]
    burst_ids, paced_ids = order_ids[: args.orders], order_ids[args.orders:]

    engine = subprocess.Popen(
        [sys.executable, "manage.py", "run_matching_engine", "--symbols", SYMBOL, "--metrics-port", "0",
         "--batch-size", str(args.batch_size)],
        cwd=ROOT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not r.exists(feed.heartbeat_key(SYMBOL)):
            if time.monotonic() > deadline or engine.poll() is not None:
                raise SystemExit("engine did not start")
            time.sleep(0.05)
        burst = _burst(r, conn, burst_ids, args.seed)
        latency = _paced(r, paced_ids, args.latency_rate)
        trades = conn.execute("SELECT count(*) FROM orders_trade").fetchone()[0]
    finally:
        os.killpg(engine.pid, signal.SIGTERM)
        engine.wait(timeout=30)
        for key in (feed.stream_key(SYMBOL), feed.book_key(SYMBOL), feed.heartbeat_key(SYMBOL)):
            r.delete(key)
        conn.close()
    return {
        "orders": args.orders,
        "commands": burst["commands"],
        "commands_per_sec": round(burst["commands"] / burst["seconds"]),
        "trades": trades,
        "trades_per_sec": round(burst["trades"] / burst["seconds"]),
        "p50_ms": latency["p50_ms"],
        "p99_ms": latency["p99_ms"],
        "latency_rate": args.latency_rate,
        "batch_size": args.batch_size,
    }


def _make_users(conn, n: int) -> list[int]:
    with conn.cursor() as cur, cur.copy(
        "COPY auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active,"
        " date_joined) FROM STDIN"
    ) as copy:
        for i in range(n):
            copy.write_row(("!", False, f"bench{i}", "", "", "", False, True, "now"))
    return [row[0] for row in conn.execute("SELECT id FROM auth_user ORDER BY id").fetchall()]


def _burst(r, conn, order_ids: list[int], seed: int) -> dict:
    """Keep the stream full; time from the first XADD to the last command committed."""
    from matching import feed

    rng = random.Random(seed + 1)
    stream = feed.stream_key(SYMBOL)
    cancels = []
    started = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i, order_id in enumerate(order_ids):
        pipe.xadd(stream, feed.encode_command(feed.PLACE, order_id, feed.reply_key(f"{RUN}b{order_id}")))
        if rng.random() < 0.10 and i > 100:
            cancels.append(rng.choice(order_ids[max(0, i - 2000): i]))
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    if cancels:
        _mark_cancels(conn, cancels)
        for chunk in range(0, len(cancels), 2000):
            for order_id in cancels[chunk: chunk + 2000]:
                pipe.xadd(stream, feed.encode_command(feed.CANCEL, order_id, feed.reply_key(f"{RUN}c{order_id}")))
            pipe.execute()
    last_place = feed.reply_key(f"{RUN}b{order_ids[-1]}")
    last = feed.reply_key(f"{RUN}c{cancels[-1]}") if cancels else last_place
    deadline = time.monotonic() + 900
    while r.blpop([last], timeout=1) is None:
        if time.monotonic() > deadline:
            raise SystemExit("the engine did not finish the burst in 15 minutes")
    seconds = time.perf_counter() - started
    trades = conn.execute("SELECT count(*) FROM orders_trade").fetchone()[0]
    return {"commands": len(order_ids) + len(cancels), "seconds": seconds, "trades": trades}


def _mark_cancels(conn, order_ids: list[int]) -> None:
    """Record the cancel requests one row per statement, as the API does.

    (One multi-row UPDATE could deadlock with the engine's batch update of the same
    rows.) Pipelined, without waiting for each commit's flush: only the engine's
    commits are what this benchmark measures.
    """
    conn.execute("SET synchronous_commit = off")
    with conn.pipeline():
        for order_id in sorted(set(order_ids)):
            conn.execute("UPDATE orders_order SET cancel_requested_at = now() WHERE id = %s", [order_id])
    conn.execute("SET synchronous_commit = on")


def _paced(r, order_ids: list[int], rate: int) -> dict:
    """XADD at a fixed rate; a reader measures XADD -> reply for every command."""
    import threading

    from matching import feed

    stream = feed.stream_key(SYMBOL)
    sent: dict[int, float] = {}
    latencies: list[float] = []

    def reader():
        import redis as redis_module

        rr = redis_module.Redis(connection_pool=r.connection_pool)
        for order_id in order_ids:
            if rr.blpop([feed.reply_key(f"{RUN}p{order_id}")], timeout=5) is None:
                continue
            latencies.append(time.perf_counter() - sent[order_id])

    thread = threading.Thread(target=reader)
    thread.start()
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for order_id in order_ids:
        now = time.perf_counter()
        if now < next_at:
            time.sleep(next_at - now)
        sent[order_id] = time.perf_counter()
        r.xadd(stream, feed.encode_command(feed.PLACE, order_id, feed.reply_key(f"{RUN}p{order_id}")))
        next_at += interval
    thread.join()
    latencies.sort()
    if not latencies:
        return {"p50_ms": None, "p99_ms": None}
    return {
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


if __name__ == "__main__":
    main()
