"""Prometheus metrics of settlement, served by the Celery worker process.

Counters and the histogram live in the process that settles (run the worker with
`--pool threads`, or set PROMETHEUS_MULTIPROC_DIR for a prefork pool: then the
server aggregates every child's files). The two gauges (failed awaiting review,
backlog) are read from PostgreSQL at scrape time, so they are right whichever
process serves them and however many workers run.

`start_metrics_server()` is called from the worker's `worker_ready` signal (see
`settlement.tasks`); the port is `SETTLEMENT_METRICS_PORT` (default 9109, 0 = off).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

OUTCOMES = Counter(
    "settlement_outcomes",
    "Outbox rows finished, by kind (settlement, hold_release) and outcome (settled, done, failed, resolved_*)",
    ["kind", "outcome"],
)
ATTEMPTS = Counter(
    "settlement_attempts",
    "Attempts at the wallet, by kind and result (applied, duplicate, rejected, unavailable, gave_up, error)",
    ["kind", "result"],
)
TRADE_TO_SETTLED_SECONDS = Histogram(
    "settlement_trade_to_settled_seconds",
    "Time from a trade's commit to its settlement",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200),
)
WALLET_CALL_SECONDS = Histogram(
    "settlement_wallet_call_seconds",
    "Duration of one batched wallet call",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SWEPT = Counter("settlement_swept", "Outbox rows re-enqueued by the beat sweep", ["kind"])

GAUGE_CACHE_SECONDS = 2.0


class OutboxCollector:
    """`settlement_failed_awaiting_review` and `settlement_backlog{kind}`, counted in the DB."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] | None = None

    def _counts(self) -> dict:
        from django.db import connection

        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    """SELECT (SELECT count(*) FROM settlement_settlement WHERE status = 'failed'),
                              (SELECT count(*) FROM settlement_settlement WHERE status = 'pending'),
                              (SELECT count(*) FROM settlement_holdrelease WHERE status = 'failed'),
                              (SELECT count(*) FROM settlement_holdrelease WHERE status = 'pending')"""
                )
                failed, pending, release_failed, release_pending = cursor.fetchone()
        finally:
            connection.close()  # the server's thread: do not keep a connection open between scrapes
        return {
            "failed": failed,
            "release_failed": release_failed,
            "pending": pending,
            "release_pending": release_pending,
        }

    def collect(self):
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > GAUGE_CACHE_SECONDS:
                try:
                    self._cached = (now, self._counts())
                except Exception:  # a scrape must not fail because the DB blinked
                    logger.warning("settlement metrics: cannot count the outbox", exc_info=True)
                    return
            counts = self._cached[1]
        review = GaugeMetricFamily(
            "settlement_failed_awaiting_review", "Dead letters waiting for staff", labels=["kind"]
        )
        review.add_metric(["settlement"], counts["failed"])
        review.add_metric(["hold_release"], counts["release_failed"])
        yield review
        backlog = GaugeMetricFamily(
            "settlement_backlog", "Outbox rows still pending", labels=["kind"]
        )
        backlog.add_metric(["settlement"], counts["pending"])
        backlog.add_metric(["hold_release"], counts["release_pending"])
        yield backlog


_server_lock = threading.Lock()
_server_started = False


def metrics_registry() -> CollectorRegistry:
    """The registry to serve: every child's values in multiprocess mode, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def warn_if_counters_hidden(pool_cls) -> None:
    """Pool children keep their own counters: say so unless they are aggregated."""
    name = getattr(pool_cls, "__module__", "") or ""
    if name.endswith("prefork") and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        logger.warning(
            "settlement metrics: a prefork pool settles in child processes, whose counters this "
            "process cannot serve; run the worker with --pool threads, or set PROMETHEUS_MULTIPROC_DIR"
        )


def start_metrics_server(port: int | None = None, addr: str = "0.0.0.0") -> bool:
    """Serve /metrics on `port` (once per process); False if off or the port is taken."""
    global _server_started
    from django.conf import settings

    port = int(getattr(settings, "SETTLEMENT_METRICS_PORT", 9109)) if port is None else port
    if not port:
        return False
    with _server_lock:
        if _server_started:
            return True
        registry = metrics_registry()
        registry.register(OutboxCollector())
        try:
            start_http_server(port, addr=addr, registry=registry)
        except OSError:
            logger.warning(
                "settlement metrics: port %s unavailable; not serving metrics", port, exc_info=True
            )
            return False
        _server_started = True
        logger.info("settlement metrics on http://%s:%s/metrics", addr, port)
        return True
