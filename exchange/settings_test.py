"""Test settings: explicit, production-shaped (DEBUG off), throttles out of the way."""

import os
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use")
os.environ.setdefault("WALLET_TOKEN", "test-wallet-token")
os.environ.setdefault("THROTTLE_ANON", "100000/min")
os.environ.setdefault("THROTTLE_USER", "100000/min")
os.environ.setdefault("THROTTLE_ORDERS", "100000/min")

from exchange.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user creation

# Concurrent test sessions on one machine must not share a test database or a
# Redis database: each session picks its own (children inherit it via the env).
_session = os.environ.setdefault("EXCHANGE_TEST_SESSION", str(os.getpid()))
DATABASES["default"]["TEST"] = {"NAME": f"test_exchange_{_session}"}  # noqa: F405
REDIS_URL = urlunsplit(urlsplit(REDIS_URL)._replace(path=f"/{1 + int(_session) % 15}"))  # noqa: F405
CELERY_BROKER_URL = REDIS_URL
CACHES["default"]["LOCATION"] = REDIS_URL  # noqa: F405
