"""Fixtures that start the project's real processes (wallet, engine, worker, web) for tests.

The mechanism is `exchange.processes` (shared with the benchmarks): `start_process`
runs one project process in its own process group, with its output in a log file,
waits until it answers `ready_url`, and `stop()` ends the whole group (gunicorn's or
celery's workers included). Here it defaults to `process_env()`, the environment
that points a subprocess at this test session's database (pytest-django's
`test_<name>`) and Redis. The `project_processes` fixture stops whatever a test
started; `wallet_server` is a ready wallet (gunicorn, `EXCHANGE_ROLE=wallet`).

Subprocesses see only committed data: tests that use them need `transactional_db`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from exchange import processes
from exchange.processes import ROOT, ProjectProcess, free_port, gunicorn_argv, wait_ready

__all__ = ["ROOT", "ProjectProcess", "free_port", "gunicorn_argv", "wait_ready"]  # re-exported for the tests

TEST_SETTINGS = "exchange.settings_test"


# --- building blocks ---------------------------------------------------------------


def database_url(settings_dict: dict | None = None) -> str:
    """The DATABASE_URL of `settings_dict` (default: the current connection, i.e. the
    test database once pytest-django has set it up)."""
    if settings_dict is None:
        from django.db import connection

        settings_dict = connection.settings_dict
    return processes.database_url(settings_dict)


def process_env(**overrides: str) -> dict[str, str]:
    """This environment, pointed at the test database and Redis with the test settings."""
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=TEST_SETTINGS,
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        WALLET_TOKEN=settings.WALLET_TOKEN,
        PYTHONUNBUFFERED="1",
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def start_process(name: str, argv: list[str], *, env: dict[str, str] | None = None, **kwargs) -> ProjectProcess:
    """`exchange.processes.start_process`, by default with this test session's `process_env()`."""
    return processes.start_process(name, argv, env=env if env is not None else process_env(), **kwargs)


class ProcessGroup:
    """Processes started for one scope; `stop_all()` ends them, last started first."""

    def __init__(self, log_dir: Path | None = None):
        self.log_dir = log_dir
        self.processes: list[ProjectProcess] = []

    def start(self, name: str, argv: list[str], **kwargs) -> ProjectProcess:
        kwargs.setdefault("log_dir", self.log_dir)
        process = start_process(name, argv, **kwargs)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        while self.processes:
            self.processes.pop().stop()


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def project_processes(tmp_path):
    """Start project processes for one test (`project_processes.start(name, argv, ...)`);
    all are stopped (their whole process groups) at teardown."""
    group = ProcessGroup(log_dir=tmp_path / "processes")
    yield group
    group.stop_all()


@dataclass
class WalletServer:
    url: str
    token: str
    process: ProjectProcess


@pytest.fixture(scope="session")
def wallet_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """One wallet process (gunicorn, 2 workers) for the session, on the test database.

    Started on first use. Between tests pytest-django truncates the tables under
    it; its connections sit idle (autocommit), so that does not block.
    """
    from django.conf import settings

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with django_db_blocker.unblock():  # reads connection.settings_dict only
        env = process_env(EXCHANGE_ROLE="wallet", WEB_WORKERS="2", WALLET_TOKEN=settings.WALLET_TOKEN)
    group = ProcessGroup(log_dir=tmp_path_factory.mktemp("wallet"))
    process = group.start("wallet", gunicorn_argv(port, workers=2), env=env, ready_url=f"{url}/healthz")
    process.url = url
    yield WalletServer(url=url, token=settings.WALLET_TOKEN, process=process)
    group.stop_all()


@pytest.fixture
def wallet_server(transactional_db, wallet_process, settings):
    """A running wallet on the test database; `settings.WALLET_URL` points at it for this test."""
    from settlement.clients.wallet import wallet_client

    if not wallet_process.process.alive():
        pytest.fail(f"the wallet process died:\n{wallet_process.process.logs()}")
    settings.WALLET_URL = wallet_process.url
    settings.WALLET_TOKEN = wallet_process.token
    wallet_client.cache_clear()
    yield wallet_process
    wallet_client.cache_clear()
