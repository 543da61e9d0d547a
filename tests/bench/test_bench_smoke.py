"""`python -m exchange.bench`, briefly: the whole stack under the order mix, then the invariants."""

import json
import subprocess
import sys
import time

import pytest

from exchange.processes import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HEADLINE = ("orders_per_sec", "p99_ms", "ratio_to_bare", "trades_per_sec", "settlement_lag_p99_ms", "invariants_ok")


def test_short_bench_prints_the_figures_and_the_invariants_hold(tmp_path):
    argv = [
        sys.executable, "-m", "exchange.bench",
        "--duration", "8", "--rate", "30", "--traders", "20", "--warmup", "1", "--timeout", "5",
        "--bare-seconds", "2", "--capacity-seconds", "2", "--rounds", "2", "--drain-timeout", "30",
        "--log-dir", str(tmp_path / "logs"),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=170)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in HEADLINE:
        assert key in result, key
    assert result["invariants_ok"] is True, result["invariants"]
    assert result["orders_per_sec"] > 0 and result["trades_per_sec"] > 0
    assert result["ratio_to_bare"] > 0 and result["bare_requests_per_sec"] > 0
    assert result["http_5xx"] == 0, result["sustained"]["answers"]
    assert result["settlement_lag_p99_ms"] is not None
    assert "POST /orders" in result["sustained"]["latency_ms"]
    assert "DELETE /orders" in result["sustained"]["latency_ms"]
    assert "answered 2xx" in done.stdout and "invariants: all hold" in done.stdout  # the table, then the JSON
    print(f"bench smoke run: {elapsed:.0f}s")
