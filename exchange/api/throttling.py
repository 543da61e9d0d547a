"""Throttles: per user when authenticated, per IP for anonymous callers only."""

from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class AnonIpThrottle(AnonRateThrottle):
    scope = "anon"


class OrderPlacementThrottle(UserRateThrottle):
    """Order placement has its own, separate rate per user."""

    scope = "orders"
