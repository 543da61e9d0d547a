"""The wallet outbox: what the engine's batch transaction says the wallet must do.

Rows are written in the same transaction as the trades and order changes that
cause them, then carried out by Celery tasks; nothing is lost between the two.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from marketdata.models import MONEY


class Settlement(models.Model):
    """One per trade: the atomic multi-leg transfer at the wallet (idempotency key trade:<id>)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SETTLED = "settled"
        FAILED = "failed"
        RESOLVED = "resolved"

    class Resolution(models.TextChoices):
        """How staff closed a dead letter (blank until they do)."""

        NONE = "", "-"
        # The wallet had applied trade:<id> after all: the row is settled.
        TRANSFER_APPLIED = "transfer_applied"
        # Closed with no money moved: an explicit adjustment, so the conservation
        # check can account for the holds the transfer would have captured.
        RESOLVED_WITHOUT_TRANSFER = "resolved_without_transfer"

    trade = models.OneToOneField(
        "orders.Trade", on_delete=models.PROTECT, primary_key=True, related_name="settlement"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # Machine code of the last error (wallet_unavailable, hold_exceeded, ...), for filtering.
    # db_default: the engine COPYs rows without naming this column.
    last_error_code = models.CharField(max_length=64, blank=True, default="", db_default="")
    created_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolution_note = models.TextField(blank=True, default="")
    resolution = models.CharField(
        max_length=32, choices=Resolution.choices, blank=True, default="", db_default=""
    )
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="pending"), name="settlement_due"
            ),
            models.Index(fields=["status", "created_at"], name="settlement_status_age"),
        ]

    def __str__(self):
        return f"settlement of trade #{self.trade_id} ({self.status})"

    @property
    def wallet_key(self) -> str:
        return f"trade:{self.trade_id}"


class SettlementAttempt(models.Model):
    """History of one settlement: each try, its outcome and error, for staff review."""

    settlement = models.ForeignKey(Settlement, on_delete=models.CASCADE, related_name="history")
    at = models.DateTimeField(auto_now_add=True)
    outcome = models.CharField(max_length=32)
    error = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")
    # The settlement's attempt number this row records (null for staff actions).
    attempt = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]


class HoldRelease(models.Model):
    """Give back the part of an order's hold that its trades did not capture.

    `amount` is exact (hold minus captured), never "the rest", so releases and
    captures can be carried out in any order. Key: release:order:<id>.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        FAILED = "failed"

    order = models.OneToOneField(
        "orders.Order", on_delete=models.PROTECT, primary_key=True, related_name="hold_release"
    )
    asset = models.CharField(max_length=10)
    amount = models.DecimalField(**MONEY)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_error_code = models.CharField(max_length=64, blank=True, default="", db_default="")
    created_at = models.DateTimeField()
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="pending"), name="release_due"
            ),
        ]

    @property
    def wallet_key(self) -> str:
        return f"release:order:{self.order_id}"
