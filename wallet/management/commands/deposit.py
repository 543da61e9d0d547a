"""`python manage.py deposit USERNAME ASSET AMOUNT`: credit a trader at the wallet (operator use)."""

import uuid

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from exchange.errors import DomainError
from wallet import selectors, services
from wallet.owners import owner_for_user
from wallet.validation import fmt


class Command(BaseCommand):
    help = "Deposit AMOUNT of ASSET to USERNAME's wallet account (a new idempotency key each run)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("asset")
        parser.add_argument("amount")
        parser.add_argument("--key", help="idempotency key (default: a fresh one); repeat it to deposit once")

    def handle(self, *args, username, asset, amount, key=None, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        owner = owner_for_user(user.pk)
        key = key or f"deposit:cli:{uuid.uuid4().hex}"
        try:
            record, applied = services.deposit(key=key, owner=owner, asset=asset.upper(), amount=amount)
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        balance = next(row for row in selectors.balances_of(owner=owner) if row.asset == asset.upper())
        verb = "Deposited" if applied else "Already deposited (same key)"
        self.stdout.write(
            f"{verb} {record.payload['amount']} {record.payload['asset']} to {username} ({owner}); "
            f"available {fmt(balance.available)}, key {key}"
        )
