"""Fixtures of the reliability (fault-injection) suite, its seeds and its table of figures.

Sizes: short by default (CI, `make test`); `CHAOS_FULL=1` runs the full loops (`make chaos`).
Seeds: every loop draws one (or takes `CHAOS_SEED`), prints it, and puts it in the table;
re-run a loop with `CHAOS_SEED=<seed>` to replay its random choices.
The table of figures is printed at the end of the run and written to
`var/chaos/figures.json` (or `$CHAOS_FIGURES`).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from tests.reliability import harness
from tests.support.processes import ROOT

FIGURES: list[dict] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "chaos: a fault-injection loop of the reliability suite (make chaos)")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.chaos)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FIGURES:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"reliability figures ({'full' if harness.FULL else 'short'} run)")
    for row in FIGURES:
        write(f"{row['loop']}  (seed {row.get('seed', '-')}, {row.get('seconds', 0):.1f}s)")
        for key, value in row.items():
            if key in ("loop", "seed", "seconds"):
                continue
            write(f"    {key:<34} {value}")
    path = Path(os.environ.get("CHAOS_FIGURES") or ROOT / "var" / "chaos" / "figures.json")
    harness.dump_json(path, {"full": harness.FULL, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "loops": FIGURES})
    write(f"(written to {path})")


class Figures:
    """One loop's row in the table: `figures["kills"] = 20`; seed and duration filled in."""

    def __init__(self, loop: str, seed: int):
        self.row = {"loop": loop, "seed": seed}
        self.started = time.monotonic()

    def __setitem__(self, key, value):
        self.row[key] = value

    def __getitem__(self, key):
        return self.row[key]

    def update(self, values: dict) -> None:
        self.row.update(values)

    def close(self) -> None:
        self.row["seconds"] = round(time.monotonic() - self.started, 1)
        FIGURES.append(self.row)
        harness.log(json.dumps(self.row, default=str))


@pytest.fixture
def seed(request) -> int:
    value = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    harness.log(f"{request.node.nodeid}: seed {value} (CHAOS_SEED={value} replays it)")
    return value


@pytest.fixture
def figures(request, seed):
    row = Figures(request.node.name, seed)
    yield row
    row.close()


@pytest.fixture
def btc_market(transactional_db, market):
    """BTC-USDT: tick 0.01, lot 0.001, min notional 0.05, fees 0.1% maker / 0.2% taker."""
    from exchange.infra import redis_client

    redis_client().flushdb()
    yield market("BTC-USDT", tick_size="0.01", lot_size="0.001", min_notional="0.05", maker_fee="0.001", taker_fee="0.002")
    redis_client().flushdb()


@pytest.fixture
def engines(stack_env, tmp_path, seed):
    """An EngineController for BTC-USDT (warm forks and cold starts), closed at teardown."""
    controller = harness.EngineController(symbols=["BTC-USDT"], log_dir=tmp_path / "engines", env=stack_env, seed=seed)
    yield controller
    controller.close()


@pytest.fixture
def stack_env(wallet_server):
    """The environment of web, engine and worker processes: test DB, Redis, this wallet."""
    from tests.support.processes import process_env

    return process_env(WALLET_URL=wallet_server.url)


@pytest.fixture
def web(project_processes, stack_env):
    return harness.start_web(project_processes, workers=4, env=stack_env)


@pytest.fixture
def worker(project_processes, stack_env):
    """A Celery worker carrying out settlements and hold releases, when settlement exists."""
    if not harness.settlement_available():
        pytest.skip("settlement services not built yet")
    return harness.start_worker(project_processes, env=harness.worker_env(stack_env))


@pytest.fixture
def traders(make_user, web):
    """traders(n, usdt=..., btc=...) -> n funded users with HTTP clients of the web process."""

    def make(n: int, *, usdt="1000000", btc="10000") -> list[harness.Trader]:
        out = []
        for _ in range(n):
            user = make_user()
            if usdt:
                harness.fund(user, "USDT", usdt)
            if btc:
                harness.fund(user, "BTC", btc)
            out.append(harness.Trader(web.url, user))
        return out

    return make
