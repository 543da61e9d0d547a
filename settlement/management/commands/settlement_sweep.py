"""Re-enqueue outbox rows left pending past their deadline, now (what beat does every 15 s)."""

import json

from django.core.management.base import BaseCommand

from settlement import services


class Command(BaseCommand):
    help = "Re-enqueue settlements and hold releases still pending after their retry time (beat's sweep, once)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            help="seconds past due before a row counts as stuck (default: the setting)",
        )
        parser.add_argument(
            "--limit", type=int, default=None, help="rows per kind (default: the setting)"
        )

    def handle(self, *args, grace, limit, **options):
        counts = services.outbox_sweep(grace_seconds=grace, limit=limit)
        self.stdout.write(json.dumps(counts))
