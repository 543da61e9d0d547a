"""FOK, market orders (by quantity, by quote, with a hold), and post-only."""

import pytest

from matching.core import (
    BUY,
    EXPIRED,
    FILLED,
    FOK,
    GTC,
    IOC,
    MARKET,
    OPEN,
    REJECTED,
    SELL,
    Order,
    OrderBook,
)

from .conftest import kinds, norm, trades


def _snapshot(book):
    return (
        book.depth(100),
        [(o.id, o.remaining, o.status) for o in book.orders()],
        book.last_price,
    )


def test_fok_fills_across_levels(book):
    book.sell(100, 2, owner=2)
    book.sell(101, 2, owner=3)
    taker, ev = book.buy(101, 4, tif=FOK)
    assert taker.status == FILLED and kinds(ev) == ["trade", "trade"]


def test_fok_not_enough_leaves_book_untouched(book):
    book.sell(100, 2, owner=2)
    book.sell(101, 2, owner=3)
    book.sell(102, 9, owner=3)
    before = _snapshot(book)
    book.take_touched()
    taker, ev = book.buy(101, 5, tif=FOK)
    assert [norm(e) for e in ev] == [("expired", 4, taker.id, "fok_not_filled")]
    assert taker.filled == 0 and taker.remaining == 5
    assert _snapshot(book) == before and book.take_touched() == set()


def test_fok_empty_book(book):
    taker, ev = book.sell(100, 1, tif=FOK)
    assert taker.reason == "fok_not_filled" and kinds(ev) == ["expired"]


def test_fok_exact_quantity(book):
    book.buy(100, 3, owner=2)
    taker, _ = book.sell(100, 3, tif=FOK)
    assert taker.status == FILLED and book.best_bid() is None


def test_fok_with_quote_limit(book):
    book.sell(100, 2, owner=2)
    book.sell(110, 2, owner=2)
    before = _snapshot(book)
    t1, ev = book.buy(110, 4, tif=FOK, quote_limit=419)
    assert t1.reason == "fok_not_filled" and _snapshot(book) == before
    t2, ev = book.buy(110, 4, tif=FOK, quote_limit=420)
    assert t2.status == FILLED and t2.filled_quote == 420


def test_market_by_quantity(book):
    book.sell(100, 1, owner=2)
    book.sell(105, 5, owner=2)
    taker, ev = book.market(BUY, 3)
    assert trades(ev) == [(1, 3, 100, 1), (2, 3, 105, 2)]
    assert taker.status == FILLED and book.depth(5)[1] == [(105, 3)]


def test_market_remainder_expires(book):
    book.buy(100, 1, owner=2)
    taker, ev = book.market(SELL, 3)
    assert kinds(ev) == ["trade", "expired"]
    assert taker.status == EXPIRED and taker.reason == "ioc_remainder"
    assert (taker.filled, taker.remaining) == (1, 2)


@pytest.mark.parametrize("side", [BUY, SELL])
def test_market_into_empty_book_expires(book, side):
    taker, ev = book.market(side, 3)
    assert [norm(e) for e in ev] == [("expired", 1, taker.id, "ioc_remainder")]


def test_market_gtc_behaves_as_ioc_and_fok_honoured(book):
    book.sell(100, 1, owner=2)
    t1, _ = book.market(BUY, 2, tif=GTC)
    assert t1.status == EXPIRED and t1.reason == "ioc_remainder" and book.best_bid() is None
    book.sell(100, 1, owner=2)
    t2, ev = book.market(BUY, 2, tif=FOK)
    assert t2.reason == "fok_not_filled" and kinds(ev) == ["expired"]
    assert book.depth(5)[1] == [(100, 1)]


def test_market_buy_by_quote_stops_when_next_lot_unaffordable(book):
    book.sell(100, 2, owner=2)
    book.sell(120, 5, owner=2)
    taker, ev = book.market(BUY, quote_limit=500)
    # 2 lots at 100 (200 spent), then 300 // 120 = 2 lots (240), 60 left < 120.
    assert trades(ev) == [(1, 3, 100, 2), (2, 3, 120, 2)]
    assert taker.status == FILLED and taker.quantity is None
    assert (taker.filled, taker.filled_quote) == (4, 440)
    assert kinds(ev) == ["trade", "trade"]


def test_market_buy_by_quote_stops_at_next_level(book):
    book.sell(100, 3, owner=2)
    book.sell(200, 3, owner=2)
    taker, ev = book.market(BUY, quote_limit=499)
    # 3 lots at 100, 199 left is less than one lot at 200: filled.
    assert taker.status == FILLED and taker.filled == 3 and taker.filled_quote == 300


def test_market_buy_by_quote_never_buys_fractions(book):
    book.sell(7, 100, owner=2)
    taker, ev = book.market(BUY, quote_limit=50)
    assert taker.filled == 7 and taker.filled_quote == 49 and taker.status == FILLED


def test_market_buy_by_quote_book_runs_out(book):
    book.sell(100, 2, owner=2)
    taker, ev = book.market(BUY, quote_limit=350)
    # 150 left >= one lot at the last fill price (100): the rest is unfillable.
    assert kinds(ev) == ["trade", "expired"]
    assert taker.status == EXPIRED and taker.reason == "ioc_remainder" and taker.filled == 2


def test_market_buy_by_quote_book_runs_out_with_dust(book):
    book.sell(100, 2, owner=2)
    taker, ev = book.market(BUY, quote_limit=250)
    assert taker.status == FILLED and kinds(ev) == ["trade"]


def test_market_buy_by_quote_empty_book_and_unaffordable(book):
    t1, ev = book.market(BUY, quote_limit=1000)
    assert t1.status == EXPIRED and t1.reason == "ioc_remainder"
    book.sell(5000, 1, owner=2)
    t2, ev = book.market(BUY, quote_limit=1000)
    # Not even one lot is affordable: nothing filled, so not "filled".
    assert t2.status == EXPIRED and t2.reason == "ioc_remainder" and kinds(ev) == ["expired"]


def test_market_buy_by_quote_fok(book):
    book.sell(100, 2, owner=2)
    t1, ev = book.market(BUY, quote_limit=350, tif=FOK)
    assert t1.reason == "fok_not_filled" and book.depth(5)[1] == [(100, 2)]
    t2, ev = book.market(BUY, quote_limit=250, tif=FOK)
    assert t2.status == FILLED and t2.filled == 2


def test_market_buy_by_quote_stp(book):
    book.sell(100, 1, owner=2)
    book.sell(100, 1, owner=1)
    taker, ev = book.market(BUY, quote_limit=1000, owner=1)
    assert kinds(ev) == ["trade", "expired"] and taker.reason == "self_trade_prevented"


def test_market_buy_with_hold_funds_exhausted(book):
    book.sell(100, 2, owner=2)
    book.sell(130, 5, owner=2)
    taker, ev = book.market(BUY, 5, quote_limit=480)
    # 2 @ 100 = 200, then 280 // 130 = 2 lots = 260; 20 left < 130 with 1 lot still wanted.
    assert trades(ev) == [(1, 3, 100, 2), (2, 3, 130, 2)]
    assert kinds(ev)[-1] == "expired" and taker.reason == "funds_exhausted"
    assert taker.filled_quote == 460 <= taker.quote_limit
    assert (taker.filled, taker.remaining) == (4, 1)


def test_market_buy_with_hold_enough(book):
    book.sell(100, 2, owner=2)
    taker, ev = book.market(BUY, 2, quote_limit=200)
    assert taker.status == FILLED and taker.filled_quote == 200


def test_market_buy_with_hold_book_runs_out(book):
    book.sell(100, 2, owner=2)
    taker, ev = book.market(BUY, 3, quote_limit=10_000)
    assert taker.reason == "ioc_remainder"


def test_limit_buy_quote_limit_below_price_times_quantity(book):
    book.sell(100, 1, owner=2)
    taker, ev = book.buy(100, 3, quote_limit=250)
    # Takes 1 lot (100 spent); resting 2 more at 100 would need 200 > 150 left.
    assert kinds(ev) == ["trade", "expired"] and taker.reason == "funds_exhausted"
    t2, ev = book.buy(90, 3, quote_limit=269)
    assert kinds(ev) == ["expired"] and t2.reason == "funds_exhausted"


def test_sell_ignores_quote_limit(book):
    book.buy(100, 5, owner=2)
    taker, _ = book.market(SELL, 5, quote_limit=1)
    assert taker.status == FILLED


def test_invalid_market_orders():
    book = OrderBook()
    with pytest.raises(ValueError):
        book.place(Order(1, 1, SELL, MARKET))  # sell without quantity
    with pytest.raises(ValueError):
        book.place(Order(2, 1, BUY, MARKET))  # buy without quantity or quote_limit
    with pytest.raises(TypeError):
        book.place(Order(3, 1, BUY, MARKET, quote_limit=10.0))
    with pytest.raises(ValueError):
        book.place(Order(4, 1, BUY, MARKET, quantity=1, post_only=True))
    assert book.seq == 0


def test_post_only_rests_when_not_crossing(book):
    book.sell(101, 1, owner=2)
    o, ev = book.buy(100, 1, post_only=True)
    assert o.status == OPEN and kinds(ev) == ["accepted"]


@pytest.mark.parametrize("price", [101, 105])
def test_post_only_rejected_when_crossing(book, price):
    book.sell(101, 1, owner=2)
    o, ev = book.buy(price, 1, post_only=True)
    assert [norm(e) for e in ev] == [("rejected", 2, o.id, "post_only_would_take")]
    assert o.status == REJECTED and book.best_bid() is None and o.filled == 0


def test_post_only_rejected_against_own_order(book):
    book.buy(100, 1, owner=1)
    o, ev = book.sell(100, 1, owner=1, post_only=True)
    assert o.status == REJECTED and o.reason == "post_only_would_take"


def test_post_only_sell_rests_on_empty_book(book):
    o, ev = book.sell(100, 1, post_only=True)
    assert o.status == OPEN


def test_ioc_limit_quote_limit(book):
    book.sell(100, 5, owner=2)
    taker, ev = book.buy(100, 5, tif=IOC, quote_limit=300)
    assert taker.filled == 3 and taker.reason == "funds_exhausted"


def test_market_buy_by_quote_exactly_one_lot_left_when_book_runs_out(book):
    book.sell(100, 2, owner=2)
    taker, ev = book.market(BUY, quote_limit=300)
    # 100 left is exactly one lot's worth at the last fill price: not a complete fill.
    assert taker.status == EXPIRED and taker.reason == "ioc_remainder"


def test_market_buy_by_quote_fok_boundaries(book):
    book.sell(100, 2, owner=2)
    t1, ev = book.market(BUY, quote_limit=300, tif=FOK)
    assert t1.reason == "fok_not_filled" and kinds(ev) == ["expired"]
    t2, ev = book.market(BUY, quote_limit=299, tif=FOK)
    assert t2.status == FILLED and t2.filled == 2


def test_limit_buy_rests_only_if_its_hold_covers_it(book):
    t1, ev = book.buy(100, 3, quote_limit=299)
    assert t1.status == EXPIRED and t1.reason == "funds_exhausted" and kinds(ev) == ["expired"]
    t2, ev = book.buy(100, 3, quote_limit=300)
    assert t2.status == OPEN


def test_zero_hold_is_valid_and_cannot_trade(book):
    t1, ev = book.market(BUY, 2, quote_limit=0)
    assert t1.status == EXPIRED and t1.reason == "ioc_remainder"  # empty book
    book.sell(100, 5, owner=2)
    t2, ev = book.market(BUY, 2, quote_limit=0)
    assert t2.reason == "funds_exhausted" and t2.filled == 0
    t3, ev = book.market(BUY, quote_limit=0)
    assert t3.status == EXPIRED and t3.reason == "ioc_remainder" and t3.filled == 0
    with pytest.raises(ValueError):
        book.book.place(Order(99, 1, BUY, MARKET, quantity=1, quote_limit=-1))
