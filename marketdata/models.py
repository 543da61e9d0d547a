from django.db import models

MONEY = {"max_digits": 38, "decimal_places": 18}


class Market(models.Model):
    """A trading pair and its filters; also the engine's durable per-symbol state."""

    class Stp(models.TextChoices):
        EXPIRE_TAKER = "expire_taker"
        EXPIRE_MAKER = "expire_maker"
        EXPIRE_BOTH = "expire_both"

    symbol = models.CharField(max_length=21, unique=True)
    base_asset = models.CharField(max_length=10)
    quote_asset = models.CharField(max_length=10)
    tick_size = models.DecimalField(**MONEY)
    lot_size = models.DecimalField(**MONEY)
    min_notional = models.DecimalField(**MONEY, default=0)
    maker_fee = models.DecimalField(**MONEY, default=0)
    taker_fee = models.DecimalField(**MONEY, default=0)
    stp_mode = models.CharField(max_length=16, choices=Stp.choices, default=Stp.EXPIRE_TAKER)
    enabled = models.BooleanField(default=True)
    # Written by the engine in each batch transaction: sequences never go back,
    # and stops trigger correctly after a rebuild or a takeover.
    last_sequence = models.BigIntegerField(default=0)
    last_price = models.DecimalField(**MONEY, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol"]

    def __str__(self):
        return self.symbol

    @property
    def price_places(self) -> int:
        """Decimals of a price in this market (the tick size's)."""
        return max(0, -self.tick_size.normalize().as_tuple().exponent)

    @property
    def quantity_places(self) -> int:
        return max(0, -self.lot_size.normalize().as_tuple().exponent)

    @property
    def quote_places(self) -> int:
        return self.price_places + self.quantity_places
