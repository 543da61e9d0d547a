"""Operator commands for markets and traders, and GET /api/v1/markets."""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from marketdata.models import Market

pytestmark = pytest.mark.django_db


def test_create_market_command(api_client):
    call_command(
        "create_market", "BTC-USDT", "--tick-size", "0.01", "--lot-size", "0.00001", "--min-notional", "10",
        "--maker-fee", "0.001", "--taker-fee", "0.002", "--stp", "expire_both",
    )  # fmt: skip
    market = Market.objects.get(symbol="BTC-USDT")
    assert (market.base_asset, market.quote_asset) == ("BTC", "USDT")
    assert market.tick_size == Decimal("0.01") and market.stp_mode == "expire_both" and market.enabled
    [row] = api_client.get("/api/v1/markets").json()["data"]
    assert row == {
        "symbol": "BTC-USDT", "base_asset": "BTC", "quote_asset": "USDT", "tick_size": "0.01",
        "lot_size": "0.00001", "min_notional": "10", "maker_fee": "0.001", "taker_fee": "0.002",
        "stp_mode": "expire_both", "enabled": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["btc-usdt", "--tick-size", "0.01", "--lot-size", "1"],  # lower case
        ["BTCUSDT", "--tick-size", "0.01", "--lot-size", "1"],  # no dash
        ["BTC-BTC", "--tick-size", "0.01", "--lot-size", "1"],  # same asset
        ["BTC-USDT", "--tick-size", "0", "--lot-size", "1"],  # zero tick
        ["BTC-USDT", "--tick-size", "0.01", "--lot-size", "-1"],  # negative lot
        ["BTC-USDT", "--tick-size", "0.01", "--lot-size", "1", "--maker-fee", "1"],  # fee of 100%
        ["BTC-USDT", "--tick-size", "0.000000001", "--lot-size", "0.000000001", "--taker-fee", "0.01"],  # 20 places
    ],
)
def test_create_market_refuses_bad_filters(args):
    with pytest.raises(CommandError):
        call_command("create_market", *args)
    assert not Market.objects.exists()


def test_create_market_twice_is_refused(market):
    market("ETH-USDT")
    with pytest.raises(CommandError):
        call_command("create_market", "ETH-USDT", "--tick-size", "0.01", "--lot-size", "0.001")


def test_disable_and_enable_market(market, api_client):
    market("BTC-USDT")
    call_command("disable_market", "BTC-USDT")
    assert api_client.get("/api/v1/markets").json()["data"][0]["enabled"] is False
    call_command("enable_market", "BTC-USDT")
    assert Market.objects.get().enabled is True
    with pytest.raises(CommandError):
        call_command("disable_market", "NOPE-USDT")


def test_default_markets_are_created_once(settings):
    settings.DEFAULT_MARKETS = ["BTC-USDT", "ETH-USDT"]
    call_command("create_default_markets")
    call_command("create_default_markets")
    assert list(Market.objects.values_list("symbol", flat=True)) == ["BTC-USDT", "ETH-USDT"]


def test_create_trader_can_log_in(api_client):
    call_command("create_trader", "carol", "--password", "a-long-password")
    response = api_client.post("/api/v1/auth/token", {"username": "carol", "password": "a-long-password"}, format="json")
    assert response.status_code == 200
    with pytest.raises(CommandError):
        call_command("create_trader", "carol", "--password", "x")


def test_tick_and_lot_are_read_only_in_admin_once_a_market_has_orders(market, make_user, rf):
    from django.contrib.admin.sites import site

    from orders.models import Order

    btc = market("BTC-USDT")
    admin = site._registry[Market]
    request = rf.get("/admin/")
    assert "tick_size" not in admin.get_readonly_fields(request, btc)
    Order.objects.create(
        user=make_user(), market=btc, side="buy", type="limit", time_in_force="gtc", price=Decimal("1"),
        quantity=Decimal("1"), hold_asset="USDT", hold_amount=Decimal("1"),
    )  # fmt: skip
    assert {"tick_size", "lot_size"} <= set(admin.get_readonly_fields(request, btc))
