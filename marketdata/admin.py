from django.contrib import admin

from marketdata.models import Market
from marketdata.services import market_has_orders


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
    list_display = ["symbol", "tick_size", "lot_size", "min_notional", "maker_fee", "taker_fee", "stp_mode", "enabled", "last_price"]
    list_filter = ["enabled", "stp_mode"]
    search_fields = ["symbol", "base_asset", "quote_asset"]
    readonly_fields = ["last_sequence", "last_price", "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["symbol", "base_asset", "quote_asset"]
            if market_has_orders(obj):  # units are frozen once orders exist
                fields += ["tick_size", "lot_size"]
        return fields
