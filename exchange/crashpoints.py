"""Named crash points for fault-injection tests; off unless EXCHANGE_CRASH_POINTS is set.

EXCHANGE_CRASH_POINTS="engine.after_commit_before_reply=0.05,engine.mid_batch=0.02"
makes the process die like `kill -9` (os._exit, no cleanup) at that point with
that probability. Never set in production.
"""

import os
import random
import sys

_points: dict[str, float] = {}
for _item in filter(None, os.environ.get("EXCHANGE_CRASH_POINTS", "").split(",")):
    _name, _, _probability = _item.partition("=")
    _points[_name.strip()] = float(_probability or 1)


def crash_point(name: str) -> None:
    probability = _points.get(name)
    if probability is not None and random.random() < probability:
        sys.stderr.write(f"crash point hit: {name}\n")
        sys.stderr.flush()
        os._exit(137)
