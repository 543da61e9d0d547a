"""The general process helper of tests/support/processes.py."""

import os
import sys
import time

import pytest

from tests.support.processes import ProcessGroup, free_port, start_process

SPAWNS_A_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""

SERVES_HTTP = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not reaped by its dead parent yet) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] == "Z"


def test_stop_ends_the_whole_process_group(tmp_path):
    process = start_process("spawner", [sys.executable, "-c", SPAWNS_A_CHILD], env=dict(os.environ), log_dir=tmp_path)
    deadline = time.monotonic() + 10
    while not process.logs().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(process.logs().split()[0])
    process.stop(timeout=5)
    assert not process.alive()
    deadline = time.monotonic() + 5
    while not _gone(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child_pid)


def test_ready_url_is_awaited(tmp_path):
    port = free_port()
    group = ProcessGroup(log_dir=tmp_path)
    try:
        process = group.start(
            "http", [sys.executable, "-c", SERVES_HTTP, str(port)], env=dict(os.environ),
            ready_url=f"http://127.0.0.1:{port}/",
        )  # fmt: skip
        assert process.alive() and process.url == f"http://127.0.0.1:{port}/"
    finally:
        group.stop_all()
    assert not process.alive()


def test_a_process_that_dies_fails_with_its_log(tmp_path):
    argv = [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match="boom: bad config"):
        start_process("dies", argv, env=dict(os.environ), ready_url=f"http://127.0.0.1:{free_port()}/", log_dir=tmp_path)


def test_a_process_never_ready_is_stopped(tmp_path):
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(RuntimeError, match="not ready"):
        start_process("mute", argv, env=dict(os.environ), ready_url=f"http://127.0.0.1:{free_port()}/", ready_timeout=1, log_dir=tmp_path)
