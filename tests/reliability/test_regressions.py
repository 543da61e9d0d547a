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
