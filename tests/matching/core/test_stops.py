"""Stop-limit and stop-market orders: entry, triggering, ordering, chains, cancel."""

import pytest

from matching.core import (
    BUY,
    CANCELLED,
    EXPIRED,
    FILLED,
    FOK,
    OPEN,
    PARTIALLY_FILLED,
    REJECTED,
    SELL,
    STOP_LIMIT,
    UNTRIGGERED,
    Order,
    OrderBook,
)

from .conftest import fields, kinds, norm


def _trade_at(book, price, owners=(90, 91)):
    """Make one trade at ``price`` between two throwaway owners."""
    book.sell(price, 1, owner=owners[0])
    book.buy(price, 1, owner=owners[1])
    assert book.last_price == price


def test_stop_waits_untriggered_without_last_price(book):
    o, ev = book.stop_limit(BUY, 110, 111, 1)
    assert [norm(e) for e in ev] == [("accepted", 1, o.id)]
    assert o.status == UNTRIGGERED and o.seq == 1
    assert book.get(o.id) is o and len(book.book) == 1
    assert book.depth(5) == ([], []) and book.take_touched() == set()


@pytest.mark.parametrize(
    "side, stop, rejected",
    [
        (BUY, 99, True),
        (BUY, 100, True),
        (BUY, 101, False),
        (SELL, 101, True),
        (SELL, 100, True),
        (SELL, 99, False),
    ],
)
def test_stop_rejected_when_condition_already_holds(book, side, stop, rejected):
    _trade_at(book, 100)
    o, ev = book.stop_market(side, stop, 1)
    if rejected:
        assert [norm(e)[0::3] for e in ev] == [("rejected", "stop_would_trigger_immediately")]
        assert o.status == REJECTED and book.get(o.id) is None
    else:
        assert o.status == UNTRIGGERED and kinds(ev) == ["accepted"]


def test_buy_stop_limit_triggers_and_rests(book):
    _trade_at(book, 100)
    stop, _ = book.stop_limit(BUY, 105, 106, 3, owner=1)
    book.sell(105, 1, owner=2)
    book.sell(106, 1, owner=2)
    ask107, _ = book.sell(107, 1, owner=2)
    book.take_touched()
    t, ev = book.buy(105, 1, owner=3)
    # The trade at 105 triggers the stop: it buys 106 and rests 2 at 106.
    assert [norm(e)[0] for e in ev] == ["trade", "triggered", "trade", "accepted"]
    trig = fields(ev[1])
    assert trig.order is stop and stop.seq == trig.seq
    assert fields(ev[2]).taker is stop and fields(ev[2]).price == 106
    assert stop.status == PARTIALLY_FILLED and stop.remaining == 2
    assert book.depth(5) == ([(106, 2)], [(107, 1)])
    assert book.last_price == 106 and ask107.status == OPEN


def test_sell_stop_market_triggers(book):
    _trade_at(book, 100)
    stop, _ = book.stop_market(SELL, 95, 5, owner=1)
    book.buy(95, 2, owner=2)
    book.buy(94, 1, owner=2)
    book.sell(95, 1, owner=3)  # trade at 95 triggers
    assert stop.status == EXPIRED and stop.reason == "ioc_remainder"
    assert stop.filled == 2 and book.last_price == 94 and book.best_bid() is None


def test_triggered_stop_gets_new_priority(book):
    _trade_at(book, 100)
    stop, ev = book.stop_limit(SELL, 99, 102, 1, owner=1)
    placed_seq = stop.seq
    book.sell(102, 1, owner=5)
    book.buy(99, 1, owner=2)
    book.sell(99, 1, owner=3)  # trade at 99 triggers the sell stop; it rests at 102
    assert stop.status == OPEN and stop.seq > placed_seq
    taker, ev = book.buy(102, 2, owner=4)
    # The earlier sell at 102 keeps priority over the triggered stop.
    assert [e[2].owner for e in ev if e[0] == "trade"] == [5, 1]


def test_buy_stops_trigger_in_ascending_stop_order_ties_by_seq(book):
    _trade_at(book, 100)
    s_hi, _ = book.stop_limit(BUY, 103, 200, 1, owner=1)
    s_lo, _ = book.stop_limit(BUY, 101, 200, 1, owner=2)
    s_mid_a, _ = book.stop_limit(BUY, 102, 200, 1, owner=3)
    s_mid_b, _ = book.stop_limit(BUY, 102, 200, 1, owner=4)
    for p in range(103, 113):
        book.sell(p, 1, owner=50)
    book.sell(103, 1, owner=51)
    book.buy(103, 1, owner=52)  # trade at 103
    order = [e[2].id for e in book.events if e[0] == "triggered"]
    assert order == [s_lo.id, s_mid_a.id, s_mid_b.id, s_hi.id]
    assert all(o.status == FILLED for o in (s_hi, s_lo, s_mid_a, s_mid_b))


def test_sell_stops_trigger_in_descending_stop_order(book):
    _trade_at(book, 100)
    s_lo, _ = book.stop_market(SELL, 95, 1, owner=1)
    s_hi, _ = book.stop_market(SELL, 99, 1, owner=2)
    s_mid, _ = book.stop_market(SELL, 97, 1, owner=3)
    for p in range(80, 95):
        book.buy(p, 1, owner=50)
    book.buy(95, 1, owner=51)
    book.sell(95, 1, owner=52)
    order = [e[2].id for e in book.events if e[0] == "triggered"]
    assert order == [s_hi.id, s_mid.id, s_lo.id]


def test_stop_chain_triggers_in_rounds(book):
    _trade_at(book, 100)
    first, _ = book.stop_market(BUY, 101, 1, owner=1)
    second, _ = book.stop_market(BUY, 103, 1, owner=2)
    third, _ = book.stop_market(BUY, 110, 1, owner=3)
    book.sell(101, 1, owner=9)
    book.sell(103, 1, owner=9)
    book.sell(104, 1, owner=9)
    t, ev = book.buy(101, 1, owner=4)
    # Trade at 101 triggers `first`, which buys at 103 and so triggers `second`, which
    # buys at 104: not enough for `third`.
    assert kinds(ev) == ["trade", "triggered", "trade", "triggered", "trade"]
    assert [e[2] for e in ev if e[0] == "triggered"] == [first, second]
    assert third.status == UNTRIGGERED and book.last_price == 104


def test_stop_limit_fok_after_trigger(book):
    _trade_at(book, 100)
    stop, _ = book.stop_limit(BUY, 101, 101, 5, owner=1, tif=FOK)
    book.sell(101, 2, owner=2)
    book.buy(101, 1, owner=3)
    assert stop.status == EXPIRED and stop.reason == "fok_not_filled"
    assert book.depth(5)[1] == [(101, 1)]


def test_cancel_untriggered_stop(book):
    _trade_at(book, 100)
    stop, _ = book.stop_limit(BUY, 105, 106, 1)
    ev = book.cancel(stop.id)
    assert [norm(e)[0] for e in ev] == ["cancelled"]
    assert stop.status == CANCELLED and stop.reason == "cancelled_by_user"
    book.sell(105, 1, owner=2)
    book.buy(105, 1, owner=3)
    assert stop.status == CANCELLED and book.cancel(stop.id) == []


def test_first_trade_ever_triggers_both_sides_buys_first(book):
    buy_stop, _ = book.stop_market(BUY, 100, 1, owner=1)
    sell_stop, _ = book.stop_market(SELL, 105, 1, owner=2)
    book.sell(102, 1, owner=3)
    book.buy(102, 1, owner=4)  # first trade ever, at 102: both conditions hold
    order = [e[2] for e in book.events if e[0] == "triggered"]
    assert order == [buy_stop, sell_stop]
    assert buy_stop.reason == sell_stop.reason == "ioc_remainder"


def test_stop_market_buy_by_quote(book):
    _trade_at(book, 100)
    stop, _ = book.stop_market(BUY, 101, None, quote_limit=250, owner=1)
    book.sell(101, 5, owner=2)
    book.buy(101, 1, owner=3)
    assert stop.status == FILLED and stop.filled == 2 and stop.filled_quote == 202


def test_stop_market_buy_with_hold(book):
    _trade_at(book, 100)
    stop, _ = book.stop_market(BUY, 101, 3, quote_limit=210, owner=1)
    book.sell(101, 5, owner=2)
    book.buy(101, 1, owner=3)
    assert stop.reason == "funds_exhausted" and stop.filled == 2


def test_stop_self_trade_prevention_applies(book):
    _trade_at(book, 100)
    stop, _ = book.stop_market(BUY, 101, 2, owner=1)
    own, _ = book.sell(101, 5, owner=1)
    book.sell(101, 1, owner=2)
    book.buy(101, 1, owner=1)  # expired by STP itself: no trade, no trigger
    assert stop.status == UNTRIGGERED
    book.buy(101, 1, owner=3)  # trades with `own` at 101: the stop triggers, meets `own`
    assert stop.status == EXPIRED and stop.reason == "self_trade_prevented"
    assert own.status == PARTIALLY_FILLED


def test_invalid_stop_orders():
    book = OrderBook()
    with pytest.raises(ValueError):
        book.place(Order(1, 1, BUY, STOP_LIMIT, price=5, quantity=1))
    with pytest.raises(ValueError):
        book.place(Order(2, 1, BUY, STOP_LIMIT, price=5, quantity=1, stop_price=0))
    with pytest.raises(ValueError):
        book.place(Order(3, 1, BUY, STOP_LIMIT, price=5, quantity=1, stop_price=4, post_only=True))
    book.check()
