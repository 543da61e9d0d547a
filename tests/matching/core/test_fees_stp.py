"""Exact fees, and self-trade prevention in each mode."""

import pytest

from matching.core import (
    BUY,
    EXPIRE_BOTH,
    EXPIRE_MAKER,
    EXPIRE_TAKER,
    EXPIRED,
    FILLED,
    FOK,
    IOC,
    OPEN,
    PARTIALLY_FILLED,
    SELL,
    TRADE,
)

from .conftest import fields, kinds, norm, trades

# 0.1% maker, 0.25% taker.
FEES = {"maker_fee": 10, "taker_fee": 25, "fee_scale": 10_000}


def test_buy_taker_fees_exact(make_book):
    book = make_book(**FEES)
    maker, _ = book.sell(30_001, 7, owner=1)
    taker, ev = book.buy(30_001, 7, owner=2)
    (tr,) = map(fields, ev)
    assert tr.quote == 30_001 * 7
    # The buyer (taker) receives 7 lots of base: fee in base fee units (lot / 10_000).
    assert tr.taker_fee == 7 * 25 and taker.fee == 7 * 25
    # The seller (maker) receives quote: fee in quote fee units (tick x lot / 10_000).
    assert tr.maker_fee == 30_001 * 7 * 10 and maker.fee == 30_001 * 7 * 10
    # Gross = net + fee, exactly, in fee units.
    buyer_gross = 7 * FEES["fee_scale"]
    assert buyer_gross - taker.fee + taker.fee == buyer_gross
    assert (buyer_gross - taker.fee) * 10_000 == 7 * (10_000 - 25) * 10_000
    seller_gross = tr.quote * FEES["fee_scale"]
    assert seller_gross - maker.fee == tr.quote * (10_000 - 10)


def test_sell_taker_fees_exact_and_accumulate(make_book):
    book = make_book(**FEES)
    b1, _ = book.buy(100, 2, owner=1)
    b2, _ = book.buy(99, 3, owner=2)
    taker, ev = book.sell(99, 5, owner=3)
    t1, t2 = map(fields, ev)
    assert (t1.maker_fee, t1.taker_fee) == (2 * 10, 200 * 25)
    assert (t2.maker_fee, t2.taker_fee) == (3 * 10, 297 * 25)
    assert taker.fee == (200 + 297) * 25
    assert (b1.fee, b2.fee) == (20, 30)
    assert taker.filled_quote == 497


def test_zero_fees(book):
    book.sell(100, 1)
    _, ev = book.buy(100, 1, owner=2)
    (tr,) = map(fields, ev)
    assert tr.maker_fee == tr.taker_fee == 0


def test_default_expire_taker(book):
    other, _ = book.sell(100, 1, owner=2)
    own, _ = book.sell(100, 5, owner=1)
    behind, _ = book.sell(100, 5, owner=3)
    taker, ev = book.buy(101, 4, owner=1)
    assert [norm(e)[0] for e in ev] == ["trade", "expired"]
    assert trades(ev) == [(other.id, taker.id, 100, 1)]
    assert taker.status == EXPIRED and taker.reason == "self_trade_prevented"
    assert (taker.filled, taker.remaining) == (1, 3)
    assert own.status == OPEN and own.remaining == 5 and behind.remaining == 5
    assert book.depth(5) == ([], [(100, 10)])


def test_expire_taker_gtc_does_not_rest(book):
    book.sell(100, 1, owner=1)
    taker, ev = book.buy(100, 1, owner=1)
    assert kinds(ev) == ["expired"] and taker.filled == 0
    assert book.best_bid() is None


def test_expire_maker(make_book):
    book = make_book(stp=EXPIRE_MAKER)
    own1, _ = book.sell(100, 2, owner=1)
    other, _ = book.sell(100, 3, owner=2)
    own2, _ = book.sell(101, 1, owner=1)
    far, _ = book.sell(102, 5, owner=3)
    taker, ev = book.buy(102, 4, owner=1)
    assert [norm(e) for e in ev] == [
        ("expired", 5, own1.id, "self_trade_prevented"),
        ("trade", 6, other.id, taker.id, 100, 3, 300, 0, 0),
        ("expired", 7, own2.id, "self_trade_prevented"),
        ("trade", 8, far.id, taker.id, 102, 1, 102, 0, 0),
    ]
    assert own1.status == own2.status == EXPIRED
    assert taker.status == FILLED
    assert book.get(own1.id) is None and book.depth(5) == ([], [(102, 4)])


def test_expire_maker_then_rest(make_book):
    book = make_book(stp=EXPIRE_MAKER)
    own, _ = book.sell(100, 2, owner=1)
    taker, ev = book.buy(100, 3, owner=1)
    assert kinds(ev) == ["expired", "accepted"]
    assert own.status == EXPIRED and taker.status == OPEN
    assert book.depth(5) == ([(100, 3)], [])


def test_expire_both(make_book):
    book = make_book(stp=EXPIRE_BOTH)
    other, _ = book.sell(100, 1, owner=2)
    own, _ = book.sell(100, 2, owner=1)
    behind, _ = book.sell(100, 2, owner=3)
    taker, ev = book.buy(100, 5, owner=1)
    assert [norm(e) for e in ev] == [
        ("trade", 4, other.id, taker.id, 100, 1, 100, 0, 0),
        ("expired", 5, own.id, "self_trade_prevented"),
        ("expired", 6, taker.id, "self_trade_prevented"),
    ]
    assert behind.remaining == 2 and book.depth(5) == ([], [(100, 2)])
    assert taker.status == EXPIRED and taker.filled == 1


@pytest.mark.parametrize("stp", [EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH])
def test_own_order_beyond_limit_is_not_touched(make_book, stp):
    book = make_book(stp=stp)
    book.sell(100, 1, owner=2)
    own, _ = book.sell(101, 1, owner=1)
    taker, ev = book.buy(100, 2, owner=1)
    assert kinds(ev) == ["trade", "accepted"]
    assert own.status == OPEN and taker.status == PARTIALLY_FILLED


@pytest.mark.parametrize("stp", [EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH])
@pytest.mark.parametrize("taker_side", [BUY, SELL])
def test_no_self_trade_ever(make_book, stp, taker_side):
    book = make_book(stp=stp)
    maker_side = SELL if taker_side == BUY else BUY
    for i in range(12):
        book.limit(maker_side, 100, 1 + i % 2, owner=i % 3)
    for owner in range(3):
        book.limit(taker_side, 100, 4, owner=owner, tif=IOC)
    for tr in (fields(e) for e in book.events if e[0] is TRADE):
        assert tr.maker.owner != tr.taker.owner


@pytest.mark.parametrize(
    "stp, fillable", [(EXPIRE_TAKER, False), (EXPIRE_BOTH, False), (EXPIRE_MAKER, True)]
)
def test_fok_counts_only_liquidity_it_may_trade_with(make_book, stp, fillable):
    book = make_book(stp=stp)
    book.sell(100, 1, owner=2)
    own, _ = book.sell(100, 5, owner=1)
    book.sell(101, 2, owner=3)
    depth_before = book.depth(10)
    taker, ev = book.buy(101, 3, owner=1, tif=FOK)
    if fillable:
        assert taker.status == FILLED and own.status == EXPIRED
        assert kinds(ev) == ["trade", "expired", "trade"]
    else:
        assert [norm(e) for e in ev] == [("expired", 4, taker.id, "fok_not_filled")]
        assert own.status == OPEN and book.depth(10) == depth_before


def test_fok_under_expire_maker_failing_leaves_own_orders(make_book):
    book = make_book(stp=EXPIRE_MAKER)
    own, _ = book.sell(100, 5, owner=1)
    book.sell(100, 1, owner=2)
    taker, ev = book.buy(100, 3, owner=1, tif=FOK)
    assert kinds(ev) == ["expired"] and taker.reason == "fok_not_filled"
    assert own.status == OPEN and book.depth(5)[1] == [(100, 6)]
