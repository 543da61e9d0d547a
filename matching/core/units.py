"""The edge between decimal amounts and the core's integers, for one market.

Inside the core a price is an integer number of ticks, a quantity an integer number
of lots, a quote amount an integer number of quote units (one unit = tick x lot) and
a fee an integer number of fee units (one base fee unit = lot / fee_scale, one quote
fee unit = tick x lot / fee_scale). ``MarketUnits`` converts both ways exactly: every
Decimal is taken apart into an integer coefficient and a power of ten and only integer
arithmetic is done, so no context precision or rounding ever applies.
"""

from __future__ import annotations

from decimal import Decimal


def _parts(value: Decimal, what: str) -> tuple[int, int]:
    """Return ``(coefficient, exponent)`` with ``value == coefficient * 10**exponent``."""
    if not isinstance(value, Decimal):
        if isinstance(value, int) and not isinstance(value, bool):
            return value, 0
        raise TypeError(f"{what} must be a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{what} must be finite, got {value}")
    sign, digits, exponent = value.as_tuple()
    coefficient = int("".join(map(str, digits))) if digits else 0
    return (-coefficient if sign else coefficient), exponent


def _strip(coefficient: int, exponent: int) -> tuple[int, int]:
    """Drop trailing zeros of the coefficient (``1.500`` -> ``15, -1``)."""
    if coefficient == 0:
        return 0, 0
    while coefficient % 10 == 0:
        coefficient //= 10
        exponent += 1
    return coefficient, exponent


def _decimal(coefficient: int, exponent: int) -> Decimal:
    # Constructing from a string is exact whatever the context precision.
    return Decimal(f"{coefficient}E{exponent}")


class MarketUnits:
    """Exact conversions for a market with the given tick, lot and fee rates.

    ``fee_scale`` is ``10 ** (most decimal places of the two rates)`` and
    ``maker_fee_num`` / ``taker_fee_num`` the rates times that scale, ready for
    ``OrderBook(maker_fee=..., taker_fee=..., fee_scale=...)``. All methods are O(1)
    in the number of digits involved.
    """

    __slots__ = (
        "tick_size",
        "lot_size",
        "maker_fee",
        "taker_fee",
        "fee_scale",
        "maker_fee_num",
        "taker_fee_num",
        "_tick",
        "_lot",
        "_quote",
        "_fee_places",
    )

    def __init__(
        self, tick_size: Decimal, lot_size: Decimal, maker_fee: Decimal, taker_fee: Decimal
    ) -> None:
        self._tick = _parts(tick_size, "tick_size")
        self._lot = _parts(lot_size, "lot_size")
        if self._tick[0] <= 0 or self._lot[0] <= 0:
            raise ValueError("tick_size and lot_size must be positive")
        maker = _strip(*_parts(maker_fee, "maker_fee"))
        taker = _strip(*_parts(taker_fee, "taker_fee"))
        for name, (coefficient, _) in (("maker_fee", maker), ("taker_fee", taker)):
            if coefficient < 0:
                raise ValueError(f"{name} must not be negative")
        places = max(0, -maker[1], -taker[1])
        self.tick_size = tick_size
        self.lot_size = lot_size
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self._fee_places = places
        self.fee_scale = 10**places
        # rate * 10**places is an integer because places covers both rates' decimals.
        self.maker_fee_num = maker[0] * 10 ** (maker[1] + places)
        self.taker_fee_num = taker[0] * 10 ** (taker[1] + places)
        self._quote = (self._tick[0] * self._lot[0], self._tick[1] + self._lot[1])

    def book_kwargs(self) -> dict[str, int]:
        """``maker_fee``, ``taker_fee`` and ``fee_scale`` for ``OrderBook``."""
        return {
            "maker_fee": self.maker_fee_num,
            "taker_fee": self.taker_fee_num,
            "fee_scale": self.fee_scale,
        }

    # Decimal -> integer units. Each raises ValueError unless the amount is an exact
    # multiple of the unit (the API reports that as a validation error).

    @staticmethod
    def _count(value: Decimal, unit: tuple[int, int], what: str) -> int:
        coefficient, exponent = _parts(value, what)
        unit_coefficient, unit_exponent = unit
        # value / unit = coefficient * 10**(exponent - unit_exponent) / unit_coefficient
        shift = exponent - unit_exponent
        if shift >= 0:
            numerator, denominator = coefficient * 10**shift, unit_coefficient
        else:
            numerator, denominator = coefficient, unit_coefficient * 10**-shift
        count, rest = divmod(numerator, denominator)
        if rest:
            raise ValueError(f"{what} {value} is not a multiple of {_decimal(*unit)}")
        return count

    def price_to_ticks(self, price: Decimal) -> int:
        """Price -> ticks; ``ValueError`` if off the tick grid."""
        return self._count(price, self._tick, "price")

    def qty_to_lots(self, quantity: Decimal) -> int:
        """Quantity -> lots; ``ValueError`` if off the lot grid."""
        return self._count(quantity, self._lot, "quantity")

    def quote_to_units(self, amount: Decimal) -> int:
        """Quote amount -> quote units (tick x lot); ``ValueError`` if not a multiple."""
        return self._count(amount, self._quote, "quote amount")

    # Integer units -> Decimal, exact, at the unit's own scale.

    def ticks_to_price(self, ticks: int) -> Decimal:
        return _decimal(ticks * self._tick[0], self._tick[1])

    def lots_to_qty(self, lots: int) -> Decimal:
        return _decimal(lots * self._lot[0], self._lot[1])

    def units_to_quote(self, units: int) -> Decimal:
        return _decimal(units * self._quote[0], self._quote[1])

    def base_fee(self, units: int) -> Decimal:
        """Base fee units (lot / fee_scale) -> base amount."""
        return _decimal(units * self._lot[0], self._lot[1] - self._fee_places)

    def quote_fee(self, units: int) -> Decimal:
        """Quote fee units (tick x lot / fee_scale) -> quote amount."""
        return _decimal(units * self._quote[0], self._quote[1] - self._fee_places)

    def __repr__(self) -> str:
        return (
            f"MarketUnits(tick_size={self.tick_size}, lot_size={self.lot_size}, "
            f"maker_fee={self.maker_fee}, taker_fee={self.taker_fee})"
        )
