"""Wallet micro-benchmark over HTTP: `python -m wallet.bench [--holds N] [--batches N] ...`.

By default it runs a wallet of its own: a scratch database next to the configured
one (created, migrated, dropped afterwards) served by gunicorn
(`EXCHANGE_ROLE=wallet`, `--workers`), so no real ledger is touched. With `--url`
and `--token` it measures a wallet that is already running instead (and writes
bench owners `bench:*` into it).

Prints one JSON object: holds/s (one hold per request, `--concurrency` clients),
transfers/s in batches of `--batch-size` (trade-shaped: 5 legs with a fee), and
latency percentiles of each.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _summary(count: int, seconds: float, latencies: list[float], unit: str) -> dict:
    return {
        unit: count,
        "seconds": round(seconds, 3),
        f"{unit}_per_second": round(count / seconds, 1) if seconds else None,
        "latency_ms": {
            "p50": round(_percentile(latencies, 0.50) * 1000, 2),
            "p99": round(_percentile(latencies, 0.99) * 1000, 2),
            "max": round(max(latencies, default=0) * 1000, 2),
        },
    }


def _run_parallel(jobs: list, worker, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def timed(job):
        started = time.perf_counter()
        worker(job)
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in pool.map(timed, jobs):
            pass
    return time.perf_counter() - started, latencies


def run(client, *, holds: int, batches: int, batch_size: int, concurrency: int) -> dict:
    """Load the wallet behind `client` (a WalletClient); return the figures."""
    from settlement.clients.wallet import leg, transfer

    run_id = secrets.token_hex(4)
    traders = [f"bench:{run_id}:{n}" for n in range(concurrency * 2)]
    amount = Decimal("1000000")

    def fund(owner):
        client.deposit(key=f"bench:{run_id}:dep:{owner}:USDT", owner=owner, asset="USDT", amount=amount)
        client.deposit(key=f"bench:{run_id}:dep:{owner}:BTC", owner=owner, asset="BTC", amount=amount)

    _run_parallel(traders, fund, concurrency)

    # Holds: one request each, like the order path.
    def place(n):
        client.place_hold(key=f"bench:{run_id}:h{n}", owner=traders[n % len(traders)], asset="USDT", amount=Decimal("1.5"))

    hold_seconds, hold_latencies = _run_parallel(list(range(holds)), place, concurrency)

    # Batches of trade settlements: buyer's quote and seller's base out of their holds.
    pairs = [(traders[2 * n], traders[2 * n + 1]) for n in range(concurrency)]
    for n, (buyer, seller) in enumerate(pairs):
        client.place_hold(key=f"bench:{run_id}:ob{n}", owner=buyer, asset="USDT", amount=Decimal("900000"))
        client.place_hold(key=f"bench:{run_id}:os{n}", owner=seller, asset="BTC", amount=Decimal("900000"))

    def settle(b):
        n = b % len(pairs)
        buyer, seller = pairs[n]
        ops = [
            transfer(
                f"bench:{run_id}:t{b}:{i}",
                [
                    leg(buyer, "USDT", Decimal("30.05"), from_hold=f"bench:{run_id}:ob{n}"),
                    leg(seller, "USDT", Decimal("29.99"), ),
                    leg("bench:fees", "USDT", Decimal("0.06")),
                    leg(seller, "BTC", Decimal("0.001"), from_hold=f"bench:{run_id}:os{n}"),
                    leg(buyer, "BTC", Decimal("0.001")),
                ],
            )
            for i in range(batch_size)
        ]
        results = client.apply(ops)
        bad = [r for r in results if r.status != "applied"]
        if bad:
            raise RuntimeError(f"not applied: {bad[:3]}")

    batch_seconds, batch_latencies = _run_parallel(list(range(batches)), settle, concurrency)
    totals = client.totals()
    return {
        "holds": _summary(holds, hold_seconds, hold_latencies, "holds"),
        "transfers": {
            **_summary(batches * batch_size, batch_seconds, batch_latencies, "transfers"),
            "batch_size": batch_size,
            "batches_per_second": round(batches / batch_seconds, 1),
            "latency_ms_per_batch": _summary(batches, batch_seconds, batch_latencies, "batches")["latency_ms"],
        },
        "concurrency": concurrency,
        "conserved": all(t.balanced for t in totals.values()),
    }


# --- a wallet of its own ---------------------------------------------------------------


def _configured_database() -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
    os.environ.setdefault("DEBUG", "true")  # only this driver process; the server runs with DEBUG off
    import django

    django.setup()
    from django.conf import settings

    return dict(settings.DATABASES["default"])


def _database_url(db: dict, name: str) -> str:
    user = quote(str(db.get("USER") or ""), safe="")
    password = quote(str(db.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host, port = str(db.get("HOST") or ""), str(db.get("PORT") or "")
    port_part = f":{port}" if port else ""
    if host.startswith("/"):  # a unix-socket directory: django-environ reads it from the path
        return f"postgres://{auth}{port_part}/{quote(host, safe='')}/{name}"
    return f"postgres://{auth}{host}{port_part}/{name}"


def _admin_connection(db: dict):
    import psycopg

    return psycopg.connect(
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"wallet exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"wallet not ready:\n{log.read_text()[-3000:]}")


def self_hosted(args) -> dict:
    from settlement.clients.wallet import WalletClient

    db = _configured_database()
    name = f"wallet_bench_{os.getpid()}"
    with _admin_connection(db) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    token = secrets.token_hex(16)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "exchange.settings",
        "DATABASE_URL": _database_url(db, name),
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_hex(32),
        "WALLET_TOKEN": token,
        "EXCHANGE_ROLE": "wallet",
        "WEB_WORKERS": str(args.workers),
    }
    log = Path(tempfile.mkstemp(prefix="wallet-bench-", suffix=".log")[1])
    server = None
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
        )
        port = _free_port()
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "exchange.wsgi", "--config", "exchange/gunicorn.conf.py",
                 "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        _wait_ready(f"{url}/healthz", server, log)
        client = WalletClient(url, token, 30.0, pool_size=max(20, args.concurrency))
        figures = run(client, holds=args.holds, batches=args.batches, batch_size=args.batch_size, concurrency=args.concurrency)
        figures["server"] = {"gunicorn_workers": args.workers, "cpus": os.cpu_count()}
        return figures
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        with _admin_connection(db) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holds", type=int, default=3000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the self-hosted wallet")
    parser.add_argument("--url", help="measure this running wallet instead (needs --token)")
    parser.add_argument("--token", help="its bearer token")
    args = parser.parse_args(argv)
    if args.url:
        from settlement.clients.wallet import WalletClient

        client = WalletClient(args.url, args.token or "", 30.0, pool_size=max(20, args.concurrency))
        figures = run(client, holds=args.holds, batches=args.batches, batch_size=args.batch_size, concurrency=args.concurrency)
    else:
        figures = self_hosted(args)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
