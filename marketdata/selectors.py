"""Reads of market data: markets, book snapshots, trades, tickers."""

from marketdata.models import Market


def markets_list():
    return Market.objects.order_by("symbol")
