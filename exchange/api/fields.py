"""Serializer fields for exact money: Decimal in, fixed-point string out (never 1E-8)."""

from decimal import Decimal

from rest_framework import serializers


def plain(value: Decimal | None) -> str | None:
    """Fixed-point text without trailing zeros: Decimal("1E-8") -> "0.00000001"."""
    if value is None:
        return None
    return format(Decimal(value).normalize(), "f")


def at_scale(value: Decimal | None, places: int) -> str | None:
    """Fixed-point text with exactly `places` decimals (the market's scale)."""
    if value is None:
        return None
    return format(Decimal(value).quantize(Decimal(1).scaleb(-places)), "f")


class PlainDecimalField(serializers.Field):
    """Read-only decimal rendered as a fixed-point string."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value):
        return plain(value)
