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
