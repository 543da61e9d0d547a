from django.conf import settings
from django.db import models
from django.db.models import Q

from marketdata.models import MONEY, Market


class Order(models.Model):
    """An order as the API accepted it and as the engine last committed it.

    The row is the journal: it exists (as `pending`) before the engine hears of
    it, so nothing Redis loses is lost.
    """

    class Side(models.TextChoices):
        BUY = "buy"
        SELL = "sell"

    class Type(models.TextChoices):
        LIMIT = "limit"
        MARKET = "market"
        STOP_LIMIT = "stop_limit"
        STOP_MARKET = "stop_market"

    class TimeInForce(models.TextChoices):
        GTC = "gtc"
        IOC = "ioc"
        FOK = "fok"

    class Status(models.TextChoices):
        PENDING = "pending"
        UNTRIGGERED = "untriggered"
        OPEN = "open"
        PARTIALLY_FILLED = "partially_filled"
        FILLED = "filled"
        CANCELLED = "cancelled"
        EXPIRED = "expired"
        REJECTED = "rejected"

    LIVE_STATUSES = (Status.PENDING, Status.UNTRIGGERED, Status.OPEN, Status.PARTIALLY_FILLED)
    RESTING_STATUSES = (Status.UNTRIGGERED, Status.OPEN, Status.PARTIALLY_FILLED)
    FINAL_STATUSES = (Status.FILLED, Status.CANCELLED, Status.EXPIRED, Status.REJECTED)

    # Indexed as the first column of order_user_recent and order_user_status.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders", db_index=False)
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="orders")
    client_order_id = models.CharField(max_length=64, null=True, blank=True)
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=11, choices=Type.choices)
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices)
    post_only = models.BooleanField(default=False)
    price = models.DecimalField(**MONEY, null=True, blank=True)
    stop_price = models.DecimalField(**MONEY, null=True, blank=True)
    quantity = models.DecimalField(**MONEY, null=True, blank=True)
    quote_quantity = models.DecimalField(**MONEY, null=True, blank=True)
    filled_quantity = models.DecimalField(**MONEY, default=0)
    filled_quote = models.DecimalField(**MONEY, default=0)
    fee_total = models.DecimalField(**MONEY, default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reject_reason = models.CharField(max_length=40, null=True, blank=True)
    # Engine sequence of the order's time priority (set when it entered the book).
    sequence = models.BigIntegerField(null=True, blank=True)
    # The funds reserved at the wallet for this order (hold key "order:<id>").
    hold_asset = models.CharField(max_length=10)
    hold_amount = models.DecimalField(**MONEY, default=0)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "client_order_id"],
                condition=Q(client_order_id__isnull=False),
                name="order_client_id_unique_per_user",
            ),
            models.CheckConstraint(condition=Q(filled_quantity__gte=0), name="order_filled_nonnegative"),
        ]
        indexes = [
            models.Index(fields=["user", "-id"], name="order_user_recent"),
            models.Index(fields=["user", "status", "-id"], name="order_user_status"),
            models.Index(
                fields=["market", "sequence"],
                condition=Q(status__in=["untriggered", "open", "partially_filled"]),
                name="order_resting_by_seq",
            ),
            models.Index(fields=["market", "id"], condition=Q(status="pending"), name="order_pending"),
            models.Index(
                fields=["market", "id"],
                condition=Q(cancel_requested_at__isnull=False, status__in=["pending", "untriggered", "open", "partially_filled"]),
                name="order_cancel_requested",
            ),
        ]

    def __str__(self):
        return f"#{self.pk} {self.side} {self.market_id} {self.status}"

    @property
    def hold_key(self) -> str:
        return f"order:{self.pk}"


class Trade(models.Model):
    """One fill between a resting maker and an incoming taker, as the engine committed it."""

    # No single-column indexes on the foreign keys: each is the first column of an
    # index below (or of the unique constraint), and every index is paid for on each
    # of the engine's trade inserts.
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="trades", db_index=False)
    sequence = models.BigIntegerField()
    price = models.DecimalField(**MONEY)
    quantity = models.DecimalField(**MONEY)
    quote_quantity = models.DecimalField(**MONEY)
    taker_side = models.CharField(max_length=4, choices=Order.Side.choices)
    maker_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="maker_trades", db_index=False)
    taker_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="taker_trades", db_index=False)
    # The n-th fill of its taker: (taker_order, taker_step) is the tripwire that
    # makes a replayed command unable to insert the same trade twice.
    taker_step = models.IntegerField()
    buyer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="buys", db_index=False)
    seller = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="sells", db_index=False)
    buyer_fee = models.DecimalField(**MONEY)
    seller_fee = models.DecimalField(**MONEY)
    maker_fee_rate = models.DecimalField(**MONEY)
    taker_fee_rate = models.DecimalField(**MONEY)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["taker_order", "taker_step"], name="trade_unique_taker_step"),
        ]
        indexes = [
            models.Index(fields=["market", "-id"], name="trade_market_recent"),
            models.Index(fields=["market", "created_at"], name="trade_market_time"),
            models.Index(fields=["buyer", "-id"], name="trade_buyer_recent"),
            models.Index(fields=["seller", "-id"], name="trade_seller_recent"),
            models.Index(fields=["maker_order"], name="trade_maker_order"),
        ]

    def __str__(self):
        return f"trade #{self.pk} {self.market_id} {self.quantity}@{self.price}"
