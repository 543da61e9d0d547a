from django.core.management.base import BaseCommand, CommandError

from exchange.errors import DomainError
from marketdata.models import Market
from marketdata.services import market_create


class Command(BaseCommand):
    help = "Create a market, e.g. create_market BTC-USDT --tick-size 0.01 --lot-size 0.00001"

    def add_arguments(self, parser):
        parser.add_argument("symbol")
        parser.add_argument("--tick-size", required=True)
        parser.add_argument("--lot-size", required=True)
        parser.add_argument("--min-notional", default="0")
        parser.add_argument("--maker-fee", default="0")
        parser.add_argument("--taker-fee", default="0")
        parser.add_argument("--stp", default=Market.Stp.EXPIRE_TAKER, choices=Market.Stp.values)
        parser.add_argument("--disabled", action="store_true", help="create it disabled")

    def handle(self, *args, **opts):
        try:
            market = market_create(
                symbol=opts["symbol"],
                tick_size=opts["tick_size"],
                lot_size=opts["lot_size"],
                min_notional=opts["min_notional"],
                maker_fee=opts["maker_fee"],
                taker_fee=opts["taker_fee"],
                stp_mode=opts["stp"],
                enabled=not opts["disabled"],
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"created market {market.symbol}")
