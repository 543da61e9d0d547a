"""Event values (tuple-based) and the level-key heap's lazy deletion."""

import pickle

from matching.core import (
    BUY,
    LIMIT,
    SELL,
    Accepted,
    Cancelled,
    Expired,
    Order,
    OrderBook,
    Rejected,
    Trade,
    Triggered,
)


def _order(oid=1, side=BUY, price=100, qty=1):
    return Order(oid, 1, side, LIMIT, price=price, quantity=qty)


def test_event_fields_equality_and_repr():
    o, m = _order(1), _order(2, SELL)
    ev = Accepted((3, o))
    assert (ev.seq, ev.order) == (3, o) and type(ev) is Accepted
    # Same fields, different event type: not equal (plain tuples would be).
    assert ev == Accepted((3, o)) and ev != Cancelled((3, o))
    assert not (ev != Accepted((3, o)))
    assert ev != Accepted((3, _order(1)))  # orders compare by identity
    assert ev != (3, o)
    for cls in (Triggered, Cancelled, Expired, Rejected):
        assert cls((1, o)).order is o
    tr = Trade((5, m, o, 100, 2, 200, 7, 8))
    assert (tr.seq, tr.maker, tr.taker, tr.price, tr.quantity) == (5, m, o, 100, 2)
    assert (tr.quote, tr.maker_fee, tr.taker_fee) == (200, 7, 8)
    assert repr(ev) == f"Accepted(seq=3, order={o!r})"
    assert repr(tr).startswith("Trade(seq=5, maker=Order(id=2")
    assert len({ev, Accepted((3, o))}) == 1


def test_events_pickle_round_trip():
    ev = Trade((5, _order(2, SELL), _order(1), 100, 2, 200, 7, 8))
    again = pickle.loads(pickle.dumps(ev))
    assert type(again) is Trade and again.quote == 200 and again.maker.id == 2


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
    assert [e.price for e in events if type(e) is Trade] == [100, 105]
    book.check()
    assert book.best_ask() is None and book._asks.heap == []
    assert book.depth(5) == ([], [])
