"""POST/GET/DELETE /api/v1/orders against the real wallet and a real engine process."""

from decimal import Decimal

import pytest

from orders.models import Order, Trade
from tests.orders.conftest import balance

pytestmark = pytest.mark.django_db(transaction=True)


def place(client, **fields):
    body = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100.00", "quantity": "1.0000", **fields}
    return client.post("/api/v1/orders", body, format="json")


def test_limit_order_rests_and_holds_funds(stack, auth_client, fund):
    client = auth_client()
    fund(client.user, "USDT", "1000")
    response = place(client)
    assert response.status_code == 201, response.json()
    data = response.json()["data"]
    order = data["order"]
    assert order["status"] == "open"
    assert order["price"] == "100.00" and order["quantity"] == "1.0000"
    assert order["filled_quantity"] == "0.0000" and order["average_price"] is None
    assert data["trades"] == []
    assert balance(client.user, "USDT") == (Decimal("900"), Decimal("100"))


def test_crossing_orders_trade_and_report_fills(stack, auth_client, fund):
    seller, buyer = auth_client(), auth_client()
    fund(seller.user, "BTC", "2")
    fund(buyer.user, "USDT", "1000")
    assert place(seller, side="sell", price="100.00", quantity="1.5000").status_code == 201
    response = place(buyer, side="buy", price="101.00", quantity="1.0000")
    assert response.status_code == 201
    data = response.json()["data"]
    assert data["order"]["status"] == "filled"
    assert data["order"]["average_price"] == "100.000000000000000000"
    assert data["order"]["fee_total"] == "0.002"
    [trade] = data["trades"]
    assert trade["price"] == "100.00" and trade["quantity"] == "1.0000" and trade["quote_quantity"] == "100.000000"
    assert trade["side"] == "buy" and trade["role"] == "taker" and trade["fee"] == "0.002" and trade["fee_asset"] == "BTC"
    assert Trade.objects.count() == 1


def test_market_buy_by_quote_quantity(stack, auth_client, fund):
    seller, buyer = auth_client(), auth_client()
    fund(seller.user, "BTC", "1")
    fund(buyer.user, "USDT", "100")
    place(seller, side="sell", price="40.00", quantity="1.0000")
    response = place(buyer, type="market", price=None, quantity=None, quote_quantity="20.000000")
    assert response.status_code == 201, response.json()
    order = response.json()["data"]["order"]
    assert order["status"] == "filled" and order["quantity"] is None
    assert order["filled_quantity"] == "0.5000" and order["quote_quantity"] == "20.000000"


def test_insufficient_funds_creates_nothing(stack, auth_client, fund):
    client = auth_client()
    fund(client.user, "USDT", "50")
    response = place(client)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "insufficient_funds"
    assert Order.objects.count() == 0
    assert balance(client.user, "USDT") == (Decimal("50"), Decimal("0"))


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"price": "abc"}, "price"),
        ({"price": "-1"}, "price"),
        ({"price": "0"}, "price"),
        ({"price": "NaN"}, "price"),
        ({"price": "Infinity"}, "price"),
        ({"price": "1e400"}, "price"),
        ({"quantity": "0.00000000000000000001"}, "quantity"),
        ({"price": "100.001"}, "price"),
        ({"quantity": "1.00001"}, "quantity"),
        ({"side": "up"}, "side"),
        ({"type": "iceberg"}, "type"),
        ({"time_in_force": "day"}, "time_in_force"),
        ({"price": None}, "price"),
        ({"type": "market"}, "price"),
        ({"time_in_force": "ioc", "post_only": True}, "post_only"),
        ({"quantity": "0.0001"}, "quantity"),
        ({"type": "market", "price": None, "time_in_force": "gtc"}, "time_in_force"),
        ({"type": "market", "price": None, "quote_quantity": "10.000000"}, "quote_quantity"),
        ({"type": "stop_limit"}, "stop_price"),
        ({"client_order_id": "bad id!"}, "client_order_id"),
    ],
)
def test_bad_input_is_a_validation_error_and_creates_nothing(stack, auth_client, fund, fields, field):
    client = auth_client()
    fund(client.user, "USDT", "1000")
    response = place(client, **fields)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"]
    assert Order.objects.count() == 0
    assert balance(client.user, "USDT") == (Decimal("1000"), Decimal("0"))


def test_unknown_and_disabled_symbol(stack, auth_client, fund):
    from marketdata import cache
    from marketdata.services import market_set_enabled

    client = auth_client()
    fund(client.user, "USDT", "1000")
    assert place(client, symbol="DOGE-USDT").json()["error"]["code"] == "unknown_symbol"
    market_set_enabled(symbol="BTC-USDT", enabled=False)
    cache.clear()
    response = place(client)
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_symbol"


def test_client_order_id_returns_the_original(stack, auth_client, fund):
    client = auth_client()
    fund(client.user, "USDT", "1000")
    first = place(client, client_order_id="my-id-1")
    assert first.status_code == 201
    again = place(client, client_order_id="my-id-1", price="1.00", side="sell")
    assert again.status_code == 200
    assert again.json()["data"]["order"]["id"] == first.json()["data"]["order"]["id"]
    assert Order.objects.count() == 1
    assert balance(client.user, "USDT") == (Decimal("900"), Decimal("100"))


def test_cancel_releases_and_second_cancel_conflicts(stack, auth_client, fund):
    client = auth_client()
    fund(client.user, "USDT", "1000")
    order_id = place(client).json()["data"]["order"]["id"]
    response = client.delete(f"/api/v1/orders/{order_id}")
    assert response.status_code == 200, response.json()
    assert response.json()["data"]["status"] == "cancelled"
    again = client.delete(f"/api/v1/orders/{order_id}")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "order_not_cancellable"


def test_other_users_order_is_not_found(stack, auth_client, fund):
    owner, other = auth_client(), auth_client()
    fund(owner.user, "USDT", "1000")
    order_id = place(owner).json()["data"]["order"]["id"]
    assert other.get(f"/api/v1/orders/{order_id}").status_code == 404
    assert other.delete(f"/api/v1/orders/{order_id}").json()["error"]["code"] == "not_found"
    assert other.get("/api/v1/orders").json()["data"] == []
    assert Order.objects.get().status == "open"


def test_list_filters_and_detail(stack, auth_client, fund):
    client = auth_client()
    fund(client.user, "USDT", "10000")
    ids = [place(client, price=f"{90 + i}.00").json()["data"]["order"]["id"] for i in range(3)]
    client.delete(f"/api/v1/orders/{ids[0]}")
    listed = client.get("/api/v1/orders?status=open").json()
    assert [o["id"] for o in listed["data"]] == [ids[2], ids[1]]
    both = client.get("/api/v1/orders?status=open,cancelled&symbol=BTC-USDT&side=buy&limit=2").json()
    assert len(both["data"]) == 2 and both["meta"]["next"]
    detail = client.get(f"/api/v1/orders/{ids[1]}").json()["data"]
    assert detail["id"] == ids[1] and detail["trades"] == []
    assert client.get("/api/v1/orders?limit=0").status_code == 400


def test_orders_need_a_token(stack, api_client):
    response = api_client.post("/api/v1/orders", {}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_too_many_open_orders(stack, auth_client, fund, settings):
    settings.MAX_OPEN_ORDERS_PER_MARKET = 2
    client = auth_client()
    fund(client.user, "USDT", "1000")
    assert place(client).status_code == 201
    assert place(client).status_code == 201
    response = place(client)
    assert response.status_code == 422 and response.json()["error"]["code"] == "too_many_open_orders"


def test_no_engine_is_engine_unavailable_and_nothing_held(wallet_server, market, auth_client, fund):
    from exchange.infra import redis_client

    redis_client().flushdb()
    market("BTC-USDT", tick_size="0.01", lot_size="0.0001", min_notional="1")
    client = auth_client()
    fund(client.user, "USDT", "1000")
    response = place(client)
    assert response.status_code == 503 and response.json()["error"]["code"] == "engine_unavailable"
    assert Order.objects.count() == 0
    assert balance(client.user, "USDT") == (Decimal("1000"), Decimal("0"))


def test_wallet_down_is_wallet_unavailable(stack, auth_client, settings):
    from settlement.clients.wallet import wallet_client

    settings.WALLET_URL = "http://127.0.0.1:1"
    wallet_client.cache_clear()
    client = auth_client()
    response = place(client)
    assert response.status_code == 503 and response.json()["error"]["code"] == "wallet_unavailable"
    assert Order.objects.count() == 0
