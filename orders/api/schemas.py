"""OpenAPI descriptions of the hand-built output shapes (documentation only)."""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from exchange.api.schema import ERROR_ENVELOPE  # noqa: F401 - referenced by name in components

DEC = {"allow_null": False}
NDEC = {"allow_null": True}


class OrderSchema(serializers.Serializer):
    id = serializers.IntegerField()
    client_order_id = serializers.CharField(allow_null=True)
    symbol = serializers.CharField()
    side = serializers.ChoiceField(choices=["buy", "sell"])
    type = serializers.ChoiceField(choices=["limit", "market", "stop_limit", "stop_market"])
    time_in_force = serializers.ChoiceField(choices=["gtc", "ioc", "fok"])
    post_only = serializers.BooleanField()
    price = serializers.CharField(**NDEC)
    stop_price = serializers.CharField(**NDEC)
    quantity = serializers.CharField(**NDEC)
    quote_quantity = serializers.CharField(**NDEC)
    filled_quantity = serializers.CharField(**DEC)
    filled_quote = serializers.CharField(**DEC)
    average_price = serializers.CharField(**NDEC)
    fee_total = serializers.CharField(**DEC)
    status = serializers.ChoiceField(
        choices=["pending", "untriggered", "open", "partially_filled", "filled", "cancelled", "expired", "rejected"]
    )
    reject_reason = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class TradeSchema(serializers.Serializer):
    id = serializers.IntegerField()
    symbol = serializers.CharField()
    price = serializers.CharField()
    quantity = serializers.CharField()
    quote_quantity = serializers.CharField()
    taker_side = serializers.ChoiceField(choices=["buy", "sell"])
    created_at = serializers.DateTimeField()
    order_id = serializers.IntegerField(required=False)
    side = serializers.ChoiceField(choices=["buy", "sell"], required=False)
    role = serializers.ChoiceField(choices=["maker", "taker"], required=False)
    fee = serializers.CharField(required=False)
    fee_asset = serializers.CharField(required=False)


class OrderWithTradesSchema(serializers.Serializer):
    order = OrderSchema()
    trades = TradeSchema(many=True)


class OrderDetailSchema(OrderSchema):
    trades = TradeSchema(many=True)


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(description=description)


class BalanceSchema(serializers.Serializer):
    asset = serializers.CharField()
    available = serializers.CharField()
    held = serializers.CharField()
    total = serializers.CharField()
