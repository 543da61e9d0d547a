"""Event values (plain tuples, kind first) and the level-key heap's lazy deletion."""

import pickle

from matching.core import (
    ACCEPTED,
    BUY,
    CANCELLED,
    EVENT_KINDS,
    EXPIRED,
    LIMIT,
    REJECTED,
    SELL,
    TRADE,
    TRIGGERED,
    Order,
    OrderBook,
)


def _order(oid=1, side=BUY, price=100, qty=1):
    return Order(oid, 1, side, LIMIT, price=price, quantity=qty)


def test_events_are_plain_tuples_kind_then_seq():
    book = OrderBook(maker_fee=3, taker_fee=5, fee_scale=1_000)
    maker = _order(1, SELL, 100, 2)
    assert book.place(maker) == [(ACCEPTED, 1, maker)]
    taker = Order(2, 2, BUY, LIMIT, price=101, quantity=3)
    events = book.place(taker)
    # The buyer (taker) pays on the base it receives, the seller (maker) on the quote.
    assert events == [(TRADE, 2, maker, taker, 100, 2, 200, 200 * 3, 2 * 5), (ACCEPTED, 3, taker)]
    assert all(type(e) is tuple for e in events)
    assert book.cancel(2) == [(CANCELLED, 4, taker)]
    ask = _order(3, SELL, 100, 1)
    assert book.place(ask) == [(ACCEPTED, 5, ask)]
    post_only = Order(4, 2, BUY, LIMIT, price=100, quantity=1, post_only=True)
    assert book.place(post_only) == [(REJECTED, 6, post_only)]
    assert post_only.reason == "post_only_would_take"


def test_event_kinds_are_the_issue_names_and_order_end_statuses():
    assert EVENT_KINDS == ("accepted", "triggered", "trade", "cancelled", "expired", "rejected")
    assert (CANCELLED, EXPIRED, REJECTED, TRIGGERED) == ("cancelled", "expired", "rejected", "triggered")


def test_events_pickle_round_trip():
    ev = (TRADE, 5, _order(2, SELL), _order(1), 100, 2, 200, 7, 8)
    again = pickle.loads(pickle.dumps(ev))
    assert again[0] == TRADE and again[6] == 200 and again[2].id == 2


def test_stale_heap_keys_are_compacted_and_best_stays_right():
    book = OrderBook()
    book.place(_order(1, BUY, 1000, 1))  # the best bid stays throughout
    oid = 2
    for rnd in range(20):
        ids = []
        for i in range(50):
            # Levels below the best: cancelling them leaves stale heap keys.
            book.place(_order(oid, BUY, 900 - i - rnd, 1))
            ids.append(oid)
            oid += 1
        for i in ids:
            book.cancel(i)
        book.check()
        bids = book._bids
        assert len(bids.heap) <= 2 * len(bids.levels) + 64
    assert book.best_bid() == 1000
    # Dropping the best now surfaces stale keys: they must be skipped.
    book.place(_order(oid, BUY, 950, 1))
    book.cancel(1)
    book.check()
    assert book.best_bid() == 950
    book.cancel(oid)
    book.check()
    assert book.best_bid() is None and book._bids.heap == []


def test_level_reopened_while_its_stale_key_is_in_the_heap():
    book = OrderBook()
    book.place(_order(1, SELL, 100, 1))
    book.place(_order(2, SELL, 105, 1))
    book.cancel(2)  # key 105 is now stale in the heap
    book.place(_order(3, SELL, 105, 1))  # reopened: pushed again (two copies)
    book.check()
    taker = Order(4, 2, BUY, LIMIT, price=105, quantity=2)
    events = book.place(taker)
    assert [e[4] for e in events if e[0] is TRADE] == [100, 105]
    book.check()
    assert book.best_ask() is None and book._asks.heap == []
    assert book.depth(5) == ([], [])
