"""Reads about the engine: liveness and the published book snapshots."""

from __future__ import annotations

from exchange.infra import redis_client
from marketdata.models import Market
from matching import feed


def engine_liveness() -> dict[str, str]:
    """For each enabled market: "ok" when an engine heartbeats for it, else "down"."""
    symbols = list(Market.objects.filter(enabled=True).values_list("symbol", flat=True))
    if not symbols:
        return {}
    beats = redis_client().mget([feed.heartbeat_key(symbol) for symbol in symbols])
    return {symbol: "ok" if beat else "down" for symbol, beat in zip(symbols, beats, strict=True)}


def book_snapshot(symbol: str) -> dict | None:
    """The engine's last published snapshot of the book (integer ticks and lots), or None."""
    raw = redis_client().get(feed.book_key(symbol))
    return feed.loads(raw) if raw else None
