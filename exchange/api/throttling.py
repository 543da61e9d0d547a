"""Throttles: per user when authenticated, per IP for anonymous callers only.

Each is a fixed-window counter in Redis: one INCR (with its expiry) per request,
in one round trip. DRF's stock throttles keep a list of every request time in the
cache and rewrite it on each call, which at thousands per minute costs more than
the rest of an order placement's checks together.

If Redis cannot be reached the throttle fails open (logs, lets the request
through): a rate limiter must not turn a Redis outage into 500s for reads that
only need PostgreSQL.
"""

import logging
import time

import redis
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from exchange.infra import redis_client

logger = logging.getLogger(__name__)


class _WindowCounter:
    """``allow_request``/``wait`` over a per-window counter; the scope, rate and key come from DRF's classes."""

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        window = int(time.time()) // self.duration
        key = f"{self.key}:{window}"
        try:
            pipe = redis_client().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self.duration + 1)
            count, _ = pipe.execute()
        except redis.RedisError as exc:
            logger.warning("throttle %s skipped: Redis unavailable (%s)", self.scope, exc.__class__.__name__)
            return True
        self.window_ends = (window + 1) * self.duration
        return count <= self.num_requests

    def wait(self):
        return max(1.0, self.window_ends - time.time())


class AnonIpThrottle(_WindowCounter, AnonRateThrottle):
    scope = "anon"


class UserThrottle(_WindowCounter, UserRateThrottle):
    scope = "user"


class OrderPlacementThrottle(_WindowCounter, UserRateThrottle):
    """Order placement has its own, separate rate per user."""

    scope = "orders"
