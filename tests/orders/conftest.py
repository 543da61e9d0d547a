"""The order path for real: wallet over HTTP, the engine as a subprocess, the API in-process."""

import itertools
import sys
import time
from decimal import Decimal

import pytest

from exchange.infra import redis_client
from matching import client as engine_client
from settlement.clients.wallet import owner_for_user, wallet_client

_deposits = itertools.count(1)


@pytest.fixture
def start_engine(project_processes):
    """Start `manage.py run_matching_engine` against the test DB; waits for its heartbeats."""

    def start(*symbols: str, extra_env: dict | None = None):
        from tests.support.processes import process_env

        argv = [sys.executable, "manage.py", "run_matching_engine", "--metrics-port", "0"]
        if symbols:
            argv += ["--symbols", ",".join(symbols)]
        process = project_processes.start("engine", argv, env=process_env(**(extra_env or {})))
        for symbol in symbols:
            deadline = time.monotonic() + 30
            while not engine_client.engine_is_live(symbol):
                if not process.alive() or time.monotonic() > deadline:
                    pytest.fail(f"engine did not come up for {symbol}:\n{process.logs()}")
                time.sleep(0.05)
        return process

    return start


@pytest.fixture
def fund():
    def deposit(user, asset: str, amount) -> None:
        wallet_client().deposit(
            key=f"test-deposit-{next(_deposits)}-{time.monotonic_ns()}",
            owner=owner_for_user(user.pk),
            asset=asset,
            amount=Decimal(str(amount)),
        )

    return deposit


@pytest.fixture
def stack(wallet_server, market, start_engine):
    """BTC-USDT (tick 0.01, lot 0.0001, min notional 1, fees 0.1%/0.2%) with a live engine."""
    redis_client().flushdb()
    btc = market("BTC-USDT", tick_size="0.01", lot_size="0.0001", min_notional="1", maker_fee="0.001", taker_fee="0.002")
    engine = start_engine("BTC-USDT")
    yield btc, engine
    redis_client().flushdb()


def balance(user, asset: str) -> tuple[Decimal, Decimal]:
    for b in wallet_client().balances(owner_for_user(user.pk)):
        if b.asset == asset:
            return b.available, b.held
    return Decimal(0), Decimal(0)
