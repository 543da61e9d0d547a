"""The project's settings with the bench urlconf (the bare anchor endpoint added).

Everything else is `exchange.settings` as the environment makes it (or the module
named by BENCH_BASE_SETTINGS, for `--settings` experiments), so the bare endpoint
runs with the same middleware, renderer and server settings as the API.
"""

import importlib
import os

_base = importlib.import_module(os.environ.get("BENCH_BASE_SETTINGS") or "exchange.settings")
globals().update({name: value for name, value in vars(_base).items() if name.isupper()})

ROOT_URLCONF = "exchange.bench.urls"
