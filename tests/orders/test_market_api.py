"""Public market endpoints and balances: order book, trades, one trade, ticker, markets."""

from decimal import Decimal

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def place(client, **fields):
    body = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100.00", "quantity": "1.0000", **fields}
    response = client.post("/api/v1/orders", body, format="json")
    assert response.status_code in (200, 201), response.json()
    return response.json()["data"]


def test_order_book_aggregates_levels_and_validates_depth(stack, auth_client, fund, api_client):
    client = auth_client()
    fund(client.user, "USDT", "10000")
    fund(client.user, "BTC", "10")
    place(client, price="99.00", quantity="1.0000")
    place(client, price="99.00", quantity="0.5000")
    place(client, price="98.00", quantity="2.0000")
    place(client, side="sell", price="101.00", quantity="1.0000")
    book = api_client.get("/api/v1/orderbook/BTC-USDT?depth=1").json()["data"]
    assert book["symbol"] == "BTC-USDT"
    assert book["bids"] == [["99.00", "1.5000"]]
    assert book["asks"] == [["101.00", "1.0000"]]
    assert isinstance(book["sequence"], int) and book["sequence"] > 0
    full = api_client.get("/api/v1/orderbook/BTC-USDT").json()["data"]
    assert full["bids"] == [["99.00", "1.5000"], ["98.00", "2.0000"]]
    for depth in ("0", "1001", "x"):
        response = api_client.get(f"/api/v1/orderbook/BTC-USDT?depth={depth}")
        assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"
    assert api_client.get("/api/v1/orderbook/NOPE-USDT").json()["error"]["code"] == "not_found"


def test_trades_public_mine_and_detail(stack, auth_client, fund, api_client):
    seller, buyer = auth_client(), auth_client()
    fund(seller.user, "BTC", "1")
    fund(buyer.user, "USDT", "1000")
    place(seller, side="sell", price="100.00", quantity="1.0000")
    trade_id = place(buyer, price="100.00", quantity="1.0000")["trades"][0]["id"]

    public = api_client.get("/api/v1/trades?symbol=BTC-USDT").json()
    assert [t["id"] for t in public["data"]] == [trade_id] and "role" not in public["data"][0]
    assert public["meta"]["next"] is None
    mine = seller.get("/api/v1/trades?mine=true").json()["data"]
    assert mine[0]["side"] == "sell" and mine[0]["role"] == "maker" and mine[0]["fee"] == "0.1" and mine[0]["fee_asset"] == "USDT"
    assert api_client.get("/api/v1/trades?mine=true").status_code == 401
    assert api_client.get("/api/v1/trades").json()["error"]["code"] == "validation_error"
    assert api_client.get("/api/v1/trades?symbol=NOPE-USDT").json()["error"]["code"] == "unknown_symbol"
    assert api_client.get("/api/v1/trades?symbol=BTC-USDT&limit=501").status_code == 400

    detail = buyer.get(f"/api/v1/trades/{trade_id}").json()["data"]
    assert detail["side"] == "buy" and detail["role"] == "taker" and detail["fee_asset"] == "BTC"
    assert "role" not in api_client.get(f"/api/v1/trades/{trade_id}").json()["data"]
    assert api_client.get("/api/v1/trades/999999").json()["error"]["code"] == "not_found"


def test_ticker_before_and_after_a_trade(stack, auth_client, fund, api_client):
    empty = api_client.get("/api/v1/markets/BTC-USDT/ticker").json()["data"]
    assert empty["last_price"] is None and empty["open_24h"] is None
    assert empty["volume_24h"] == "0" and empty["quote_volume_24h"] == "0"
    seller, buyer = auth_client(), auth_client()
    fund(seller.user, "BTC", "1")
    fund(buyer.user, "USDT", "1000")
    place(seller, side="sell", price="100.00", quantity="0.5000")
    place(seller, side="sell", price="105.00", quantity="0.5000")
    place(buyer, price="100.00", quantity="0.5000")
    from exchange.infra import redis_client

    redis_client().delete("md:ticker24h:BTC-USDT")
    ticker = api_client.get("/api/v1/markets/BTC-USDT/ticker").json()["data"]
    assert ticker["last_price"] == "100.00" and ticker["open_24h"] == "100.00"
    assert ticker["best_ask"] == "105.00" and ticker["best_ask_quantity"] == "0.5000" and ticker["best_bid"] is None
    assert ticker["volume_24h"] == "0.5000" and ticker["quote_volume_24h"] == "50.000000"
    assert api_client.get("/api/v1/markets/NOPE-USDT/ticker").status_code == 404


def test_balances_show_available_and_held(stack, auth_client, fund, api_client):
    client = auth_client()
    fund(client.user, "USDT", "1000")
    place(client)
    rows = client.get("/api/v1/balances").json()["data"]
    assert rows == [{"asset": "USDT", "available": "900", "held": "100", "total": "1000"}]
    assert api_client.get("/api/v1/balances").status_code == 401


def test_markets_list_shows_disabled_markets(stack, api_client):
    from marketdata.services import market_set_enabled

    market_set_enabled(symbol="BTC-USDT", enabled=False)
    [row] = api_client.get("/api/v1/markets").json()["data"]
    assert row["enabled"] is False and row["min_notional"] == "1" and Decimal(row["taker_fee"]) == Decimal("0.002")
