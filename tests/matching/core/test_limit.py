"""Limit orders: resting, price-time priority, partial fills, IOC, cancel, reads."""

import pytest

from matching.core import (
    ACCEPTED,
    BUY,
    CANCELLED,
    EXPIRED,
    FILLED,
    IOC,
    LIMIT,
    OPEN,
    PARTIALLY_FILLED,
    SELL,
    TRADE,
    Order,
    OrderBook,
)

from .conftest import fields, kinds, norm, trades


def test_resting_orders_and_reads(book):
    b1, ev = book.buy(99, 5)
    assert [norm(e) for e in ev] == [("accepted", 1, b1.id)]
    assert (b1.status, b1.seq, b1.remaining, b1.filled) == (OPEN, 1, 5, 0)
    book.buy(98, 2)
    book.buy(99, 3)
    a1, _ = book.sell(101, 4)
    book.sell(103, 1)
    assert book.best_bid() == 99 and book.best_ask() == 101
    assert book.depth(10) == ([(99, 8), (98, 2)], [(101, 4), (103, 1)])
    assert book.depth(1) == ([(99, 8)], [(101, 4)])
    assert book.depth(0) == ([], []) and book.depth(-1) == ([], [])
    assert len(book.book) == 5
    assert book.get(a1.id) is a1 and book.get(999) is None
    assert [o.id for o in book.orders()] == [1, 2, 3, 4, 5]
    assert book.take_touched() == {(BUY, 99), (BUY, 98), (SELL, 101), (SELL, 103)}
    assert book.take_touched() == set()
    assert book.last_price is None


def test_empty_book_reads():
    book = OrderBook()
    assert book.best_bid() is None and book.best_ask() is None
    assert book.depth(5) == ([], [])
    assert len(book) == 0 and list(book.orders()) == []
    book.check()


def test_price_priority_then_time_priority(book):
    s1, _ = book.sell(101, 2, owner=1)
    s2, _ = book.sell(100, 2, owner=2)
    s3, _ = book.sell(100, 2, owner=3)
    s4, _ = book.sell(102, 2, owner=4)
    t, ev = book.buy(102, 7, owner=9)
    assert trades(ev) == [
        (s2.id, t.id, 100, 2),
        (s3.id, t.id, 100, 2),
        (s1.id, t.id, 101, 2),
        (s4.id, t.id, 102, 1),
    ]
    assert t.status == FILLED and t.remaining == 0 and t.filled == 7
    assert t.filled_quote == 2 * 100 + 2 * 100 + 2 * 101 + 102
    assert s4.status == PARTIALLY_FILLED and s4.remaining == 1 and s4.filled == 1
    assert book.depth(5) == ([], [(102, 1)])
    assert book.last_price == 102
    # A filled taker emits no event beyond its trades.
    assert kinds(ev) == ["trade"] * 4


def test_sell_taker_walks_bids_down(book):
    b1, _ = book.buy(100, 1, owner=1)
    b2, _ = book.buy(99, 1, owner=2)
    b3, _ = book.buy(101, 1, owner=3)
    t, ev = book.sell(99, 5, owner=4)
    assert [(m, p) for m, _, p, _ in trades(ev)] == [(b3.id, 101), (b1.id, 100), (b2.id, 99)]
    assert kinds(ev)[-1] == "accepted"
    assert t.status == PARTIALLY_FILLED and t.remaining == 2 and t.seq == ev[0][1]
    assert book.depth(5) == ([], [(99, 2)])


def test_trade_price_is_makers_and_quote_exact(book):
    book.sell(100, 3)
    t, ev = book.buy(105, 3, owner=2)
    (tr,) = map(fields, ev)
    assert (tr.price, tr.quantity, tr.quote) == (100, 3, 300)
    assert tr.taker is t and t.filled_quote == 300


def test_partial_fill_of_maker_keeps_priority(book):
    m1, _ = book.sell(100, 10, owner=1)
    m2, _ = book.sell(100, 5, owner=2)
    book.buy(100, 4, owner=3)
    assert m1.status == PARTIALLY_FILLED and m1.remaining == 6
    t, ev = book.buy(100, 7, owner=3)
    assert trades(ev) == [(m1.id, t.id, 100, 6), (m2.id, t.id, 100, 1)]
    assert m1.status == FILLED and m2.remaining == 4
    assert book.depth(5)[1] == [(100, 4)]


def test_exact_level_quantity_removes_level_without_resting(book):
    book.sell(100, 3, owner=1)
    book.sell(100, 2, owner=2)
    book.sell(101, 1, owner=2)
    t, ev = book.buy(100, 5, owner=3)
    assert t.status == FILLED and kinds(ev) == ["trade", "trade"]
    assert book.best_ask() == 101 and book.best_bid() is None
    assert book.depth(5) == ([], [(101, 1)])


def test_taker_across_many_levels_rests_remainder(book):
    makers = [book.sell(100 + i, 1 + i % 3, owner=1)[0] for i in range(30)]
    total = sum(m.quantity for m in makers)
    t, ev = book.buy(200, total + 7, owner=2)
    assert len(trades(ev)) == 30 and kinds(ev)[-1] == "accepted"
    assert t.filled == total and t.remaining == 7 and t.status == PARTIALLY_FILLED
    assert all(m.status == FILLED for m in makers)
    assert book.best_bid() == 200 and book.best_ask() is None
    assert t.filled_quote == sum((100 + i) * (1 + i % 3) for i in range(30))


def test_limit_price_bounds_matching(book):
    book.sell(100, 1)
    book.sell(102, 1)
    t, ev = book.buy(101, 3, owner=2)
    assert trades(ev) == [(1, 3, 100, 1)]
    assert book.best_bid() == 101 and book.best_ask() == 102


def test_ioc_empty_book_and_partial(book):
    t, ev = book.buy(100, 2, tif=IOC)
    assert [norm(e) for e in ev] == [("expired", 1, t.id, "ioc_remainder")]
    assert t.status == EXPIRED and t.filled == 0 and t.remaining == 2
    m, _ = book.sell(100, 1, owner=2)
    t2, ev = book.buy(101, 3, tif=IOC)
    assert kinds(ev) == ["trade", "expired"]
    assert t2.status == EXPIRED and t2.reason == "ioc_remainder"
    assert (t2.filled, t2.remaining) == (1, 2)
    assert len(book.book) == 0


def test_ioc_fully_filled(book):
    book.sell(100, 2, owner=2)
    t, ev = book.buy(100, 2, tif=IOC)
    assert t.status == FILLED and kinds(ev) == ["trade"]


def test_cancel_resting_and_unknown(book):
    b1, _ = book.buy(99, 5)
    b2, _ = book.buy(99, 3)
    book.take_touched()
    ev = book.cancel(b1.id)
    assert [norm(e) for e in ev] == [("cancelled", 3, b1.id)]
    assert b1.status == CANCELLED and b1.reason == "cancelled_by_user"
    assert b1.remaining == 5  # filled + remaining == quantity still holds
    assert book.depth(5) == ([(99, 3)], [])
    assert book.take_touched() == {(BUY, 99)}
    assert book.cancel(b1.id) == [] and book.cancel(12345) == []
    book.cancel(b2.id)
    assert book.depth(5) == ([], []) and len(book.book) == 0


def test_cancel_partially_filled_keeps_fills(book):
    m, _ = book.sell(100, 5)
    book.buy(100, 2, owner=2)
    book.cancel(m.id)
    assert m.status == CANCELLED and (m.filled, m.remaining) == (2, 3)


def test_cancel_filled_is_noop(book):
    m, _ = book.sell(100, 1)
    book.buy(100, 1, owner=2)
    assert m.status == FILLED and book.cancel(m.id) == []


def test_cancelled_orders_are_skipped_in_the_queue(book):
    makers = [book.sell(100, 1, owner=i + 1)[0] for i in range(6)]
    for m in makers[1:5]:
        book.cancel(m.id)
    t, ev = book.buy(100, 3, owner=99)
    assert trades(ev) == [(makers[0].id, t.id, 100, 1), (makers[5].id, t.id, 100, 1)]
    assert book.best_bid() == 100 and t.remaining == 1


def test_many_cancels_compact_the_level(book):
    keep = [book.sell(100, 1, owner=1)[0]]
    doomed = [book.sell(100, 1, owner=1)[0] for _ in range(200)]
    keep.append(book.sell(100, 1, owner=1)[0])
    for m in doomed:
        book.cancel(m.id)  # check() runs after each: dead counts stay exact
    assert book.depth(1)[1] == [(100, 2)]
    _, ev = book.buy(100, 2, owner=2)
    assert [m for m, *_ in trades(ev)] == [keep[0].id, keep[1].id]


def test_cancelling_whole_level_in_middle(book):
    for p in (100, 101, 102):
        book.sell(p, 1)
    book.cancel(2)
    assert book.depth(5)[1] == [(100, 1), (102, 1)]
    book.cancel(1)
    assert book.best_ask() == 102


def test_seq_is_first_event_and_strictly_increasing(book):
    b, ev = book.buy(99, 1)
    assert b.seq == ev[0][1] == 1
    s, ev = book.sell(99, 3, owner=2)
    assert s.seq == ev[0][1] == 2 and [e[1] for e in ev] == [2, 3]
    assert book.seq == 3


def test_touched_levels_include_fills(book):
    book.sell(100, 1)
    book.sell(101, 1)
    book.take_touched()
    book.buy(101, 3, owner=2)
    assert book.take_touched() == {(SELL, 100), (SELL, 101), (BUY, 101)}


def test_restored_seq_continues():
    book = OrderBook(seq=41, last_price=7)
    ev = book.place(Order(1, 1, BUY, LIMIT, price=5, quantity=1))
    assert ev == [(ACCEPTED, 42, ev[0][2])] and book.seq == 42 and book.last_price == 7


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"price": 100.0, "quantity": 1}, TypeError),
        ({"price": 100, "quantity": 1.5}, TypeError),
        ({"price": 0, "quantity": 1}, ValueError),
        ({"price": 100, "quantity": 0}, ValueError),
        ({"price": None, "quantity": 1}, ValueError),
        ({"price": 100, "quantity": None}, ValueError),
        ({"price": 100, "quantity": 1, "tif": IOC, "post_only": True}, ValueError),
        ({"price": 100, "quantity": 1, "tif": 7}, ValueError),
    ],
)
def test_invalid_limit_orders_are_refused(kwargs, error):
    book = OrderBook()
    with pytest.raises(error):
        book.place(Order(1, 1, BUY, LIMIT, **kwargs))
    assert book.seq == 0 and len(book) == 0
    book.check()


def test_bad_side_kind_and_reuse_are_refused():
    book = OrderBook()
    with pytest.raises(ValueError):
        book.place(Order(1, 1, 5, LIMIT, price=1, quantity=1))
    with pytest.raises(ValueError):
        book.place(Order(1, 1, BUY, 9, price=1, quantity=1))
    o = Order(1, 1, BUY, LIMIT, price=1, quantity=1)
    book.place(o)
    with pytest.raises(ValueError):
        book.place(o)  # the same object twice
    with pytest.raises(ValueError):
        book.place(Order(1, 2, BUY, LIMIT, price=1, quantity=1))  # live id
    book.check()


def test_trade_event_references_live_orders(book):
    m, _ = book.sell(100, 2)
    t, ev = book.buy(100, 1, owner=2)
    (tr,) = map(fields, ev)
    assert tr.kind is TRADE and tr.maker is m and tr.taker is t
    book.buy(100, 1, owner=3)
    assert tr.maker.status == FILLED  # the service reads final state after the batch
