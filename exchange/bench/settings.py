"""The project's settings with the bench urlconf (the bare anchor endpoint added).

Everything else is `exchange.settings` as the environment makes it, so the bare
endpoint runs with the same middleware, renderer and server settings as the API.
"""

from exchange.settings import *  # noqa: F403

ROOT_URLCONF = "exchange.bench.urls"
