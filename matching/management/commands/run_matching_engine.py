import logging

from django.conf import settings
from django.core.management.base import BaseCommand
from prometheus_client import start_http_server

from matching.engine import Engine

logger = logging.getLogger("matching.engine")


class Command(BaseCommand):
    help = "Run the matching engine for all markets (or --symbols), one owner per symbol."

    def add_arguments(self, parser):
        parser.add_argument("--symbols", default="", help="comma list; default: every market")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--metrics-port", type=int, default=settings.ENGINE_METRICS_PORT)

    def handle(self, *args, **opts):
        symbols = [s.strip() for s in opts["symbols"].split(",") if s.strip()] or None
        if opts["metrics_port"]:
            try:
                start_http_server(opts["metrics_port"], addr="127.0.0.1")
            except OSError as exc:  # a second engine on this host: metrics on the first only
                logger.warning("metrics port %s unavailable: %s", opts["metrics_port"], exc)
        Engine(symbols, batch_size=opts["batch_size"]).run()
