"""A warm parent for matching-engine processes, so a crash loop can restart the engine in
milliseconds instead of re-importing Django each time (`python -m tests.reliability.engine_zygote`).

It imports Django and the engine once, opens no connection, and on request forks a child
that runs exactly what `manage.py run_matching_engine` runs (`call_command`). Each child
is a real, separate engine process in its own session: the test kills it with SIGKILL
like any other. Recovery time measured this way is the engine's own (lock, rebuild,
re-read), without the interpreter's start-up; the crash loop also does a few cold starts.

Protocol, one line each way:
  stdin  `spawn <log path> <random seed> <EXCHANGE_CRASH_POINTS or ->`
  stdout `ready` once imported; `pid <n>` per spawn; `exit <pid> <returncode>` per child.
EOF on stdin or SIGTERM: the children are killed and the zygote exits.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import select
import signal
import sys


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def _child(symbols: str, log_path: str, seed: int, crash_points: str, batch_size: str) -> None:
    os.setsid()  # its own process group, like start_process gives a cold engine
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    random.seed(seed)  # a forked child would otherwise repeat its parent's random stream
    os.environ["EXCHANGE_CRASH_POINTS"] = "" if crash_points == "-" else crash_points
    import exchange.crashpoints

    importlib.reload(exchange.crashpoints)  # same module dict: the engine's crash_point sees it
    sys.stderr.write(f"engine pid {os.getpid()} seed {seed} crash points {crash_points}\n")
    from django.core.management import call_command

    code = 0
    try:
        argv = ["run_matching_engine", "--metrics-port", "0", "--batch-size", batch_size]
        if symbols:
            argv += ["--symbols", symbols]
        call_command(*argv)
    except BaseException:  # noqa: BLE001 - report like a crashed process would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    symbols = sys.argv[1] if len(sys.argv) > 1 else ""
    batch_size = sys.argv[2] if len(sys.argv) > 2 else "500"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings_test")
    import django

    django.setup()
    # Everything the engine imports lazily, imported once here.
    from django.db import connections

    import matching.engine  # noqa: F401
    import matching.management.commands.run_matching_engine  # noqa: F401
    import settlement.services  # noqa: F401
    import settlement.tasks  # noqa: F401

    children: set[int] = set()

    def kill_children(*_):
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, kill_children)
    _say("ready")
    buffer = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.01)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            _say(f"exit {pid} {os.waitstatus_to_exitcode(status)}")
        if not readable:
            continue
        data = os.read(0, 4096)
        if not data:
            kill_children()
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            parts = line.decode().split()
            if not parts or parts[0] != "spawn":
                continue
            _, log_path, seed, crash_points = parts
            assert all(c.connection is None for c in connections.all()), "zygote must not hold connections"
            pid = os.fork()
            if pid == 0:
                _child(symbols, log_path, int(seed), crash_points, batch_size)
            children.add(pid)
            _say(f"pid {pid}")


if __name__ == "__main__":
    main()
