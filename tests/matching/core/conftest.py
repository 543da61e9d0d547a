"""Helpers for the matching-core tests (pure Python: no Django, no database)."""

from __future__ import annotations

import itertools
from collections import namedtuple

import pytest

from matching.core import (
    BUY,
    EVENT_KINDS,
    EXPIRED,
    GTC,
    LIMIT,
    MARKET,
    REJECTED,
    SELL,
    STOP_LIMIT,
    STOP_MARKET,
    TRADE,
    Order,
    OrderBook,
)

TradeFields = namedtuple(
    "TradeFields", "kind seq maker taker price quantity quote maker_fee taker_fee"
)
OrderEventFields = namedtuple("OrderEventFields", "kind seq order")


def fields(event):
    """An event tuple with its items named, for readable assertions."""
    return TradeFields(*event) if event[0] is TRADE else OrderEventFields(*event)


def norm(event) -> tuple:
    """An event as a plain tuple of ids and integers (order state read now)."""
    kind = event[0]
    assert type(event) is tuple and kind in EVENT_KINDS, f"unknown event {event!r}"
    if kind is TRADE:
        _, seq, maker, taker, *amounts = event
        return (kind, seq, maker.id, taker.id, *amounts)
    _, seq, order = event
    if kind is EXPIRED or kind is REJECTED:
        return (kind, seq, order.id, order.reason)
    return (kind, seq, order.id)


def kinds(events) -> list[str]:
    return [norm(e)[0] for e in events]


def trades(events) -> list[tuple[int, int, int, int]]:
    """(maker id, taker id, price, quantity) of each trade."""
    return [(e[2].id, e[3].id, e[4], e[5]) for e in events if e[0] is TRADE]


class Book:
    """An OrderBook plus order factories, checking invariants after every command."""

    def __init__(self, **kwargs) -> None:
        self.book = OrderBook(**kwargs)
        self.ids = itertools.count(1)
        self.events: list = []

    def __getattr__(self, name):
        return getattr(self.book, name)

    def _place(self, order: Order) -> list:
        seq_before = self.book.seq
        events = self.book.place(order)
        self._after(events, seq_before)
        return events

    def _after(self, events, seq_before) -> None:
        self.book.check()
        seqs = [e[1] for e in events]
        assert seqs == list(range(seq_before + 1, seq_before + 1 + len(events)))
        assert self.book.seq == seq_before + len(events)
        self.events.extend(events)

    def order(self, side, kind, owner=1, **kw) -> Order:
        return Order(next(self.ids), owner, side, kind, **kw)

    def limit(self, side, price, qty, owner=1, tif=GTC, **kw) -> tuple[Order, list]:
        o = self.order(side, LIMIT, owner, tif=tif, price=price, quantity=qty, **kw)
        return o, self._place(o)

    def buy(self, price, qty, **kw):
        return self.limit(BUY, price, qty, **kw)

    def sell(self, price, qty, **kw):
        return self.limit(SELL, price, qty, **kw)

    def market(self, side, qty=None, owner=1, **kw) -> tuple[Order, list]:
        o = self.order(side, MARKET, owner, quantity=qty, **kw)
        return o, self._place(o)

    def stop_limit(self, side, stop, price, qty, owner=1, **kw) -> tuple[Order, list]:
        o = self.order(side, STOP_LIMIT, owner, price=price, stop_price=stop, quantity=qty, **kw)
        return o, self._place(o)

    def stop_market(self, side, stop, qty=None, owner=1, **kw) -> tuple[Order, list]:
        o = self.order(side, STOP_MARKET, owner, stop_price=stop, quantity=qty, **kw)
        return o, self._place(o)

    def cancel(self, order_id: int) -> list:
        seq_before = self.book.seq
        events = self.book.cancel(order_id)
        self._after(events, seq_before)
        return events


@pytest.fixture
def make_book():
    """``make_book(**OrderBook kwargs)`` -> a checking ``Book`` wrapper."""
    return Book


@pytest.fixture
def book():
    return Book()


__all__ = ["BUY", "SELL", "Book", "fields", "kinds", "norm", "trades"]
