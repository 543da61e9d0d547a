from django.core.management.base import BaseCommand, CommandError

from exchange.errors import DomainError
from marketdata.services import market_set_enabled


class Command(BaseCommand):
    help = "Enable a market (resting orders stay; see docs/api.md)."

    def add_arguments(self, parser):
        parser.add_argument("symbol")

    def handle(self, *args, **opts):
        try:
            market_set_enabled(symbol=opts["symbol"], enabled=True)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"enabled market {opts['symbol']}")
