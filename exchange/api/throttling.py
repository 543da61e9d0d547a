"""Throttles: per user when authenticated, per IP for anonymous callers only.

Their counters live in the shared cache (Redis). If it cannot be reached the
throttle fails open (logs, lets the request through): a rate limiter must not
turn a Redis outage into 500s for reads that only need PostgreSQL.
"""

import logging

from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


class _FailOpen:
    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # the cache backend's connection errors
            logger.warning("throttle %s skipped: cache unavailable (%s)", self.scope, exc.__class__.__name__)
            return True


class AnonIpThrottle(_FailOpen, AnonRateThrottle):
    scope = "anon"


class UserThrottle(_FailOpen, UserRateThrottle):
    scope = "user"


class OrderPlacementThrottle(_FailOpen, UserRateThrottle):
    """Order placement has its own, separate rate per user."""

    scope = "orders"
