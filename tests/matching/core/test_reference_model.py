"""The core against a deliberately naive reference model, plus the rebuild test.

``RefBook`` below shares no code with the core: resting and untriggered orders sit in
plain lists, the next maker is found by a linear scan, and FOK is decided by running
the order as IOC on a deep copy of the whole model and looking at the outcome. It
implements the rules of api.md ("Precise rules") and the core's documented choices
(stop rounds, buys first when both sides trigger on the first trade, a buy by quote
that buys nothing is expired). Every command goes through both; events, every
order's state and the whole book must agree after each one.
"""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from matching.core import (
    BUY,
    EXPIRE_BOTH,
    EXPIRE_MAKER,
    EXPIRE_TAKER,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    SELL,
    STOP_LIMIT,
    STOP_MARKET,
    TRADE,
    Order,
    OrderBook,
)

from .conftest import norm

FEES = [(0, 0, 1), (1, 2, 1000), (10, 25, 10_000)]
STPS = [EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH]
LOW, HIGH = 95, 105


# ----------------------------------------------------------------------------- model


class RefOrder:
    def __init__(self, oid, spec):
        self.id = oid
        self.owner = spec["owner"]
        self.side = spec["side"]
        self.kind = spec["kind"]
        self.tif = spec["tif"]
        self.price = spec["price"]
        self.stop = spec["stop_price"]
        self.qty = spec["quantity"]
        self.quote_limit = spec["quote_limit"]
        self.post_only = spec["post_only"]
        self.remaining = self.qty if self.qty is not None else 0
        self.filled = 0
        self.filled_quote = 0
        self.fee = 0
        self.seq = 0
        self.status = "pending"
        self.reason = None

    def state(self):
        return (
            self.status,
            self.reason,
            self.remaining,
            self.filled,
            self.filled_quote,
            self.fee,
            self.seq,
        )


class RefBook:
    def __init__(self, maker_num, taker_num, stp):
        self.maker_num = maker_num
        self.taker_num = taker_num
        self.stp = stp
        self.resting: list[RefOrder] = []
        self.stops: list[RefOrder] = []
        self.last = None
        self.seq = 0
        self.out: list[tuple] = []

    def _emit(self, *event) -> int:
        self.seq += 1
        self.out.append((event[0], self.seq, *event[1:]))
        return self.seq

    def _end(self, order, status, reason, kind):
        order.status = status
        order.reason = reason
        if kind == "cancelled":
            self._emit(kind, order.id)
        else:
            self._emit(kind, order.id, reason)

    # commands

    def place(self, oid, spec) -> list[tuple]:
        self.out = []
        order = RefOrder(oid, spec)
        order.seq = self.seq + 1
        if order.kind in (STOP_LIMIT, STOP_MARKET):
            holds = self.last is not None and (
                self.last >= order.stop if order.side == BUY else self.last <= order.stop
            )
            if holds:
                self._end(order, "rejected", "stop_would_trigger_immediately", "rejected")
            else:
                order.status = "untriggered"
                self.stops.append(order)
                self._emit("accepted", order.id)
            return order, self.out
        if order.post_only:
            opposite = [o.price for o in self.resting if o.side != order.side]
            if opposite and (
                min(opposite) <= order.price if order.side == BUY else max(opposite) >= order.price
            ):
                self._end(order, "rejected", "post_only_would_take", "rejected")
                return order, self.out
        before = self.last
        self._take(order)
        if self.last != before:
            self._stops()
        return order, self.out

    def cancel(self, oid) -> list[tuple]:
        self.out = []
        for pool in (self.resting, self.stops):
            for o in pool:
                if o.id == oid:
                    pool.remove(o)
                    self._end(o, "cancelled", "cancelled_by_user", "cancelled")
                    return self.out
        return self.out

    # matching

    def _best(self, side):
        makers = [o for o in self.resting if o.side != side]
        if not makers:
            return None
        if side == BUY:
            return min(makers, key=lambda o: (o.price, o.seq))
        return min(makers, key=lambda o: (-o.price, o.seq))

    def _take(self, t: RefOrder) -> None:
        is_limit = t.kind in (LIMIT, STOP_LIMIT)
        tif = t.tif if is_limit else (FOK if t.tif == FOK else IOC)
        if tif == FOK:
            trial = copy.deepcopy(self)
            twin = copy.deepcopy(t)
            twin.tif = IOC
            trial._match(twin, is_limit, IOC)
            if twin.status != "filled":
                self._end(t, "expired", "fok_not_filled", "expired")
                return
        self._match(t, is_limit, tif)

    def _match(self, t: RefOrder, is_limit: bool, tif: int) -> None:
        by_quote = t.qty is None
        budget = t.quote_limit if t.side == BUY else None
        spent = 0
        last_fill = None
        why = None
        while by_quote or t.remaining > 0:
            m = self._best(t.side)
            if m is None:
                why = "book"
                break
            if is_limit and (m.price > t.price if t.side == BUY else m.price < t.price):
                why = "price"
                break
            can = None
            if budget is not None:
                can = (budget - spent) // m.price
                if can == 0:
                    why = "funds"
                    break
            if m.owner == t.owner:
                if self.stp in (EXPIRE_MAKER, EXPIRE_BOTH):
                    self.resting.remove(m)
                    self._end(m, "expired", "self_trade_prevented", "expired")
                if self.stp in (EXPIRE_TAKER, EXPIRE_BOTH):
                    why = "stp"
                    break
                continue
            q = m.remaining
            if not by_quote:
                q = min(q, t.remaining)
            if can is not None:
                q = min(q, can)
            quote = q * m.price
            if t.side == BUY:
                maker_fee, taker_fee = quote * self.maker_num, q * self.taker_num
            else:
                maker_fee, taker_fee = q * self.maker_num, quote * self.taker_num
            for o, fee in ((m, maker_fee), (t, taker_fee)):
                o.filled += q
                o.filled_quote += quote
                o.fee += fee
            m.remaining -= q
            if not by_quote:
                t.remaining -= q
            m.status = "partially_filled" if m.remaining else "filled"
            if not m.remaining:
                self.resting.remove(m)
            spent += quote
            last_fill = m.price
            self.last = m.price
            self._emit("trade", m.id, t.id, m.price, q, quote, maker_fee, taker_fee)
        if by_quote:
            if why == "stp":
                self._end(t, "expired", "self_trade_prevented", "expired")
            elif t.filled and (why == "funds" or budget - spent < last_fill):
                t.status = "filled"
            else:
                self._end(t, "expired", "ioc_remainder", "expired")
        elif t.remaining == 0:
            t.status = "filled"
        elif why == "stp":
            self._end(t, "expired", "self_trade_prevented", "expired")
        elif why == "funds":
            self._end(t, "expired", "funds_exhausted", "expired")
        elif tif == GTC:
            if budget is not None and t.price * t.remaining > budget - spent:
                self._end(t, "expired", "funds_exhausted", "expired")
            else:
                t.status = "partially_filled" if t.filled else "open"
                self.resting.append(t)
                self._emit("accepted", t.id)
        else:
            self._end(t, "expired", "ioc_remainder", "expired")

    def _stops(self) -> None:
        while True:
            up = [s for s in self.stops if s.side == BUY and s.stop <= self.last]
            down = [s for s in self.stops if s.side == SELL and s.stop >= self.last]
            batch = sorted(up, key=lambda s: (s.stop, s.seq)) + sorted(
                down, key=lambda s: (-s.stop, s.seq)
            )
            if not batch:
                return
            for s in batch:
                self.stops.remove(s)
            for s in batch:
                s.seq = self._emit("triggered", s.id)
                self._take(s)

    def depth(self):
        levels = {BUY: {}, SELL: {}}
        for o in self.resting:
            levels[o.side][o.price] = levels[o.side].get(o.price, 0) + o.remaining
        bids = sorted(levels[BUY].items(), reverse=True)
        asks = sorted(levels[SELL].items())
        return bids, asks


# ----------------------------------------------------------------------------- commands


# Quote budgets: arbitrary, or within a unit of a whole number of lots at a book price
# (where "one lot's worth left" and "hold spent" flip).
budgets = st.one_of(
    st.integers(0, 900),
    st.builds(
        lambda price, lots, delta: max(0, price * lots + delta),
        st.integers(LOW, HIGH),
        st.integers(1, 8),
        st.integers(-1, 1),
    ),
)


@st.composite
def order_specs(draw):
    kind = draw(st.sampled_from([LIMIT] * 5 + [MARKET] * 2 + [STOP_LIMIT, STOP_MARKET]))
    side = draw(st.sampled_from([BUY, SELL]))
    spec = {
        "kind": kind,
        "side": side,
        "owner": draw(st.integers(1, 3)),
        "tif": GTC,
        "price": None,
        "stop_price": None,
        "quantity": None,
        "quote_limit": None,
        "post_only": False,
    }
    if kind in (STOP_LIMIT, STOP_MARKET):
        spec["stop_price"] = draw(st.integers(LOW, HIGH))
    if kind in (LIMIT, STOP_LIMIT):
        spec["price"] = draw(st.integers(LOW, HIGH))
        spec["quantity"] = draw(st.integers(1, 6))
        spec["tif"] = draw(st.sampled_from([GTC, GTC, GTC, IOC, FOK]))
        if kind == LIMIT and spec["tif"] == GTC:
            spec["post_only"] = draw(st.integers(0, 4)) == 0
        if side == BUY:
            exact = spec["price"] * spec["quantity"]
            spec["quote_limit"] = draw(
                st.sampled_from([None, exact, exact, exact + 7, exact - 1, max(1, exact - 60)])
            )
    else:
        spec["tif"] = draw(st.sampled_from([IOC, IOC, FOK, GTC]))
        if side == BUY and draw(st.booleans()):
            spec["quote_limit"] = draw(budgets)  # by quote
        else:
            spec["quantity"] = draw(st.integers(1, 9))
            if side == BUY:
                spec["quote_limit"] = draw(st.one_of(st.none(), budgets))
    return spec


def core_order(oid, spec) -> Order:
    return Order(
        oid,
        spec["owner"],
        spec["side"],
        spec["kind"],
        tif=spec["tif"],
        price=spec["price"],
        quantity=spec["quantity"],
        stop_price=spec["stop_price"],
        quote_limit=spec["quote_limit"],
        post_only=spec["post_only"],
    )


def core_state(order: Order):
    return (
        order.status,
        order.reason,
        order.remaining,
        order.filled,
        order.filled_quote,
        order.fee,
        order.seq,
    )


def check_core_invariants(book: OrderBook, orders: dict[int, Order], events) -> None:
    book.check()
    bid, ask = book.best_bid(), book.best_ask()
    assert bid is None or ask is None or bid < ask
    for o in orders.values():
        assert o.remaining >= 0 and o.filled >= 0
        if o.quantity is not None:
            assert o.filled + o.remaining == o.quantity
        if o.side == BUY and o.quote_limit is not None:
            assert o.filled_quote <= o.quote_limit
    for e in events:
        if e[0] is TRADE:
            _, _, maker, taker, price, quantity, quote, _, _ = e
            assert maker.owner != taker.owner, "self-trade"
            assert quote == price * quantity and quantity > 0
            assert taker.side != maker.side


# ----------------------------------------------------------------------------- stateful


class CoreVersusModel(RuleBasedStateMachine):
    @initialize(stp=st.sampled_from(STPS), fees=st.sampled_from(FEES))
    def start(self, stp, fees):
        maker, taker, scale = fees
        self.book = OrderBook(maker_fee=maker, taker_fee=taker, fee_scale=scale, stp=stp)
        self.model = RefBook(maker, taker, stp)
        self.orders: dict[int, Order] = {}
        self.ref_orders: dict[int, RefOrder] = {}
        self.next_id = 1

    def _compare(self, events, ref_events):
        assert [norm(e) for e in events] == ref_events
        check_core_invariants(self.book, self.orders, events)
        for oid, o in self.orders.items():
            assert core_state(o) == self.ref_orders[oid].state(), oid

    @rule(spec=order_specs())
    def place(self, spec):
        oid = self.next_id
        self.next_id += 1
        order = core_order(oid, spec)
        self.orders[oid] = order
        events = self.book.place(order)
        ref, ref_events = self.model.place(oid, spec)
        self.ref_orders[oid] = ref
        self._compare(events, ref_events)

    @precondition(lambda self: hasattr(self, "book") and self.book.best_ask() is not None)
    @rule(
        owner=st.integers(1, 3),
        delta=st.integers(-1, 1),
        extra_lots=st.integers(0, 1),
        tif=st.sampled_from([IOC, FOK]),
        by_quote=st.booleans(),
    )
    def sweep_asks(self, owner, delta, extra_lots, tif, by_quote):
        """A market buy whose budget is within a unit of what the whole ask side costs
        plus 0 or 1 more lot: the boundaries of "one lot's worth left" and funds."""
        asks = self.book.depth(10**6)[1]
        budget = max(1, sum(p * q for p, q in asks) + extra_lots * asks[-1][0] + delta)
        lots = sum(q for _, q in asks) + extra_lots
        spec = {
            "kind": MARKET,
            "side": BUY,
            "owner": owner,
            "tif": tif,
            "price": None,
            "stop_price": None,
            "quantity": None if by_quote else lots,
            "quote_limit": budget,
            "post_only": False,
        }
        self.place(spec)

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def cancel(self, data):
        oid = data.draw(st.sampled_from(sorted(self.orders)))
        self._compare(self.book.cancel(oid), self.model.cancel(oid))

    @rule()
    def cancel_unknown(self):
        assert self.book.cancel(10**9) == [] and self.model.cancel(10**9) == []

    @invariant()
    def same_book(self):
        if not hasattr(self, "book"):
            return
        assert self.book.depth(10**6) == self.model.depth()
        assert self.book.last_price == self.model.last
        assert self.book.seq == self.model.seq
        live = {o.id for o in self.model.resting} | {o.id for o in self.model.stops}
        assert {o.id for o in self.book.orders()} == live
        assert len(self.book) == len(live)


CoreVersusModel.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCoreVersusModel = CoreVersusModel.TestCase


# ----------------------------------------------------------------------------- rebuild


commands = st.lists(
    st.one_of(
        order_specs().map(lambda s: ("place", s)),
        order_specs().map(lambda s: ("place", s)),
        st.integers(1, 60).map(lambda i: ("cancel", i)),
    ),
    min_size=1,
    max_size=60,
)


def _apply(book: OrderBook, command, oid: int, orders: dict):
    if command[0] == "cancel":
        return book.cancel(command[1])
    order = core_order(oid, command[1])
    orders[oid] = order
    return book.place(order)


@settings(max_examples=300, deadline=None)
@given(
    cmds=commands,
    split=st.integers(0, 60),
    stp=st.sampled_from(STPS),
    fees=st.sampled_from(FEES),
)
def test_restored_book_behaves_identically(cmds, split, stp, fees):
    maker, taker, scale = fees
    kwargs = {"maker_fee": maker, "taker_fee": taker, "fee_scale": scale, "stp": stp}
    original = OrderBook(**kwargs)
    orders_a: dict[int, Order] = {}
    split = min(split, len(cmds))
    for i, command in enumerate(cmds[:split]):
        _apply(original, command, i + 1, orders_a)
    # Snapshot as the service would persist it: the live orders' state only.
    snapshot = [o.copy() for o in original.orders()]
    restored = OrderBook.restore(
        snapshot, **kwargs, last_price=original.last_price, seq=original.seq
    )
    restored.check()
    assert restored.depth(10**6) == original.depth(10**6)
    assert [o.state() for o in restored.orders()] == [o.state() for o in original.orders()]
    orders_b = {o.id: o for o in snapshot}
    for i, command in enumerate(cmds[split:], start=split):
        ev_a = [norm(e) for e in _apply(original, command, i + 1, orders_a)]
        ev_b = [norm(e) for e in _apply(restored, command, i + 1, orders_b)]
        assert ev_a == ev_b
        restored.check()
    assert restored.depth(10**6) == original.depth(10**6)
    assert (restored.seq, restored.last_price) == (original.seq, original.last_price)
    for oid, o in orders_b.items():
        assert o.state() == orders_a[oid].state()


def test_restore_refuses_inconsistent_snapshots():
    book = OrderBook()
    a = Order(1, 1, BUY, LIMIT, price=100, quantity=2)
    b = Order(2, 2, SELL, LIMIT, price=101, quantity=2)
    book.place(a)
    book.place(b)
    good = [o.copy() for o in book.orders()]
    OrderBook.restore(good, seq=book.seq).check()
    with pytest.raises(ValueError):
        OrderBook.restore(good, seq=1)  # seq behind the orders
    crossed = [o.copy() for o in good]
    crossed[1].price = 99
    with pytest.raises(ValueError):
        OrderBook.restore(crossed, seq=2)
    dup = [good[0].copy(), good[0].copy()]
    with pytest.raises(ValueError):
        OrderBook.restore(dup, seq=2)
    done = good[0].copy()
    done.status = "filled"
    with pytest.raises(ValueError):
        OrderBook.restore([done], seq=2)
    stop = Order(3, 1, BUY, STOP_MARKET, quantity=1, stop_price=100)
    stop.seq, stop.status = 1, "untriggered"
    with pytest.raises(ValueError):
        OrderBook.restore([stop], seq=1, last_price=100)  # would already have triggered
    OrderBook.restore([stop], seq=1, last_price=99).check()


def test_restore_accepts_status_strings_from_storage():
    book = OrderBook()
    o = Order(1, 1, BUY, LIMIT, price=100, quantity=2)
    book.place(o)
    row = o.copy()
    row.status = "".join(["op", "en"])  # an equal string that is not the same object
    restored = OrderBook.restore([row], seq=1)
    restored.check()
    assert restored.cancel(1)[0][2].status == "cancelled"
    restored.check()


# ----------------------------------------------------------------------------- stress


def _random_budget(rng: random.Random) -> int:
    if rng.random() < 0.5:
        return rng.randint(0, 3000)
    return max(1, rng.randint(90, 110) * rng.randint(1, 25) + rng.randint(-1, 1))


def _random_spec(rng: random.Random) -> dict:
    kind = rng.choice([LIMIT] * 6 + [MARKET] * 2 + [STOP_LIMIT, STOP_MARKET])
    side = rng.choice([BUY, SELL])
    spec = {
        "kind": kind,
        "side": side,
        "owner": rng.randint(1, 5),
        "tif": GTC,
        "price": None,
        "stop_price": None,
        "quantity": None,
        "quote_limit": None,
        "post_only": False,
    }
    if kind in (STOP_LIMIT, STOP_MARKET):
        spec["stop_price"] = rng.randint(90, 110)
    if kind in (LIMIT, STOP_LIMIT):
        spec["price"] = rng.randint(90, 110)
        spec["quantity"] = rng.randint(1, 12)
        spec["tif"] = rng.choice([GTC] * 4 + [IOC, FOK])
        spec["post_only"] = kind == LIMIT and spec["tif"] == GTC and rng.random() < 0.1
        if side == BUY and rng.random() < 0.5:
            spec["quote_limit"] = spec["price"] * spec["quantity"] + rng.choice([0, 0, 5, -1, -30])
            spec["quote_limit"] = max(1, spec["quote_limit"])
    else:
        spec["tif"] = rng.choice([IOC, IOC, FOK])
        if side == BUY and rng.random() < 0.4:
            spec["quote_limit"] = _random_budget(rng)
        else:
            spec["quantity"] = rng.randint(1, 25)
            if side == BUY and rng.random() < 0.5:
                spec["quote_limit"] = _random_budget(rng)
    return spec


@pytest.mark.parametrize("stp", STPS)
@pytest.mark.parametrize("seed", [1, 2])
def test_seeded_stress_against_model(stp, seed):
    rng = random.Random(seed * 7919 + stp)
    book = OrderBook(maker_fee=10, taker_fee=25, fee_scale=10_000, stp=stp)
    model = RefBook(10, 25, stp)
    orders: dict[int, Order] = {}
    for oid in range(1, 3001):
        if orders and rng.random() < 0.2:
            target = rng.choice(list(orders))
            events, ref_events = book.cancel(target), model.cancel(target)
        else:
            spec = _random_spec(rng)
            orders[oid] = core_order(oid, spec)
            events = book.place(orders[oid])
            _, ref_events = model.place(oid, spec)
        assert [norm(e) for e in events] == ref_events, oid
        check_core_invariants(book, {}, events)
    assert book.depth(10**6) == model.depth()
    check_core_invariants(book, orders, [])


@settings(max_examples=100, deadline=None)
@given(cmds=commands, stp=st.sampled_from(STPS))
def test_deterministic(cmds, stp):
    """The same command sequence gives the same events and end state."""
    runs = []
    for _ in range(2):
        book = OrderBook(maker_fee=1, taker_fee=2, fee_scale=1000, stp=stp)
        orders: dict[int, Order] = {}
        events = [[norm(e) for e in _apply(book, c, i + 1, orders)] for i, c in enumerate(cmds)]
        runs.append((events, book.depth(10**6), [o.state() for o in orders.values()]))
    assert runs[0] == runs[1]
