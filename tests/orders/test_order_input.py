"""OrderInput's direct path for well-formed orders gives exactly what its fields give."""

from unittest import mock

import pytest

from orders.api.serializers import OrderInput, _plain_order

PLAIN = [
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "30000.00", "quantity": "0.01000"},
    {"symbol": "ETH-USDT", "side": "sell", "type": "limit", "price": "1", "quantity": "12345678901234567890",
     "time_in_force": "ioc", "post_only": False, "client_order_id": "a.b:c-1_2"},  # fmt: skip
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "0.000000000000000001", "quantity": "1.5",
     "post_only": True, "time_in_force": None, "client_order_id": None, "stop_price": None, "quote_quantity": None},  # fmt: skip
    {"symbol": "BTC-USDT", "side": "buy", "type": "market", "quote_quantity": "100.10", "unknown": "ignored"},
    {"symbol": "btc-usdt", "side": "sell", "type": "stop_limit", "price": "10", "stop_price": "11", "quantity": "1"},
    {"symbol": "X", "side": "sell", "type": "stop_market", "stop_price": "0011.10", "quantity": "0.0"},  # zero
]

# Valid for the fields, not in the plain form: the fields decide.
COERCED = [
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": 30000, "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": " 30000 ", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "3E4", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "1", "quantity": "1", "post_only": "true"},
    {"symbol": " BTC-USDT", "side": "buy", "type": "limit", "price": "1", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "1", "quantity": "1", "client_order_id": "x\n"},
]

INVALID = [
    {"symbol": "BTC-USDT", "side": "hold", "type": "limit", "price": "1", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": ["buy"], "type": "limit", "price": "1", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": {"x": 1}, "price": "1", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "0", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "-1", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "NaN", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "1.0000000000000000001", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "123456789012345678901", "quantity": "1"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "1", "quantity": True},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "1", "quantity": "1", "time_in_force": "day"},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "1", "quantity": "1", "client_order_id": ""},
    {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "1", "quantity": "1", "client_order_id": "a" * 65},
    {"symbol": "BTC-USDT-TOO-LONG-SYMBOL", "side": "buy", "type": "limit", "price": "1", "quantity": "1"},
    {"symbol": "", "side": "buy", "type": "limit"},
    {"side": "buy", "type": "limit"},
    ["not", "an", "object"],
    None,
]


def _by_fields(data):
    """What the declared fields make of `data` (the serializer without its direct path)."""
    serializer = OrderInput(data=data)
    with mock.patch("orders.api.serializers._plain_order", return_value=None):
        valid = serializer.is_valid()
    return serializer.validated_data if valid else ("invalid", serializer.errors)


def _exact(value):
    return {k: (type(v), str(v)) for k, v in value.items()} if isinstance(value, dict) else value


@pytest.mark.parametrize("data", PLAIN)
def test_plain_input_takes_the_direct_path_with_the_fields_result(data):
    direct = _plain_order(data)
    if direct is None:  # only the zero amount: refused by the fields
        assert _by_fields(data)[0] == "invalid"
        return
    assert _exact(direct) == _exact(_by_fields(data))


@pytest.mark.parametrize("data", COERCED + INVALID)
def test_anything_else_is_left_to_the_fields(data):
    assert _plain_order(data) is None
    serializer = OrderInput(data=data)
    valid = serializer.is_valid()
    expected = _by_fields(data)
    assert valid == (not isinstance(expected, tuple))
    if valid:
        assert _exact(serializer.validated_data) == _exact(expected)
    else:
        assert serializer.errors == expected[1]
