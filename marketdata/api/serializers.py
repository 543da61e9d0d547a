from rest_framework import serializers

from exchange.api.fields import PlainDecimalField
from marketdata.models import Market


class MarketOutput(serializers.ModelSerializer):
    tick_size = PlainDecimalField()
    lot_size = PlainDecimalField()
    min_notional = PlainDecimalField()
    maker_fee = PlainDecimalField()
    taker_fee = PlainDecimalField()

    class Meta:
        model = Market
        fields = [
            "symbol",
            "base_asset",
            "quote_asset",
            "tick_size",
            "lot_size",
            "min_notional",
            "maker_fee",
            "taker_fee",
            "stp_mode",
            "enabled",
        ]


class BookSchema(serializers.Serializer):
    symbol = serializers.CharField()
    sequence = serializers.IntegerField()
    bids = serializers.ListField(child=serializers.ListField(child=serializers.CharField(), min_length=2, max_length=2))
    asks = serializers.ListField(child=serializers.ListField(child=serializers.CharField(), min_length=2, max_length=2))
    timestamp = serializers.DateTimeField()


class TickerSchema(serializers.Serializer):
    symbol = serializers.CharField()
    best_bid = serializers.CharField(allow_null=True)
    best_bid_quantity = serializers.CharField(allow_null=True)
    best_ask = serializers.CharField(allow_null=True)
    best_ask_quantity = serializers.CharField(allow_null=True)
    last_price = serializers.CharField(allow_null=True)
    open_24h = serializers.CharField(allow_null=True)
    high_24h = serializers.CharField(allow_null=True)
    low_24h = serializers.CharField(allow_null=True)
    volume_24h = serializers.CharField()
    quote_volume_24h = serializers.CharField()
    timestamp = serializers.DateTimeField()
