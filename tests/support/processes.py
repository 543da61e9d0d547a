"""Fixtures that start the project's real processes (wallet, engine, worker, web) for tests.

The general part is `start_process(name, argv, env=..., ready_url=...)`: it runs
one project process as a subprocess in its own process group, with its output in
a log file, waits until it answers `ready_url`, and `stop()` ends the whole group
(gunicorn's or celery's workers included). `process_env()` builds the environment
that points a subprocess at this test session's database (pytest-django's
`test_<name>`) and Redis. The `project_processes` fixture stops whatever a test
started; `wallet_server` is a ready wallet (gunicorn, `EXCHANGE_ROLE=wallet`).

Subprocesses see only committed data: tests that use them need `transactional_db`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_SETTINGS = "exchange.settings_test"


# --- building blocks ---------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the usual small race applies)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(settings_dict: dict | None = None) -> str:
    """A DATABASE_URL that django-environ parses back into `settings_dict` (default: the
    current connection, i.e. the test database once pytest-django has set it up).

    A unix-socket directory goes into the path, percent-encoded
    (`postgres://user@/%2Fpath%2Fto%2Fsocket/dbname`): django-environ takes a path
    that starts with `/` as HOST + NAME, whereas an encoded host in the netloc is
    not decoded.
    """
    if settings_dict is None:
        from django.db import connection

        settings_dict = connection.settings_dict
    user = quote(str(settings_dict.get("USER") or ""), safe="")
    password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(settings_dict.get("HOST") or "")
    port = str(settings_dict.get("PORT") or "")
    name = quote(str(settings_dict["NAME"]), safe="")
    port_part = f":{port}" if port else ""
    if host.startswith("/"):
        url = f"postgres://{auth}{port_part}/{quote(host, safe='')}/{name}"
    else:
        host = f"[{host}]" if ":" in host else host
        url = f"postgres://{auth}{host}{port_part}/{name}"
    options = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if isinstance(v, str | int)}
    return f"{url}?{urlencode(options)}" if options else url


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


@dataclass
class ProjectProcess:
    """A project process started by `start_process`; the leader of its own process group."""

    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path
    url: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def logs(self, tail: int = 200) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-tail:])

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, for crash tests) and reap the leader."""
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after `timeout` seconds."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Workers may outlive their leader briefly; make sure none of the group is left.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def wait_ready(process: ProjectProcess, url: str, *, timeout: float = 30.0, headers: dict | None = None) -> None:
    """Poll `url` until it answers 2xx; fail early (with the log) if the process exits."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers=headers or {})
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode} before it was ready:\n{process.logs()}"
            )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if 200 <= response.status < 300:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except OSError as exc:
            last_error = exc.__class__.__name__
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} not ready at {url} after {timeout}s ({last_error}):\n{process.logs()}")


def start_process(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    ready_url: str | None = None,
    ready_timeout: float = 30.0,
    ready_headers: dict | None = None,
    cwd: Path | str = ROOT,
    log_dir: Path | str | None = None,
) -> ProjectProcess:
    """Start `argv` (in the repo, with `env`, default `process_env()`) in a new process group.

    Output goes to `<log_dir>/<name>-<pid>.log` (`process.logs()`). With
    `ready_url`, returns once it answers 2xx; if it never does, the process is
    stopped and RuntimeError carries its log. The caller must `stop()` it (the
    `project_processes` fixture does).
    """
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="exchange-procs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env if env is not None else process_env(),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches every child
        )
    process = ProjectProcess(name=name, argv=list(argv), popen=popen, log_path=log_path)
    if ready_url:
        try:
            wait_ready(process, ready_url, timeout=ready_timeout, headers=ready_headers)
        except BaseException:
            process.stop()
            raise
        process.url = ready_url
    return process


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


def gunicorn_argv(port: int, *, workers: int = 2) -> list[str]:
    """The Procfile's gunicorn command line (web or wallet, depending on EXCHANGE_ROLE)."""
    return [
        sys.executable, "-m", "gunicorn", "exchange.wsgi",
        "--config", "exchange/gunicorn.conf.py",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
    ]  # fmt: skip


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
