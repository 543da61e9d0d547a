"""Starting the project's own processes as children: web, wallet, engine, worker, beat.

One mechanism for the benchmarks (`exchange.bench`, `matching.bench_engine`) and the
tests' fixtures (`tests/support/processes.py`): `start_process` runs a command in the
repository as the leader of its own session, its output in a log file, and can wait
until it answers a URL; `ProjectProcess.stop()` ends its whole process group
(gunicorn's and celery's workers included), never anything found by name.
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

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONFIG = "exchange/gunicorn.conf.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the usual small race applies)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL that django-environ parses back into `settings_dict`.

    A unix-socket directory goes into the path, percent-encoded
    (`postgres://user@/%2Fpath%2Fto%2Fsocket/dbname`): django-environ takes a path
    that starts with `/` as HOST + NAME, whereas an encoded host in the netloc is
    not decoded.
    """
    user = quote(str(settings_dict.get("USER") or ""), safe="")
    password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(settings_dict.get("HOST") or "")
    port = str(settings_dict.get("PORT") or "")
    port_part = f":{port}" if port else ""
    name = quote(str(settings_dict["NAME"]), safe="")
    if host.startswith("/"):
        url = f"postgres://{auth}{port_part}/{quote(host, safe='')}/{name}"
    else:
        host = f"[{host}]" if ":" in host else host
        url = f"postgres://{auth}{host}{port_part}/{name}"
    options = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if isinstance(v, str | int)}
    return f"{url}?{urlencode(options)}" if options else url


def gunicorn_argv(port: int, *, workers: int = 2) -> list[str]:
    """The Procfile's gunicorn command line (web or wallet, depending on EXCHANGE_ROLE)."""
    return [
        sys.executable, "-m", "gunicorn", "exchange.wsgi", "--config", GUNICORN_CONFIG,
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
    ]  # fmt: skip


def process_table() -> dict[int, tuple[int, float]]:
    """pid -> (session id, CPU seconds used), for every process this user can see."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # state ppid pgrp session ... utime stime
        out[int(entry.name)] = (int(fields[3]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return out


@dataclass
class ProjectProcess:
    """A process started by `start_process`: the leader of its own session and process group."""

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

    def group_pids(self) -> list[int]:
        """This process and every descendant still in its session (gunicorn/celery workers)."""
        return [pid for pid, (sid, _cpu) in process_table().items() if sid == self.pid]

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
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
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
            last_error = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:
            last_error = exc.__class__.__name__
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} not ready at {url} after {timeout:.0f}s ({last_error}):\n{process.logs()}")


def start_process(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    log_dir: Path | str | None = None,
    log_name: str | None = None,
    ready_url: str | None = None,
    ready_timeout: float = 30.0,
    ready_headers: dict | None = None,
    cwd: Path | str = ROOT,
) -> ProjectProcess:
    """Start `argv` (in the repository, with `env`) as the leader of a new session.

    Output goes to `<log_dir>/<log_name>` (default `<name>-<ns>.log`, so restarts
    keep their own logs; `process.logs()`). With `ready_url`, returns once it
    answers 2xx; if it never does, the process is stopped and RuntimeError carries
    its log. The caller must `stop()` it.
    """
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="exchange-procs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / (log_name or f"{name}-{time.monotonic_ns()}.log")
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches every child
        )  # fmt: skip
    process = ProjectProcess(name=name, argv=list(argv), popen=popen, log_path=log_path)
    if ready_url:
        try:
            wait_ready(process, ready_url, timeout=ready_timeout, headers=ready_headers)
        except BaseException:
            process.stop()
            raise
        process.url = ready_url
    return process
