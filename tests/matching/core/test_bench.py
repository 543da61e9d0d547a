"""The benchmark runs end to end (tiny N) and prints the documented JSON keys."""

import json
import subprocess
import sys
from pathlib import Path

import matching

REPO = Path(matching.__file__).resolve().parent.parent
KEYS = {
    "commands_per_sec",
    "trades_per_sec",
    "trades",
    "p50_us",
    "p99_us",
    "peak_rss_mb",
    "bytes_per_resting_order",
}


def test_bench_runs_and_reports():
    result = subprocess.run(
        [sys.executable, "-m", "matching.bench", "--commands", "20000", "--resting", "20000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert KEYS <= report.keys()
    assert report["commands"] == 20_000 and report["trades"] > 0
    assert report["commands_per_sec"] > 0 and report["trades_per_sec"] > 0
    assert 0 < report["p50_us"] <= report["p99_us"]
    assert 0 < report["bytes_per_resting_order"] < 2000
