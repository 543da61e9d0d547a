"""Bugs the reliability loops found, each pinned by a small deterministic test.

Each is `xfail(strict=True)` until the product is fixed: then it passes, strict
xfail turns that into a failure, and whoever fixed it removes the marker (and the
bug's entry in `harness.KNOWN_SERVER_ERRORS`, if it has one).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.reliability import harness

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def quiet_btc(wallet_server, btc_market):
    """BTC-USDT with a heartbeat but no engine behind it: the engine "does not answer in time"."""
    from exchange.infra import redis_client
    from matching import feed

    redis_client().set(feed.heartbeat_key("BTC-USDT"), feed.dumps({"pid": 0, "at": 0}), ex=60)
    return btc_market


@pytest.mark.xfail(
    strict=True,
    reason="BUG-1: POST /orders answers 500 instead of 202 when the engine has not replied in time: "
    "the Order built by objects.create() keeps the int defaults (0) of filled_quantity/filled_quote/"
    "fee_total and OrderOutput's at_scale() calls .quantize() on them",
)
def test_placement_answers_202_when_the_engine_does_not_reply(quiet_btc, auth_client, settings):
    settings.ENGINE_REPLY_TIMEOUT_SECONDS = 0.2
    client = auth_client()
    harness.fund(client.user, "USDT", "1000")
    response = client.post(
        "/api/v1/orders",
        {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100.00", "quantity": "1.000"},
        format="json",
    )
    assert response.status_code == 202, response.content
    order = response.json()["data"]["order"]
    assert order["status"] == "pending"
    assert order["filled_quantity"] == "0.000" and order["filled_quote"] == "0.00000"
    assert Decimal(order["fee_total"]) == 0


@pytest.fixture
def redis_unreachable(settings):
    """This process's Redis client points at a port nobody listens on."""
    from exchange.infra import redis_client
    from tests.support.processes import free_port

    original = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client.cache_clear()
    yield
    settings.REDIS_URL = original  # before the market fixture's teardown flushes Redis
    redis_client.cache_clear()


@pytest.mark.xfail(
    strict=True,
    reason="BUG-2: with Redis unreachable, POST /orders and DELETE /orders/{id} answer 500: "
    "engine_is_live() (and _plan's book_snapshot() for market orders) let redis.ConnectionError "
    "escape; nothing was created, so the contract's answer is 503 engine_unavailable",
)
def test_placement_with_redis_unreachable_is_503_and_creates_nothing(wallet_server, btc_market, auth_client, redis_unreachable):
    from orders.models import Order

    client = auth_client()
    harness.fund(client.user, "USDT", "1000")
    response = client.post(
        "/api/v1/orders",
        {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100.00", "quantity": "1.000"},
        format="json",
    )
    assert Order.objects.count() == 0
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "engine_unavailable"


@pytest.mark.xfail(
    strict=True,
    reason="BUG-3: when Redis fails at the ring (XADD/BLPOP in engine_submit) after the order row is "
    "journaled, POST /orders answers 500 although the order exists and reconciliation will execute "
    "it (a client that retries with a new client_order_id trades twice); the answer must be 202 pending",
)
def test_placement_when_redis_fails_at_the_ring_answers_202(quiet_btc, auth_client, monkeypatch):
    import redis

    from matching import client as engine_client
    from orders.models import Order

    def ring_fails(**kwargs):
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(engine_client, "engine_submit", ring_fails)
    client = auth_client()
    harness.fund(client.user, "USDT", "1000")
    response = client.post(
        "/api/v1/orders",
        {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100.00", "quantity": "1.000"},
        format="json",
    )
    [order] = Order.objects.all()  # journaled: the engine's reconciliation will apply it
    assert order.status == "pending"
    assert response.status_code == 202, response.content
    assert response.json()["data"]["order"]["id"] == order.pk


@pytest.mark.xfail(
    strict=True,
    reason="BUG-3 (cancel): when Redis fails at the ring after the cancel is recorded on the row, "
    "DELETE /orders/{id} answers 500 although the cancel is durable and will be applied; must be 202",
)
def test_cancel_when_redis_fails_at_the_ring_answers_202(quiet_btc, auth_client, monkeypatch):
    import redis

    from matching import client as engine_client
    from orders.models import Order

    client = auth_client()
    order = Order.objects.create(
        user=client.user, market=quiet_btc, side="buy", type="limit", time_in_force="gtc",
        price="100.00", quantity="1.000", hold_asset="USDT", hold_amount="100", status="open", sequence=1,
    )

    def ring_fails(**kwargs):
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(engine_client, "engine_submit", ring_fails)
    response = client.delete(f"/api/v1/orders/{order.pk}")
    order.refresh_from_db()
    assert order.cancel_requested_at is not None  # durable: reconciliation applies it
    assert response.status_code == 202, response.content
