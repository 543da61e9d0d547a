"""A short per-process cache of markets: the order path reads a market on every request.

Entries live 2 s, so a disabled market refuses new orders within the 5 s the API promises.
"""

from __future__ import annotations

import re
import time

from marketdata.models import Market
from matching.core import MarketUnits

TTL_SECONDS = 2.0
_cache: dict[str, tuple[float, Market | None, MarketUnits | None]] = {}


SYMBOL = re.compile(r"^[A-Z0-9]{2,10}-[A-Z0-9]{2,10}$")


def market_by_symbol(symbol: str) -> tuple[Market | None, MarketUnits | None]:
    """The market and its units, or (None, None); a malformed symbol never reaches the database."""
    if not SYMBOL.match(symbol):
        return None, None
    now = time.monotonic()
    hit = _cache.get(symbol)
    if hit is not None and hit[0] > now:
        return hit[1], hit[2]
    market = Market.objects.filter(symbol=symbol).first()
    units = MarketUnits(market.tick_size, market.lot_size, market.maker_fee, market.taker_fee) if market else None
    _cache[symbol] = (now + TTL_SECONDS, market, units)
    return market, units


def clear() -> None:
    _cache.clear()
