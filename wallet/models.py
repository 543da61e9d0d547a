"""The wallet's double-entry ledger.

`Account` rows carry the running balances; `Entry` rows are the ledger lines that
explain them (per account and bucket, entries sum to the balance). Every change
to a balance writes its entries in the same transaction, under the account's row
lock. Money enters and leaves only through deposits and withdrawals; transfers,
holds and releases only move it, so their entries sum to zero per asset.
"""

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from marketdata.models import MONEY


class Account(models.Model):
    """One owner's balance of one asset: `available` to spend, `held` for open orders."""

    owner = models.CharField(max_length=64)
    asset = models.CharField(max_length=10)
    available = models.DecimalField(**MONEY, db_default=0)
    held = models.DecimalField(**MONEY, db_default=0)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "asset"], name="wallet_account_owner_asset"),
            models.CheckConstraint(condition=Q(available__gte=0), name="wallet_account_available_gte_0"),
            models.CheckConstraint(condition=Q(held__gte=0), name="wallet_account_held_gte_0"),
        ]
        ordering = ["owner", "asset"]

    def __str__(self):
        return f"{self.owner} {self.asset}"

    @property
    def total(self):
        return self.available + self.held


class Hold(models.Model):
    """Funds reserved out of an account's `available` (for an order), keyed by the caller.

    What is held leaves either by capture (a transfer leg debits the hold) or by
    release (back to `available`); together they never exceed `amount`.
    """

    key = models.CharField(max_length=128, unique=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="holds")
    amount = models.DecimalField(**MONEY)
    # What the caller asked for; `amount` is less only for an `up_to` hold.
    requested = models.DecimalField(**MONEY)
    captured = models.DecimalField(**MONEY, db_default=0)
    released = models.DecimalField(**MONEY, db_default=0)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="wallet_hold_amount_gt_0"),
            models.CheckConstraint(condition=Q(captured__gte=0), name="wallet_hold_captured_gte_0"),
            models.CheckConstraint(condition=Q(released__gte=0), name="wallet_hold_released_gte_0"),
            models.CheckConstraint(
                condition=Q(captured__lte=F("amount") - F("released")),
                name="wallet_hold_not_overdrawn",
            ),
        ]

    def __str__(self):
        return self.key

    @property
    def remaining(self):
        return self.amount - self.captured - self.released


class Operation(models.Model):
    """The idempotency record of an applied operation: one key moves money once."""

    class Kind(models.TextChoices):
        DEPOSIT = "deposit"
        WITHDRAWAL = "withdrawal"
        TRANSFER = "transfer"
        RELEASE = "release"
        ADJUSTMENT = "adjustment"

    key = models.CharField(max_length=128, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    payload = models.JSONField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["kind"], name="wallet_operation_kind")]

    def __str__(self):
        return f"{self.kind} {self.key}"


class Entry(models.Model):
    """One signed ledger line on one bucket of one account.

    Written by an operation, by a hold placement (available -> held, no
    operation), or both (a capture or release names its hold too).
    """

    class Bucket(models.TextChoices):
        AVAILABLE = "available"
        HELD = "held"

    operation = models.ForeignKey(Operation, on_delete=models.PROTECT, null=True, blank=True, related_name="entries")
    hold = models.ForeignKey(Hold, on_delete=models.PROTECT, null=True, blank=True, related_name="entries")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    amount = models.DecimalField(**MONEY)
    bucket = models.CharField(max_length=10, choices=Bucket.choices)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(operation__isnull=False) | Q(hold__isnull=False),
                name="wallet_entry_has_source",
            ),
            models.CheckConstraint(condition=~Q(amount=0), name="wallet_entry_amount_nonzero"),
        ]
        verbose_name_plural = "entries"

    def __str__(self):
        return f"{self.account} {self.bucket} {self.amount}"
