"""Hot reads cost a fixed number of queries, however many rows they return (no N+1)."""

from decimal import Decimal

import pytest

from orders.models import Order, Trade

pytestmark = pytest.mark.django_db


def _orders(user, market, n):
    return [
        Order.objects.create(
            user=user, market=market, side="buy", type="limit", time_in_force="gtc", price=Decimal("100"),
            quantity=Decimal("1"), hold_asset="USDT", hold_amount=Decimal("100"), status="open", sequence=i + 1,
        )  # fmt: skip
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [1, 30])
def test_my_orders_list(auth_client, market, n, django_assert_num_queries):
    client = auth_client()
    _orders(client.user, market(), n)
    with django_assert_num_queries(2):  # the token's user, then the page with its markets
        response = client.get("/api/v1/orders")
    assert len(response.json()["data"]) == n


@pytest.mark.parametrize("n", [1, 30])
def test_market_trades_list(auth_client, market, make_user, n, django_assert_num_queries):
    client = auth_client()
    btc = market()
    buyer, seller = client.user, make_user()
    maker, taker = _orders(seller, btc, 1)[0], _orders(buyer, btc, 1)[0]
    for step in range(n):
        Trade.objects.create(
            market=btc, sequence=step + 10, price=Decimal("100"), quantity=Decimal("1"), quote_quantity=Decimal("100"),
            taker_side="buy", maker_order=maker, taker_order=taker, taker_step=step, buyer=buyer, seller=seller,
            buyer_fee=Decimal("0.002"), seller_fee=Decimal("0.1"), maker_fee_rate=Decimal("0.001"),
            taker_fee_rate=Decimal("0.002"), created_at="2026-01-01T00:00:00Z",
        )  # fmt: skip
    client.get("/api/v1/trades?symbol=BTC-USDT")  # fills the per-process market cache
    with django_assert_num_queries(2):  # the token's user, then the page with its markets
        response = client.get("/api/v1/trades?symbol=BTC-USDT")
    assert len(response.json()["data"]) == n
    with django_assert_num_queries(3):  # the token's user, the order with its market, its fills
        client.get(f"/api/v1/orders/{taker.pk}")
