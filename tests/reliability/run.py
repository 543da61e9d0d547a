"""Runner of the reliability suite: `python -m tests.reliability.run [--full] [--seed N] [pytest args]`.

Runs `pytest tests/reliability -m chaos` (short sizes, or the full loops with `--full`,
i.e. `CHAOS_FULL=1`), then prints the table of figures the loops recorded (also
written to `var/chaos/figures.json`) as Markdown, ready for a report. Exits with
pytest's status.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def markdown(report: dict) -> str:
    lines = [
        f"Reliability figures ({'full' if report.get('full') else 'short'} run, {report.get('at', '')})",
        "",
        "| loop | seed | s | figure | value |",
        "|---|---|---|---|---|",
    ]
    for row in report.get("loops", []):
        first = True
        for key, value in row.items():
            if key in ("loop", "seed", "seconds"):
                continue
            text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
            head = f"| {row['loop']} | {row.get('seed', '')} | {row.get('seconds', '')} |" if first else "| | | |"
            lines.append(f"{head} {key} | {text.replace('|', '/')} |")
            first = False
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full loops (CHAOS_FULL=1)")
    parser.add_argument("--seed", type=int, help="one seed for every loop (CHAOS_SEED)")
    parser.add_argument("--figures", default=str(ROOT / "var" / "chaos" / "figures.json"))
    args, pytest_args = parser.parse_known_args(argv)
    env = dict(os.environ)
    env["CHAOS_FIGURES"] = args.figures
    if args.full:
        env["CHAOS_FULL"] = "1"
    if args.seed is not None:
        env["CHAOS_SEED"] = str(args.seed)
    Path(args.figures).unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "tests/reliability", "-m", "chaos", "-p", "no:cacheprovider", *pytest_args]
    print("$", " ".join(command), "(CHAOS_FULL=1)" if args.full else "", flush=True)
    started = time.monotonic()
    status = subprocess.call(command, cwd=ROOT, env=env)
    print(f"\nreliability suite: exit {status} after {time.monotonic() - started:.0f}s\n")
    path = Path(args.figures)
    if path.exists():
        print(markdown(json.loads(path.read_text())))
    return status


if __name__ == "__main__":
    sys.exit(main())
