"""Shared fixtures: real PostgreSQL (pytest-django's test database) and real Redis."""

import itertools

import pytest
from django.conf import settings
from rest_framework.test import APIClient

pytest_plugins = ["tests.support.processes"]

_usernames = itertools.count(1)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def make_user(db, django_user_model):
    def make(username: str | None = None, password: str = "pass-word-123", **extra):
        username = username or f"trader{next(_usernames)}"
        return django_user_model.objects.create_user(username=username, password=password, **extra)

    return make


@pytest.fixture
def auth_client(make_user):
    """An API client logged in (JWT) as a fresh user; `client.user` is that user."""
    from rest_framework_simplejwt.tokens import RefreshToken

    def make(user=None):
        user = user or make_user()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
        client.user = user
        return client

    return make


@pytest.fixture
def market(db):
    from marketdata import cache
    from marketdata.services import market_create

    cache.clear()  # ids change between tests (the DB is reset); the per-process cache must not remember

    def make(symbol: str = "BTC-USDT", **filters):
        defaults = {
            "tick_size": "0.01",
            "lot_size": "0.00001",
            "min_notional": "10",
            "maker_fee": "0.001",
            "taker_fee": "0.002",
        }
        return market_create(symbol=symbol, **{**defaults, **filters})

    return make


@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()
