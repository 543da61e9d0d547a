"""The engine service in-process: stream in, batch commit, replies, snapshot, reconcile, rebuild."""

from decimal import Decimal

import pytest

from matching import client, feed
from matching.engine import Engine
from matching.selectors import book_snapshot
from orders.models import Order, Trade
from settlement.models import HoldRelease, Settlement

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_redis", "no_dispatch")]


@pytest.fixture
def btc(market):
    return market("BTC-USDT", tick_size="0.01", lot_size="0.001", min_notional="0", maker_fee="0.001", taker_fee="0.002")


def _engine(*symbols):
    engine = Engine(list(symbols) or None)
    engine.step()  # takes ownership, publishes the first snapshot and heartbeat
    engine._next_reconcile = float("inf")  # tests trigger reconciliation explicitly
    return engine


def _send(engine, kind, order, wait_reply=True):
    """Ring like the API does, run one engine step, return the reply."""
    reply_to = feed.reply_key(f"test-{order.pk}-{kind}")
    engine.redis.xadd(feed.stream_key(order.market.symbol), feed.encode_command(kind, order.pk, reply_to))
    engine.step()
    raw = engine.redis.lpop(reply_to)
    return feed.loads(raw) if raw else None


def test_heartbeat_marks_the_symbol_live(btc):
    assert not client.engine_is_live("BTC-USDT")
    _engine("BTC-USDT")
    assert client.engine_is_live("BTC-USDT")


def test_place_match_and_reply_equal_the_committed_rows(btc, make_user, pending_order):
    engine = _engine("BTC-USDT")
    seller, buyer = make_user(), make_user()
    sell = pending_order(seller, btc, "sell", "100.00", "2.000")
    reply = _send(engine, feed.PLACE, sell)
    assert reply["order"]["status"] == "open" and reply["trades"] == []

    buy = pending_order(buyer, btc, "buy", "101.00", "1.500")
    reply = _send(engine, feed.PLACE, buy)
    sell.refresh_from_db()
    buy.refresh_from_db()
    assert buy.status == reply["order"]["status"] == "filled"
    assert sell.status == "partially_filled"
    assert Decimal(reply["order"]["filled_quantity"]) == buy.filled_quantity == Decimal("1.5")
    assert Decimal(reply["order"]["fee_total"]) == buy.fee_total == Decimal("0.003")  # taker 0.2% of 1.5 BTC
    trade = Trade.objects.get()
    assert [t["id"] for t in reply["trades"]] == [trade.pk]
    assert trade.price == Decimal("100") and trade.quantity == Decimal("1.5")
    assert trade.quote_quantity == trade.price * trade.quantity
    assert trade.seller_fee == Decimal("0.15")  # maker 0.1% of 150 USDT
    assert trade.buyer_id == buyer.pk and trade.seller_id == seller.pk
    assert Settlement.objects.filter(trade=trade, status="pending").exists()
    # Price improvement: held 151.5, spent 150 -> release exactly 1.5.
    assert HoldRelease.objects.get(order=buy).amount == Decimal("1.5")
    btc.refresh_from_db()
    assert btc.last_price == Decimal("100") and btc.last_sequence == trade.sequence


def test_snapshot_matches_open_orders(btc, make_user, pending_order):
    engine = _engine("BTC-USDT")
    user = make_user()
    for price, qty in [("99.00", "1.000"), ("99.00", "0.500"), ("98.50", "2.000")]:
        _send(engine, feed.PLACE, pending_order(user, btc, "buy", price, qty))
    _send(engine, feed.PLACE, pending_order(make_user(), btc, "sell", "105.00", "1.000"))
    snapshot = book_snapshot("BTC-USDT")
    assert snapshot["bids"] == [[9900, 1500], [9850, 2000]]
    assert snapshot["asks"] == [[10500, 1000]]
    open_rows = Order.objects.filter(status__in=Order.RESTING_STATUSES).count()
    assert open_rows == 4
    assert snapshot["sequence"] == Order.objects.order_by("-sequence").first().sequence


def test_duplicate_place_is_not_applied_twice(btc, make_user, pending_order):
    engine = _engine("BTC-USDT")
    sell = pending_order(make_user(), btc, "sell", "100.00", "1.000")
    _send(engine, feed.PLACE, sell)
    buy = pending_order(make_user(), btc, "buy", "100.00", "1.000")
    _send(engine, feed.PLACE, buy)
    reply = _send(engine, feed.PLACE, buy)  # a redelivery
    assert reply["order"] == {"id": buy.pk, "unchanged": True}
    assert Trade.objects.count() == 1


def test_cancel_resting_order_releases_its_whole_hold(btc, make_user, pending_order):
    engine = _engine("BTC-USDT")
    buy = pending_order(make_user(), btc, "buy", "100.00", "1.000")
    _send(engine, feed.PLACE, buy)
    Order.objects.filter(pk=buy.pk).update(cancel_requested_at="2026-01-01T00:00:00Z")
    reply = _send(engine, feed.CANCEL, buy)
    assert reply["order"]["status"] == "cancelled"
    assert HoldRelease.objects.get(order=buy).amount == Decimal("100")
    assert book_snapshot("BTC-USDT")["bids"] == []


def test_cancel_of_a_pending_order_is_applied_first(btc, make_user, pending_order):
    engine = _engine("BTC-USDT")
    sell = pending_order(make_user(), btc, "sell", "100.00", "1.000")
    _send(engine, feed.PLACE, sell)
    buy = pending_order(make_user(), btc, "buy", "100.00", "1.000", cancel_requested_at="2026-01-01T00:00:00Z")
    reply = _send(engine, feed.CANCEL, buy)
    assert reply["order"]["status"] == "cancelled"
    assert Trade.objects.count() == 0
    assert _send(engine, feed.PLACE, buy)["order"]["unchanged"] is True


def test_reconcile_applies_what_redis_lost(btc, make_user, pending_order, clean_redis):
    engine = _engine("BTC-USDT")
    sell = pending_order(make_user(), btc, "sell", "100.00", "1.000")
    buy = pending_order(make_user(), btc, "buy", "100.00", "1.000")
    Order.objects.filter(pk__in=[sell.pk, buy.pk]).update(created_at="2026-01-01T00:00:00Z")
    clean_redis.flushdb()  # the doorbells never rang
    engine._next_reconcile = 0
    engine.step()
    assert Trade.objects.count() == 1
    assert set(Order.objects.values_list("status", flat=True)) == {"filled"}


def test_malformed_command_is_acked_and_dropped(btc, clean_redis):
    engine = _engine("BTC-USDT")
    stream = feed.stream_key("BTC-USDT")
    clean_redis.xadd(stream, {"k": "explode", "o": "x"})
    engine.step()
    assert clean_redis.xlen(stream) == 0
    assert clean_redis.xpending(stream, feed.GROUP)["pending"] == 0


def test_rebuild_keeps_time_priority_and_last_price(btc, make_user, pending_order):
    engine = _engine("BTC-USDT")
    first, second, taker = make_user(), make_user(), make_user()
    a = pending_order(first, btc, "sell", "100.00", "1.000")
    b = pending_order(second, btc, "sell", "100.00", "1.000")
    _send(engine, feed.PLACE, a)
    _send(engine, feed.PLACE, b)
    engine._drop_all_books()  # as if the process died
    engine = _engine("BTC-USDT")
    assert len(engine.books["BTC-USDT"].book) == 2
    _send(engine, feed.PLACE, pending_order(taker, btc, "buy", "100.00", "1.000"))
    assert Trade.objects.get().maker_order_id == a.pk  # the first in time still goes first
    assert engine.books["BTC-USDT"].book.last_price == 10000


def test_new_market_is_served_without_restart(market, make_user, pending_order):
    engine = _engine()
    assert engine.books == {}
    eth = market("ETH-USDT", tick_size="0.01", lot_size="0.001", min_notional="0")
    engine._next_ownership = 0
    engine.step()
    assert "ETH-USDT" in engine.books
    reply = _send(engine, feed.PLACE, pending_order(make_user(), eth, "buy", "10.00", "1.000"))
    assert reply["order"]["status"] == "open"


def test_stale_owner_is_fenced_out(btc, make_user, pending_order):
    engine = _engine("BTC-USDT")
    type(btc).objects.filter(pk=btc.pk).update(last_sequence=999)  # another owner committed meanwhile
    _send(engine, feed.PLACE, pending_order(make_user(), btc, "buy", "10.00", "1.000"), wait_reply=False)
    assert engine.books == {}  # dropped its books instead of writing over the other's
    assert Order.objects.get().status == "pending"


def test_an_order_the_core_refuses_is_rejected_not_fatal(btc, make_user, pending_order):
    engine = _engine("BTC-USDT")
    bad = pending_order(make_user(), btc, "buy", "100.00", "1.000", type="limit", post_only=True, tif="ioc")
    reply = _send(engine, feed.PLACE, bad)
    assert reply["order"]["status"] == "rejected" and reply["order"]["reject_reason"] == "invalid_order"
    assert HoldRelease.objects.get(order=bad).amount == Decimal("100")
    good = pending_order(make_user(), btc, "sell", "100.00", "1.000")
    assert _send(engine, feed.PLACE, good)["order"]["status"] == "open"


def test_a_deep_stream_commits_in_the_background_and_answers_in_order(btc, make_user, pending_order, monkeypatch):
    """Full batches commit on the committer thread while the next one is matched.

    The first batch's commit is held back, so the second batch reads its rows while
    they still say `pending`: the cancel must still cancel the resting order (not
    place it again), and nothing is answered before its batch is committed.
    """
    import threading

    from matching import services

    engine = _engine("BTC-USDT")
    engine.batch_size = 2
    seller, buyer = make_user(), make_user()
    resting = pending_order(seller, btc, "sell", "100.00", "1.000")
    taker = pending_order(buyer, btc, "buy", "100.00", "0.400")
    later = pending_order(buyer, btc, "buy", "99.00", "1.000")

    release = threading.Event()
    real_write = services.batch_write

    def slow_write(commit):
        release.wait(5)
        real_write(commit)

    monkeypatch.setattr(services, "batch_write", slow_write)
    stream = feed.stream_key("BTC-USDT")

    def ring(kind, order):
        engine.redis.xadd(stream, feed.encode_command(kind, order.pk, feed.reply_key(f"deep-{order.pk}-{kind}")))

    def reply(kind, order):
        raw = engine.redis.lpop(feed.reply_key(f"deep-{order.pk}-{kind}"))
        return feed.loads(raw) if raw else None

    ring(feed.PLACE, resting)
    ring(feed.PLACE, taker)
    try:
        _deep_stream(engine, btc, ring, reply, release, resting, taker, later)
    finally:
        release.set()
        engine.close()


def _deep_stream(engine, btc, ring, reply, release, resting, taker, later):
    import threading

    engine.step()  # a full batch: its commit waits on the committer thread
    assert engine.inflight is not None
    assert reply(feed.PLACE, resting) is None  # not committed, not answered
    assert Order.objects.get(pk=resting.pk).status == "pending"

    Order.objects.filter(pk=resting.pk).update(cancel_requested_at="2026-01-01T00:00:00Z")
    ring(feed.CANCEL, resting)
    ring(feed.PLACE, later)
    threading.Timer(0.3, release.set).start()  # lands while the second batch is matched
    engine.step()  # matches batch 2 on stale rows, waits for batch 1, then answers it
    assert reply(feed.PLACE, resting)["order"]["status"] == "partially_filled"
    assert reply(feed.PLACE, taker)["order"]["status"] == "filled"
    assert reply(feed.CANCEL, resting) is None  # batch 2 is committing now

    engine.step()  # the stream is drained: batch 2 is answered
    cancelled = reply(feed.CANCEL, resting)
    assert cancelled["order"]["status"] == "cancelled" and cancelled["order"]["filled_quantity"] == "0.400"
    assert reply(feed.PLACE, later)["order"]["status"] == "open"
    assert engine.inflight is None
    assert Trade.objects.count() == 1
    assert Order.objects.get(pk=resting.pk).status == "cancelled"
    assert HoldRelease.objects.get(order=resting).amount == Decimal("0.6")
    snapshot = book_snapshot("BTC-USDT")
    assert snapshot["asks"] == [] and snapshot["bids"] == [[9900, 1000]]
    btc.refresh_from_db()
    assert btc.last_sequence == snapshot["sequence"] == engine.books["BTC-USDT"].committed_seq
