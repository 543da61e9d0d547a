"""The outbox at a glance: rows per kind and status, dead letters, staff adjustments."""

import json

from django.core.management.base import BaseCommand

from settlement import selectors


class Command(BaseCommand):
    help = "Print settlement and hold-release counts by status, and what staff resolutions left in holds (JSON)."

    def handle(self, *args, **options):
        adjustments = selectors.resolved_without_transfer_holds()
        self.stdout.write(
            json.dumps(
                {
                    "counts": selectors.outbox_counts(),
                    "resolved_without_transfer_holds": {
                        asset: str(amount) for asset, amount in adjustments.items()
                    },
                },
                indent=2,
            )
        )
