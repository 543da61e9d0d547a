"""Fixtures for the engine service: markets, pending order rows, an in-process engine."""

from decimal import Decimal

import pytest

from exchange.infra import redis_client
from orders.models import Order


@pytest.fixture
def clean_redis():
    """Engine tests own the Redis database they run against."""
    redis_client().flushdb()
    yield redis_client()
    redis_client().flushdb()


@pytest.fixture
def no_dispatch(monkeypatch):
    """Keep outbox rows in the DB (no Celery worker in these tests)."""
    import settlement.services

    monkeypatch.setattr(settlement.services, "outbox_dispatch", lambda **kwargs: None)


@pytest.fixture
def pending_order():
    """A pending order row as the API journals it (hold sized like the API would)."""

    def make(user, market, side, price=None, quantity=None, type="limit", tif=None, **extra):
        price = Decimal(price) if price is not None else None
        quantity = Decimal(quantity) if quantity is not None else None
        if side == "sell":
            hold_asset, hold_amount = market.base_asset, quantity
        else:
            hold_asset = market.quote_asset
            hold_amount = extra.pop("hold_amount", None) or price * quantity
        return Order.objects.create(
            user=user,
            market=market,
            side=side,
            type=type,
            time_in_force=tif or ("gtc" if type in ("limit", "stop_limit") else "ioc"),
            price=price,
            quantity=quantity,
            hold_asset=hold_asset,
            hold_amount=Decimal(hold_amount),
            **extra,
        )

    return make
