"""Settings of the Celery workers the settlement tests start: the test settings plus
settlement knobs from the environment (short backoffs, a private queue, beat's sweep)."""

import os

from exchange.settings_test import *  # noqa: F403

# The tests' private broker (the test settings would pick a database of the shared one).
CELERY_BROKER_URL = os.environ.get("SETTLEMENT_TEST_BROKER_URL") or CELERY_BROKER_URL  # noqa: F405
SETTLEMENT_QUEUE = os.environ.get("SETTLEMENT_QUEUE") or None
SETTLEMENT_MAX_ATTEMPTS = int(os.environ.get("SETTLEMENT_MAX_ATTEMPTS", "5"))
SETTLEMENT_BACKOFF_BASE_SECONDS = float(os.environ.get("SETTLEMENT_BACKOFF_BASE_SECONDS", "0.2"))
SETTLEMENT_BACKOFF_MAX_SECONDS = float(os.environ.get("SETTLEMENT_BACKOFF_MAX_SECONDS", "1.0"))
SETTLEMENT_LEASE_SECONDS = float(os.environ.get("SETTLEMENT_LEASE_SECONDS", "3"))
SETTLEMENT_SWEEP_GRACE_SECONDS = float(os.environ.get("SETTLEMENT_SWEEP_GRACE_SECONDS", "0.5"))
SETTLEMENT_METRICS_PORT = int(os.environ.get("SETTLEMENT_METRICS_PORT", "0"))
SETTLEMENT_BATCH_SIZE = int(os.environ.get("SETTLEMENT_BATCH_SIZE", "50"))
WALLET_TIMEOUT_SECONDS = float(os.environ.get("WALLET_TIMEOUT_SECONDS", "5"))

CELERY_BEAT_SCHEDULE = {
    "settlement-sweep": {
        "task": "settlement.tasks.sweep_outbox",
        "schedule": float(os.environ.get("SETTLEMENT_SWEEP_EVERY", "1")),
        "options": {"queue": SETTLEMENT_QUEUE} if SETTLEMENT_QUEUE else {},
    },
}
