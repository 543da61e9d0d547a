import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the matching engine (placeholder until the engine service lands)."

    def add_arguments(self, parser):
        parser.add_argument("--symbols", default="")

    def handle(self, *args, **opts):
        self.stdout.write("matching engine: not built yet (placeholder); idling")
        while True:
            time.sleep(3600)
