"""Reads of market data: markets, the book snapshot, trades, tickers."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db.models import Max, Min, Q, QuerySet, Sum
from django.utils import timezone

from exchange.errors import NotFound, UnknownSymbol
from exchange.infra import redis_client
from marketdata.cache import market_by_symbol
from marketdata.models import Market
from matching import feed
from matching.selectors import book_snapshot
from orders.models import Trade

TICKER_CACHE_SECONDS = 1.0


def markets_list() -> QuerySet:
    return Market.objects.order_by("symbol")


def _market_in_path(symbol: str):
    market, units = market_by_symbol(symbol)
    if market is None:
        raise NotFound(f"No market {symbol}.")
    return market, units


def _market_id_in_query(symbol: str) -> int:
    market, _ = market_by_symbol(symbol)
    if market is None:
        raise UnknownSymbol(f"No market {symbol}.", details={"symbol": [f"Unknown market {symbol}."]})
    return market.id


def order_book(*, symbol: str, depth: int) -> dict:
    """The engine's published snapshot; only the first `depth` levels are converted."""
    market, units = _market_in_path(symbol)
    snapshot = book_snapshot(symbol) or {"sequence": market.last_sequence, "bids": [], "asks": [], "at": None}

    def levels(raw):
        return [[units.ticks_to_price(ticks), units.lots_to_qty(lots)] for ticks, lots in raw[:depth]]

    return {
        "market": market,
        "sequence": snapshot["sequence"],
        "bids": levels(snapshot["bids"]),
        "asks": levels(snapshot["asks"]),
        "timestamp": snapshot.get("at") or timezone.now().isoformat(),
    }


def trades_recent(*, symbol: str) -> QuerySet:
    return Trade.objects.filter(market_id=_market_id_in_query(symbol)).select_related("market")


def trades_of_user(*, user, symbol: str | None = None) -> QuerySet:
    trades = Trade.objects.filter(Q(buyer=user) | Q(seller=user)).select_related("market")
    if symbol:
        trades = trades.filter(market_id=_market_id_in_query(symbol))
    return trades


def trade_get(*, trade_id: int) -> Trade:
    trade = Trade.objects.select_related("market").filter(pk=trade_id).first()
    if trade is None:
        raise NotFound("No such trade.")
    return trade


def ticker(*, symbol: str) -> dict:
    """Best bid/ask from the engine's snapshot; last price and rolling 24 h stats from trades.

    The 24 h aggregate is one indexed range query, cached in Redis for a second,
    so a burst of ticker reads costs one query.
    """
    book = order_book(symbol=symbol, depth=1)
    market = book["market"]
    cache_key = f"md:ticker24h:{symbol}"
    cached = redis_client().get(cache_key)
    if cached:
        stats = feed.loads(cached)
    else:
        stats = _stats_24h(market)
        redis_client().set(cache_key, feed.dumps(stats), px=int(TICKER_CACHE_SECONDS * 1000))
    bids, asks = book["bids"], book["asks"]
    return {
        "market": market,
        "best_bid": bids[0][0] if bids else None,
        "best_bid_quantity": bids[0][1] if bids else None,
        "best_ask": asks[0][0] if asks else None,
        "best_ask_quantity": asks[0][1] if asks else None,
        "last_price": _dec(stats["last"]),
        "open_24h": _dec(stats["open"]),
        "high_24h": _dec(stats["high"]),
        "low_24h": _dec(stats["low"]),
        "volume_24h": Decimal(stats["volume"]),
        "quote_volume_24h": Decimal(stats["quote_volume"]),
        "timestamp": timezone.now(),
    }


def _stats_24h(market: Market) -> dict:
    window = Trade.objects.filter(market=market, created_at__gte=timezone.now() - timedelta(hours=24))
    agg = window.aggregate(high=Max("price"), low=Min("price"), volume=Sum("quantity"), quote_volume=Sum("quote_quantity"))
    first = window.order_by("id").values_list("price", flat=True).first()
    last = Trade.objects.filter(market=market).order_by("-id").values_list("price", flat=True).first()
    return {
        "open": _text(first),
        "high": _text(agg["high"]),
        "low": _text(agg["low"]),
        "volume": _text(agg["volume"]) or "0",
        "quote_volume": _text(agg["quote_volume"]) or "0",
        "last": _text(last),
    }


def _text(value) -> str | None:
    return None if value is None else str(value)


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
