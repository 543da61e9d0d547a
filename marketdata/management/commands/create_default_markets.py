from django.conf import settings
from django.core.management.base import BaseCommand

from marketdata.models import Market
from marketdata.services import market_create

# Filters for the markets `make run` starts with (settings.DEFAULT_MARKETS).
DEFAULT_FILTERS = {
    "tick_size": "0.01",
    "lot_size": "0.00001",
    "min_notional": "10",
    "maker_fee": "0.001",
    "taker_fee": "0.002",
}


class Command(BaseCommand):
    help = "Create the default markets (settings.DEFAULT_MARKETS) that do not exist yet."

    def handle(self, *args, **opts):
        for symbol in settings.DEFAULT_MARKETS:
            if Market.objects.filter(symbol=symbol).exists():
                continue
            market_create(symbol=symbol, **DEFAULT_FILTERS)
            self.stdout.write(f"created market {symbol}")
