"""Order and trade shapes of docs/api.md. Output serializers build plain dicts (hot path)."""

import re
from decimal import ROUND_HALF_EVEN, Context, Decimal

from rest_framework import serializers

from exchange.api.fields import at_scale, plain
from orders.models import Order

MONEY_INPUT = {"max_digits": 38, "decimal_places": 18, "required": False, "allow_null": True}
CLIENT_ORDER_ID = r"[A-Za-z0-9._:\-]{1,64}"
AVERAGE_PLACES = Decimal("1E-18")


class PositiveDecimalField(serializers.DecimalField):
    """A finite, strictly positive decimal with at most 18 decimal places (NaN/Infinity refused)."""

    default_error_messages = {"not_positive": "Must be greater than zero."}

    def __init__(self, **kwargs):
        super().__init__(**{**MONEY_INPUT, **kwargs})

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        value = super().to_internal_value(data)
        if value is not None and value <= 0:
            self.fail("not_positive")
        return value


class OrderInput(serializers.Serializer):
    """A new order's fields. Well-formed input takes a direct path (`_plain_order`); the rest
    goes through the fields below, which also word every error."""

    symbol = serializers.CharField(max_length=21)
    side = serializers.ChoiceField(choices=Order.Side.choices)
    type = serializers.ChoiceField(choices=Order.Type.choices)
    price = PositiveDecimalField()
    stop_price = PositiveDecimalField()
    quantity = PositiveDecimalField()
    quote_quantity = PositiveDecimalField()
    time_in_force = serializers.ChoiceField(choices=Order.TimeInForce.choices, required=False, allow_null=True)
    post_only = serializers.BooleanField(required=False, default=False)
    client_order_id = serializers.RegexField(rf"^{CLIENT_ORDER_ID}$", required=False, allow_null=True, max_length=64)

    def run_validation(self, data=serializers.empty):
        # Building the fields deep-copies them on every request (most of this
        # serializer's cost); well-formed orders are validated without them.
        plain_data = _plain_order(data)
        return plain_data if plain_data is not None else super().run_validation(data)


_SYMBOL = re.compile(r"[A-Za-z0-9-]{1,21}")
_AMOUNT = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,18})?")  # within max_digits 38, decimal_places 18
_CLIENT_ORDER_ID = re.compile(CLIENT_ORDER_ID)
_SIDES = frozenset(Order.Side.values)
_TYPES = frozenset(Order.Type.values)
_TIFS = frozenset(Order.TimeInForce.values)
_AMOUNT_FIELDS = ("price", "stop_price", "quantity", "quote_quantity")
_INPUT_PLACES = Decimal("1E-18")
_INPUT_CONTEXT = Context(prec=MONEY_INPUT["max_digits"])


def _plain_order(data) -> dict | None:
    """OrderInput's validated data when every field is in its plain form, else None.

    Accepts a subset of what the fields accept and returns what they would
    (decimals quantized to 18 places, absent optional fields left out); anything
    else (errors, and forms the fields coerce, like numbers for strings) is None.
    """
    if type(data) is not dict:
        return None
    symbol, side, order_type = data.get("symbol"), data.get("side"), data.get("type")
    if not (type(symbol) is str and _SYMBOL.fullmatch(symbol) and type(side) is str and side in _SIDES
            and type(order_type) is str and order_type in _TYPES):
        return None
    out = {"symbol": symbol, "side": side, "type": order_type, "post_only": False}
    for name in _AMOUNT_FIELDS:
        if name not in data:
            continue
        raw = data[name]
        if raw is None:
            out[name] = None
            continue
        if type(raw) is not str or not _AMOUNT.fullmatch(raw):
            return None
        value = Decimal(raw)
        if not value:
            return None  # zero: the field words the refusal
        out[name] = value.quantize(_INPUT_PLACES, context=_INPUT_CONTEXT)
    if "time_in_force" in data:
        tif = data["time_in_force"]
        if tif is not None and not (type(tif) is str and tif in _TIFS):
            return None
        out["time_in_force"] = tif
    if "post_only" in data:
        if type(data["post_only"]) is not bool:
            return None
        out["post_only"] = data["post_only"]
    if "client_order_id" in data:
        coid = data["client_order_id"]
        if coid is not None and not (type(coid) is str and _CLIENT_ORDER_ID.fullmatch(coid)):
            return None
        out["client_order_id"] = coid
    return out


class OrderListFilter(serializers.Serializer):
    symbol = serializers.CharField(required=False, max_length=21)
    status = serializers.ListField(child=serializers.ChoiceField(choices=Order.Status.choices), required=False)
    side = serializers.ChoiceField(choices=Order.Side.choices, required=False)

    def to_internal_value(self, data):
        statuses = []
        for item in data.getlist("status") if hasattr(data, "getlist") else data.get("status", []):
            statuses.extend(part for part in item.split(",") if part)
        plain_data = {key: data.get(key) for key in ("symbol", "side") if data.get(key)}
        if statuses:
            plain_data["status"] = statuses
        return super().to_internal_value(plain_data)


class OrderOutput(serializers.BaseSerializer):
    """The order object of docs/api.md (see `order_data`)."""

    def to_representation(self, order: Order) -> dict:
        return order_data(order)


class TradeOutput(serializers.BaseSerializer):
    """A public trade; with the party fields when `context["user"]` is its buyer or seller (see `trade_data`)."""

    def to_representation(self, trade) -> dict:
        return trade_data(trade, user_id=getattr(self.context.get("user"), "pk", None))


# Plain functions behind the output serializers: the placement view calls them
# directly (building serializer instances per request cost more than the dicts).


def order_data(order: Order) -> dict:
    """The order object of docs/api.md, prices and quantities at the market's scale."""
    market = order.market
    pp, qp, vp = market.price_places, market.quantity_places, market.quote_places
    filled = order.filled_quantity
    average = (order.filled_quote / filled).quantize(AVERAGE_PLACES, rounding=ROUND_HALF_EVEN) if filled else None
    return {
        "id": order.pk,
        "client_order_id": order.client_order_id,
        "symbol": market.symbol,
        "side": order.side,
        "type": order.type,
        "time_in_force": order.time_in_force,
        "post_only": order.post_only,
        "price": at_scale(order.price, pp),
        "stop_price": at_scale(order.stop_price, pp),
        "quantity": at_scale(order.quantity, qp),
        "quote_quantity": at_scale(order.quote_quantity, vp),
        "filled_quantity": at_scale(filled, qp),
        "filled_quote": at_scale(order.filled_quote, vp),
        "average_price": at_scale(average, 18),
        "fee_total": plain(order.fee_total) if order.fee_total else "0",
        "status": order.status,
        "reject_reason": order.reject_reason,
        "created_at": _iso(order.created_at),
        "updated_at": _iso(order.updated_at),
    }


def trade_data(trade, *, user_id: int | None) -> dict:
    """A public trade; with the party fields when `user_id` is its buyer or seller."""
    market = trade.market
    body = {
        "id": trade.id,
        "symbol": market.symbol,
        "price": at_scale(trade.price, market.price_places),
        "quantity": at_scale(trade.quantity, market.quantity_places),
        "quote_quantity": at_scale(trade.quote_quantity, market.quote_places),
        "taker_side": trade.taker_side,
        "created_at": _iso(trade.created_at),
    }
    if user_id is None:
        return body
    if trade.buyer_id == user_id:
        side, fee, fee_asset = "buy", trade.buyer_fee, market.base_asset
    elif trade.seller_id == user_id:
        side, fee, fee_asset = "sell", trade.seller_fee, market.quote_asset
    else:
        return body
    role = "taker" if trade.taker_side == side else "maker"
    body.update(
        order_id=trade.taker_order_id if role == "taker" else trade.maker_order_id,
        side=side,
        role=role,
        fee=plain(fee) if fee else "0",
        fee_asset=fee_asset,
    )
    return body


def _iso(moment) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")
