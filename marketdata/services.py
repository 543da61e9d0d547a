"""Writes on markets: creation with exact-unit checks, enable/disable, filter changes."""

import re
from decimal import Decimal, InvalidOperation

from django.db import transaction

from exchange.errors import NotFound, ValidationFailed
from marketdata.models import Market

ASSET = re.compile(r"^[A-Z0-9]{2,10}$")
MAX_DECIMAL_PLACES = 18


def decimal_places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent)


def _positive(name: str, raw) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise ValidationFailed.field(name, "Must be a decimal number.") from None
    if not value.is_finite() or value <= 0:
        raise ValidationFailed.field(name, "Must be a positive number.")
    return value


def _fee_rate(name: str, raw) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise ValidationFailed.field(name, "Must be a decimal number.") from None
    if not value.is_finite() or not 0 <= value < 1:
        raise ValidationFailed.field(name, "Must be at least 0 and below 1.")
    return value


def validate_units(*, tick_size: Decimal, lot_size: Decimal, maker_fee: Decimal, taker_fee: Decimal) -> None:
    """Every amount the engine can produce (price × quantity × fee rate) fits 18 decimal places,
    so nothing is ever rounded."""
    for fee_name, fee in (("maker_fee", maker_fee), ("taker_fee", taker_fee)):
        # A buyer's fee is lots × lot_size × rate (base); a seller's is quote × rate.
        if decimal_places(lot_size * fee) > MAX_DECIMAL_PLACES or decimal_places(tick_size * lot_size * fee) > MAX_DECIMAL_PLACES:
            raise ValidationFailed.field(
                fee_name, "lot_size × fee rate and tick_size × lot_size × fee rate must fit 18 decimal places."
            )
    if decimal_places(tick_size * lot_size) > MAX_DECIMAL_PLACES:
        raise ValidationFailed.field("lot_size", "tick_size × lot_size must fit 18 decimal places.")


def market_create(
    *,
    symbol: str,
    tick_size,
    lot_size,
    min_notional=0,
    maker_fee=0,
    taker_fee=0,
    stp_mode: str = Market.Stp.EXPIRE_TAKER,
    enabled: bool = True,
) -> Market:
    base, _, quote = symbol.partition("-")
    if not (ASSET.match(base) and ASSET.match(quote)) or base == quote:
        raise ValidationFailed.field("symbol", "Must be BASE-QUOTE, each 2-10 of A-Z0-9, and different.")
    if stp_mode not in Market.Stp.values:
        raise ValidationFailed.field("stp_mode", f"Must be one of {', '.join(Market.Stp.values)}.")
    tick = _positive("tick_size", tick_size)
    lot = _positive("lot_size", lot_size)
    notional = Decimal(str(min_notional))
    if not notional.is_finite() or notional < 0:
        raise ValidationFailed.field("min_notional", "Must be zero or positive.")
    maker = _fee_rate("maker_fee", maker_fee)
    taker = _fee_rate("taker_fee", taker_fee)
    validate_units(tick_size=tick, lot_size=lot, maker_fee=maker, taker_fee=taker)
    if Market.objects.filter(symbol=symbol).exists():
        raise ValidationFailed.field("symbol", f"Market {symbol} already exists.")
    return Market.objects.create(
        symbol=symbol,
        base_asset=base,
        quote_asset=quote,
        tick_size=tick,
        lot_size=lot,
        min_notional=notional,
        maker_fee=maker,
        taker_fee=taker,
        stp_mode=stp_mode,
        enabled=enabled,
    )


def market_set_enabled(*, symbol: str, enabled: bool) -> Market:
    with transaction.atomic():
        market = Market.objects.select_for_update().filter(symbol=symbol).first()
        if market is None:
            raise NotFound(f"No market {symbol}.")
        market.enabled = enabled
        market.save(update_fields=["enabled", "updated_at"])
    return market


def market_has_orders(market: Market) -> bool:
    from orders.models import Order

    return Order.objects.filter(market=market).exists()
