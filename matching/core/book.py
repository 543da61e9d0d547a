"""The order book: price-time priority matching over integer ticks and lots.

Layout, per side:

* ``levels``: dict key -> ``_Level``, the truth about which levels exist. Bids are
  keyed by ``-price`` so that, on both sides, the best level has the smallest key
  and "the level crosses a limit" is always ``level.key <= limit_key``; one matching
  loop then serves buys and sells.
* ``heap``: a ``heapq`` min-heap of the level keys with lazy deletion. A level
  dropped while not the best leaves its key behind, stale (not in ``levels``); when
  the best level goes its key and any stale keys that surface are popped, so
  ``heap[0]`` is always the best key. The heap is rebuilt from the dict once stale
  keys outnumber live ones. Adding or dropping a level is O(log L) in C, where a
  ``SortedList`` costs about a microsecond of Python per call; the few readers that
  need levels in order (``depth``, the FOK walk) sort the live keys they need.
* ``best``: the cached best ``_Level`` (``None`` when the side is empty), so the
  common case touches neither the heap nor the dict.
* A level is a FIFO ``deque`` of orders plus a running ``total`` of their remaining
  lots. Cancel is O(1) through the book's id index: the order is only marked
  (status ``cancelled``) and the level total reduced; the dead entry is skipped and
  dropped when it reaches the front. ``dead`` counts such entries so a level that
  accumulates many is compacted (amortised O(1) per cancel), and a level whose total
  reaches zero is dropped whole, dead entries included. A few recently emptied level
  objects are kept per side and reused when an order rests at that price again:
  levels at the touch empty and refill all the time.

Speed: the hot paths (``place``'s fast path for GTC limit orders and ``_match``)
keep what they use in locals and inline the small level helpers: in CPython a
Python-level call costs about as much as a dozen lines of simple code. In CPython 3.11 a
comparison whose branch jumps far (needing ``EXTENDED_ARG``) is not specialised and
costs several times more, hence the early exits rather than long ``if`` blocks.

Untriggered stops sit in two ``SortedList``s of ``(key, seq, order)`` tuples: buy
stops keyed by stop price (they trigger when the last price rises to it, lowest
first), sell stops keyed by ``-stop_price`` (they trigger as the price falls, highest
first). Ties go by seq. Seqs are unique, so tuple comparison never reaches the order.

Fees: rates are ``maker_fee / fee_scale`` and ``taker_fee / fee_scale``. Each party
pays on what it receives: the buyer ``quantity * rate_num`` base fee units (one unit =
lot / fee_scale), the seller ``price * quantity * rate_num`` quote fee units (one unit
= tick x lot / fee_scale). Exact; nothing is rounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from heapq import heapify, heappop, heappush, nsmallest

from sortedcontainers import SortedList

from .types import (
    ACCEPTED,
    BUY,
    CANCELLED,
    CANCELLED_BY_USER,
    EXPIRE_BOTH,
    EXPIRE_MAKER,
    EXPIRE_TAKER,
    EXPIRED,
    FILLED,
    FOK,
    FOK_NOT_FILLED,
    FUNDS_EXHAUSTED,
    GTC,
    IOC,
    IOC_REMAINDER,
    LIMIT,
    MARKET,
    OPEN,
    PARTIALLY_FILLED,
    PENDING,
    POST_ONLY_WOULD_TAKE,
    REJECTED,
    SELF_TRADE_PREVENTED,
    SELL,
    STOP_LIMIT,
    STOP_MARKET,
    STOP_WOULD_TRIGGER_IMMEDIATELY,
    TRADE,
    TRIGGERED,
    UNTRIGGERED,
    Order,
)

# A limit key no level key reaches: market orders use it as their "price limit", and a
# buy by quote uses it as its lot budget (the quote budget is what stops it).
_NO_LIMIT = 1 << 62

# Why a taker's matching loop stopped inside a level (else it filled, or ran out of
# levels within its limit). _STOP_GO is falsy so the loop can test ``if stop``.
_STOP_GO = 0
_STOP_FUNDS = 1  # quote_limit cannot buy one more lot at the next price
_STOP_STP = 2  # met its owner's resting order and must not continue

_SIDES = (BUY, SELL)
_SPARE_LEVELS = 256
_TIFS = (GTC, IOC, FOK)

# Compact a level's deque once it holds this many cancelled entries and they are the
# majority; below that, skipping them at the front is cheaper than rebuilding.
_COMPACT_MIN_DEAD = 32


class _Level:
    """One price level: FIFO of orders and the running total of their remaining lots."""

    __slots__ = ("side", "price", "key", "total", "orders", "dead", "ident")

    def __init__(self, side: int, price: int, key: int) -> None:
        self.side = side
        self.price = price
        self.key = key
        self.ident = (side, price)  # what take_touched() reports, built once
        self.total = 0
        self.orders: deque[Order] = deque()
        self.dead = 0


class _Side:
    """One side of the book (see module docstring for the key convention)."""

    __slots__ = ("side", "levels", "heap", "best", "spare")

    def __init__(self, side: int) -> None:
        self.side = side
        self.levels: dict[int, _Level] = {}
        # Min-heap of level keys with lazy deletion: the dict is the truth, a key not
        # in it is stale. heap[0] is always the best level's key (stale keys are
        # popped off the top whenever the best level goes).
        self.heap: list[int] = []
        self.best: _Level | None = None
        # Recently emptied levels by key, reused when an order rests at that price
        # again (levels near the touch empty and refill constantly). Bounded.
        self.spare: dict[int, _Level] = {}

    def key_of(self, price: int) -> int:
        return -price if self.side == BUY else price

    def add_level(self, price: int, key: int) -> _Level:
        """Create and index a new, empty level at ``key`` (``key_of(price)``). O(log L)."""
        lvl = self.spare.pop(key, None)
        if lvl is None:
            lvl = _Level(self.side, price, key)
        self.levels[key] = lvl
        # A stale copy of key may still be in the heap: harmless, it is live again
        # and the extra copy is popped when the level goes.
        heappush(self.heap, key)
        best = self.best
        if best is None or key < best.key:
            self.best = lvl
        return lvl

    def drop_best(self) -> _Level | None:
        """Remove the (now empty) best level and return the new best. O(log L) amortised."""
        levels = self.levels
        lvl = levels.pop(self.best.key)
        _retire(self.spare, lvl)
        heap = self.heap
        # Pops the best's key, then any stale keys that surface.
        while heap and heap[0] not in levels:
            heappop(heap)
        best = levels[heap[0]] if heap else None
        self.best = best
        return best

    def drop(self, lvl: _Level) -> None:
        """Remove an empty level anywhere on the side. O(log L) amortised."""
        if lvl is self.best:
            self.drop_best()
            return
        levels = self.levels
        del levels[lvl.key]
        _retire(self.spare, lvl)
        # Its key stays in the heap, stale. Rebuild once stale keys outnumber live
        # ones (plus slack): O(L) every O(L) drops.
        if len(self.heap) > 2 * len(levels) + 64:
            self.heap = heap = list(levels)
            heapify(heap)

    def sorted_keys(self, limit: int = _NO_LIMIT) -> list[int]:
        """Live keys up to ``limit``, best first. O(L log L)."""
        return sorted(k for k in self.levels if k <= limit)

    def depth(self, n: int) -> list[tuple[int, int]]:
        if n <= 0:
            return []
        levels = self.levels
        return [(levels[k].price, levels[k].total) for k in nsmallest(n, levels)]


def _retire(spare: dict[int, _Level], lvl: _Level) -> None:
    """Keep an emptied level for reuse: clear its dead entries. O(dead)."""
    if lvl.orders:
        lvl.orders.clear()  # only dead entries can be left
        lvl.dead = 0
    if len(spare) >= _SPARE_LEVELS:
        spare.clear()
    spare[lvl.key] = lvl


class OrderBook:
    """An in-memory limit order book for one market, with its stop orders.

    Single-threaded and deterministic: the same sequence of ``place``/``cancel``
    calls yields the same events. Every event takes the next ``seq`` (so
    ``book.seq`` is the seq of the last event); events reference the live Order
    objects, whose final state a consumer reads after its batch.

    Outcomes, as the order's ``status`` and ``reason``:

    * A taker that trades completely is ``filled`` and gets no event of its own
      beyond its trades. A remainder rests (GTC: an ``accepted`` event, status ``open`` or
      ``partially_filled``) or is ``expired``: ``ioc_remainder`` (IOC, market, or
      the book ran out), ``fok_not_filled`` (FOK, book untouched),
      ``self_trade_prevented``, or ``funds_exhausted`` (a buy whose ``quote_limit``
      cannot pay for the next lot it wants, or for resting its remainder at its
      limit price).
    * A market buy by quote (``quantity`` None) buys whole lots while
      ``quote_left // price`` allows; it is ``filled`` once it has bought something
      and less than one lot's worth is left for the next price (or, when the book
      runs out, at the last fill price); otherwise ``expired`` (``ioc_remainder``),
      including when it could not afford a single lot.
    * ``rejected``: ``post_only_would_take``, ``stop_would_trigger_immediately``.
      ``cancelled``: ``cancelled_by_user``. Fills are always kept.
    """

    __slots__ = (
        "maker_fee",
        "taker_fee",
        "fee_scale",
        "stp",
        "last_price",
        "seq",
        "_bids",
        "_asks",
        "_index",
        "_buy_stops",
        "_sell_stops",
        "_stop_count",
        "_touched",
    )

    def __init__(
        self,
        maker_fee: int = 0,
        taker_fee: int = 0,
        fee_scale: int = 1,
        stp: int = EXPIRE_TAKER,
        last_price: int | None = None,
        seq: int = 0,
    ) -> None:
        if maker_fee < 0 or taker_fee < 0 or fee_scale < 1:
            raise ValueError("fee numerators must be >= 0 and fee_scale >= 1")
        if stp not in (EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH):
            raise ValueError(f"unknown self-trade prevention mode {stp!r}")
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self.fee_scale = fee_scale
        self.stp = stp
        self.last_price = last_price
        self.seq = seq
        self._bids = _Side(BUY)
        self._asks = _Side(SELL)
        # Resting and untriggered orders by id.
        self._index: dict[int, Order] = {}
        self._buy_stops = SortedList()
        self._sell_stops = SortedList()
        # Untriggered stops on both sides; an int is cheaper to test after every
        # trading command than a SortedList's (Python-level) length.
        self._stop_count = 0
        # Levels changed since take_touched(): the _Level objects themselves, hashed by
        # identity, which is cheaper on the hot path than building (side, price) keys.
        self._touched: set[_Level] = set()

    # ------------------------------------------------------------------ commands

    def place(self, order: Order) -> list:
        """Apply a new order and return the events it caused, in order.

        The order's ``seq`` becomes the seq of the first event this call emits. A
        limit order matches against the opposite side (price-time priority) and its
        remainder rests (GTC) or expires (IOC); FOK fills completely or expires
        leaving the book untouched; market orders behave as IOC (FOK if asked);
        stop orders wait untriggered. Stops whose condition holds after the
        matching are then triggered (see ``_run_stops``) and their events follow.

        Raises ``ValueError`` (``TypeError`` for a non-int amount) for an order the
        API should never send: unknown constants, missing or non-positive amounts,
        post-only other than limit GTC, an Order object already given to a book, or
        an id that is live here. The book is unchanged then.

        Complexity: O(1) to rest at an existing level, O(log L) for a new level
        (L = levels on that side), plus O(1) per trade and O(log L) per level
        emptied; triggered stops cost O(log S) each plus their own matching.
        """
        if order.status != PENDING or order.id in self._index:
            raise ValueError(f"order {order.id} was already given to this or another book")
        price = order.price
        qty = order.quantity
        quote_limit = order.quote_limit
        # Fast path for the most common commands: a valid GTC limit order whose hold
        # covers it (the checks are _validate's for this shape). Written as an early
        # exit so every test jumps only a short way: CPython 3.11 leaves a comparison
        # unspecialised (several times slower) when its jump needs EXTENDED_ARG.
        if (
            order.kind != LIMIT
            or order.tif != GTC
            or type(price) is not int
            or type(qty) is not int
            or price <= 0
            or qty <= 0
            or (
                quote_limit is not None
                and (type(quote_limit) is not int or price * qty > quote_limit)
            )
        ):
            return self._place_checked(order)
        # If it does not cross it just rests, inline; else straight to _match.
        side = order.side
        if side == BUY:
            opp = self._asks
            best = opp.best
            if best is None or best.price > price:
                mine = self._bids
                key = -price
            else:
                mine = None
                limit_key = price
        elif side == SELL:
            opp = self._bids
            best = opp.best
            quote_limit = None  # sells spend base, never quote
            if best is None or best.price < price:
                mine = self._asks
                key = price
            else:
                mine = None
                limit_key = -price
        else:
            raise ValueError(f"bad side {side!r}")
        if mine is not None:
            lvl = mine.levels.get(key)
            if lvl is None:
                # add_level, inline: a third of resting orders open a level, and the
                # call would cost as much as this block.
                lvl = mine.spare.pop(key, None) or _Level(side, price, key)
                mine.levels[key] = lvl
                heappush(mine.heap, key)
                best = mine.best
                if best is None or key < best.key:
                    mine.best = lvl
            lvl.orders.append(order)
            lvl.total += qty
            self._index[order.id] = order
            self._touched.add(lvl)
            order.status = OPEN
            self.seq = seq = self.seq + 1
            order.seq = seq
            return [(ACCEPTED, seq, order)]
        if order.post_only:
            # It would cross the best opposite price (own orders included).
            return self._reject(order, POST_ONLY_WOULD_TAKE)
        order.seq = self.seq + 1
        events = self._match(order, opp, best, limit_key, GTC, quote_limit, [])
        if self._stop_count:
            self._run_stops(events)
        return events

    def _place_checked(self, order: Order) -> list:
        """``place`` for every order its fast path does not take: validate, then run."""
        self._validate(order)
        kind = order.kind
        if kind == STOP_LIMIT or kind == STOP_MARKET:
            return self._place_stop(order)
        if order.post_only and self._would_take(order):
            return self._reject(order, POST_ONLY_WOULD_TAKE)
        order.seq = self.seq + 1
        events = self._execute(order, [])
        if self._stop_count:
            self._run_stops(events)
        return events

    def _would_take(self, order: Order) -> bool:
        """Whether a limit order crosses the best opposite price. O(1)."""
        if order.side == BUY:
            best = self._asks.best
            return best is not None and best.price <= order.price
        best = self._bids.best
        return best is not None and best.price >= order.price

    def cancel(self, order_id: int) -> list:
        """Cancel a resting or untriggered order; ``[]`` if the id is not live.

        The order ends ``cancelled`` (reason ``cancelled_by_user``) with its fills
        kept. Complexity: O(1) for a resting order whose level stays non-empty
        (amortised, counting the eventual removal of its dead deque entry),
        O(log L) if its level empties, O(log S) for an untriggered stop.
        """
        order = self._index.pop(order_id, None)
        if order is None:
            return []
        if order.status is UNTRIGGERED:
            self._stops_of(order.side).remove(self._stop_entry(order))
            self._stop_count -= 1
        else:
            if order.side == BUY:
                side = self._bids
                lvl = side.levels[-order.price]
            else:
                side = self._asks
                lvl = side.levels[order.price]
            order.status = CANCELLED  # marks its deque entry dead
            total = lvl.total - order.remaining
            lvl.total = total
            self._touched.add(lvl)
            if total == 0:
                # Only dead entries would be left: drop the level with them.
                side.drop(lvl)
            else:
                dead = lvl.dead + 1
                if dead >= _COMPACT_MIN_DEAD and 2 * dead > len(lvl.orders):
                    lvl.orders = deque(o for o in lvl.orders if o.status is not CANCELLED)
                    dead = 0
                lvl.dead = dead
        order.status = CANCELLED
        order.reason = CANCELLED_BY_USER
        self.seq = seq = self.seq + 1
        return [(CANCELLED, seq, order)]

    # ------------------------------------------------------------------ reads

    def get(self, order_id: int) -> Order | None:
        """The resting or untriggered order with this id, else ``None``. O(1)."""
        return self._index.get(order_id)

    def best_bid(self) -> int | None:
        """Best bid price in ticks, or ``None``. O(1)."""
        best = self._bids.best
        return None if best is None else best.price

    def best_ask(self) -> int | None:
        """Best ask price in ticks, or ``None``. O(1)."""
        best = self._asks.best
        return None if best is None else best.price

    def depth(self, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Top ``n`` levels per side as ``(price_ticks, total_lots)``.

        Bids descending, asks ascending. O(L log n) (selects the best ``n`` keys of
        the side's L levels), using the running totals.
        """
        return self._bids.depth(n), self._asks.depth(n)

    def take_touched(self) -> set[tuple[int, int]]:
        """Return the ``(side, price)`` levels changed since the last call and reset. O(1)."""
        touched = self._touched
        self._touched = set()
        return {lvl.ident for lvl in touched}

    def orders(self) -> Iterator[Order]:
        """Iterate resting and untriggered orders by seq. O(n log n)."""
        return iter(sorted(self._index.values(), key=_by_seq))

    def __len__(self) -> int:
        """Number of resting plus untriggered orders. O(1)."""
        return len(self._index)

    def __repr__(self) -> str:
        return (
            f"OrderBook(bid={self.best_bid()}, ask={self.best_ask()}, orders={len(self)}, "
            f"last_price={self.last_price}, seq={self.seq})"
        )

    # ------------------------------------------------------------------ rebuild

    @classmethod
    def restore(
        cls,
        orders: Iterable[Order],
        *,
        maker_fee: int = 0,
        taker_fee: int = 0,
        fee_scale: int = 1,
        stp: int = EXPIRE_TAKER,
        last_price: int | None = None,
        seq: int = 0,
    ) -> OrderBook:
        """Rebuild a book from its live orders, emitting nothing.

        ``orders`` are resting orders (status open/partially_filled, with their
        ``remaining`` and ``seq``) and untriggered stops. They are put back in seq
        order, so time priority survives and the restored book matches exactly as
        the original would have. The book takes ownership of the Order objects.
        ``seq`` is the last seq the original book used (at least every order's).
        Raises ``ValueError`` on an inconsistent snapshot (duplicate id or seq,
        finished order, crossed book, a stop that should already have triggered).
        The touched-levels set starts empty. O(n log n).
        """
        book = cls(maker_fee, taker_fee, fee_scale, stp, last_price, seq)
        seen_seqs: set[int] = set()
        for order in sorted(orders, key=_by_seq):
            if order.id in book._index:
                raise ValueError(f"duplicate order id {order.id}")
            if not 0 < order.seq <= seq or order.seq in seen_seqs:
                raise ValueError(f"order {order.id}: bad or duplicate seq {order.seq}")
            seen_seqs.add(order.seq)
            status = order.status
            if status == UNTRIGGERED:
                if order.kind not in (STOP_LIMIT, STOP_MARKET) or not order.stop_price:
                    raise ValueError(f"order {order.id}: untriggered but not a stop order")
                if book._stop_holds(order):
                    raise ValueError(f"order {order.id}: stop condition already holds")
                order.status = UNTRIGGERED
                book._stops_of(order.side).add(book._stop_entry(order))
                book._stop_count += 1
                book._index[order.id] = order
            elif status == OPEN or status == PARTIALLY_FILLED:
                if order.kind not in (LIMIT, STOP_LIMIT) or not order.price or order.price < 0:
                    raise ValueError(f"order {order.id}: only limit orders rest")
                if order.remaining <= 0 or order.quantity is None:
                    raise ValueError(f"order {order.id}: nothing remains to rest")
                if order.filled + order.remaining != order.quantity:
                    raise ValueError(f"order {order.id}: filled + remaining != quantity")
                order.status = OPEN if order.filled == 0 else PARTIALLY_FILLED
                book._rest(order)
            else:
                raise ValueError(f"order {order.id}: status {status!r} cannot be restored")
        bid, ask = book.best_bid(), book.best_ask()
        if bid is not None and ask is not None and bid >= ask:
            raise ValueError(f"restored book is crossed: bid {bid} >= ask {ask}")
        book._touched = set()
        return book

    # ------------------------------------------------------------------ invariants

    def check(self) -> None:
        """Assert every invariant of the book; raises ``AssertionError``. O(n log n).

        Levels sorted and keyed consistently; no empty level; the cached best is the
        first level; best bid < best ask; each level total equals the sum of its
        live orders' remaining lots; live orders in each level are in seq order and
        have the level's price and side; the dead-entry counts are exact; the index
        holds exactly the resting and untriggered orders; no untriggered stop's
        condition holds at the last price; every live order has filled + remaining
        = quantity, remaining > 0, and a status matching its fills.
        """
        resting = 0
        for side in (self._bids, self._asks):
            keys = sorted(side.levels)
            heap = side.heap
            _require(
                all(heap[(i - 1) // 2] <= heap[i] for i in range(1, len(heap))),
                "level key heap out of order",
            )
            _require(set(keys) <= set(heap), "a level's key is missing from the heap")
            if keys:
                _require(heap[0] == keys[0], "heap top is not the best level's key")
                _require(side.best is side.levels[keys[0]], "cached best is not the first level")
            else:
                _require(side.best is None and not heap, "empty side with a best or heap keys")
            for key in keys:
                lvl = side.levels[key]
                _require(lvl.key == key and side.key_of(lvl.price) == key, "level key mismatch")
                _require(lvl.side == side.side, "level on the wrong side")
                _require(lvl.ident == (lvl.side, lvl.price), "level ident mismatch")
                _require(lvl.total > 0, f"empty level at {lvl.price}")
                total = dead = 0
                last_seq = 0
                for o in lvl.orders:
                    if o.status is CANCELLED:
                        dead += 1
                        _require(self._index.get(o.id) is not o, "cancelled order still indexed")
                        continue
                    _require(o.status in (OPEN, PARTIALLY_FILLED), f"order {o.id} not live")
                    _require(self._index.get(o.id) is o, f"resting order {o.id} not indexed")
                    _require(o.side == side.side and o.price == lvl.price, "order on wrong level")
                    _require(o.seq > last_seq, f"level {lvl.price} not in time priority")
                    last_seq = o.seq
                    self._check_order_state(o)
                    total += o.remaining
                    resting += 1
                _require(total == lvl.total, f"level {lvl.price} total {lvl.total} != {total}")
                _require(dead == lvl.dead, f"level {lvl.price} dead count {lvl.dead} != {dead}")
            for key, lvl in side.spare.items():
                _require(key not in side.levels, "a spare level is also live")
                _require(lvl.key == key and lvl.total == 0, "spare level not empty")
                _require(not lvl.orders and lvl.dead == 0, "spare level holds orders")
        bid, ask = self.best_bid(), self.best_ask()
        _require(bid is None or ask is None or bid < ask, f"crossed book: {bid} >= {ask}")
        stops = 0
        for stop_list, side in ((self._buy_stops, BUY), (self._sell_stops, SELL)):
            entries = list(stop_list)
            _require(entries == sorted(entries, key=lambda e: (e[0], e[1])), "stops unsorted")
            for key, seq, o in entries:
                _require(o.side == side and o.status is UNTRIGGERED, "bad untriggered stop")
                _require(self._index.get(o.id) is o, f"stop {o.id} not indexed")
                _require((key, seq) == self._stop_entry(o)[:2], "stop entry key mismatch")
                _require(not self._stop_holds(o), f"stop {o.id} should have triggered")
                stops += 1
        _require(resting + stops == len(self._index), "index holds orders not in the book")
        _require(stops == self._stop_count, "untriggered stop count is off")
        _require(all(o.seq <= self.seq for o in self._index.values()), "order seq > book seq")

    @staticmethod
    def _check_order_state(o: Order) -> None:
        _require(o.remaining > 0, f"order {o.id} rests with nothing remaining")
        _require(o.filled + o.remaining == o.quantity, f"order {o.id} quantities do not add up")
        _require((o.status == OPEN) == (o.filled == 0), f"order {o.id} status/fills mismatch")

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _validate(order: Order) -> None:
        """Refuse an order the API must never send: the core trusts its inputs after."""
        side, kind, tif = order.side, order.kind, order.tif
        if side != BUY and side != SELL:
            raise ValueError(f"bad side {side!r}")
        if tif != GTC and tif != IOC and tif != FOK:
            raise ValueError(f"bad time in force {tif!r}")
        if kind not in (LIMIT, MARKET, STOP_LIMIT, STOP_MARKET):
            raise ValueError(f"bad order kind {kind!r}")
        qty = order.quantity
        if kind == LIMIT or kind == STOP_LIMIT:
            _positive_int(order.price, "price")
            _positive_int(qty, "quantity")
        elif qty is None:
            if side != BUY or order.quote_limit is None:
                raise ValueError("only a market buy may omit quantity, and needs a quote_limit")
        else:
            _positive_int(qty, "quantity")
        if kind == STOP_LIMIT or kind == STOP_MARKET:
            _positive_int(order.stop_price, "stop_price")
        if order.post_only and (kind != LIMIT or tif != GTC):
            raise ValueError("post_only applies to limit GTC orders only")
        if order.quote_limit is not None:
            # Zero is a real hold: e.g. a market buy by quantity into an empty book
            # holds nothing; such a buy simply cannot trade.
            _positive_int(order.quote_limit, "quote_limit", minimum=0)

    def _reject(self, order: Order, reason: str) -> list:
        """Refuse a new order on entry: its only event is ``rejected``."""
        order.seq = self.seq + 1
        events: list = []
        self._finish(order, REJECTED, reason, events)
        return events

    def _finish(self, order: Order, status: str, reason: str | None, events: list) -> None:
        """Set a terminal status (expired or rejected) and emit the event of that kind."""
        order.status = status
        order.reason = reason
        self.seq = seq = self.seq + 1
        events.append((status, seq, order))

    def _rest(self, order: Order) -> _Level:
        """Append an order to its level (creating it). O(1), or O(log L) for a new level."""
        price = order.price
        if order.side == BUY:
            side = self._bids
            key = -price
        else:
            side = self._asks
            key = price
        lvl = side.levels.get(key) or side.add_level(price, key)
        lvl.orders.append(order)
        lvl.total += order.remaining
        self._index[order.id] = order
        self._touched.add(lvl)
        return lvl

    def _rest_or_expire(self, order: Order, left: int | None, events: list) -> None:
        """Rest a GTC remainder, unless its hold cannot pay for it at its price."""
        if left is not None and order.price * order.remaining > left:
            # Resting would let it buy more than its hold as a maker.
            self._finish(order, EXPIRED, FUNDS_EXHAUSTED, events)
            return
        order.status = PARTIALLY_FILLED if order.filled else OPEN
        self._rest(order)
        self.seq = seq = self.seq + 1
        events.append((ACCEPTED, seq, order))

    def _execute(self, taker: Order, events: list) -> list:
        """Match a limit or market order (or a triggered stop), settle its remainder.

        Appends to and returns ``events``.
        """
        side = taker.side
        kind = taker.kind
        if kind == LIMIT or kind == STOP_LIMIT:
            limit_key = taker.price if side == BUY else -taker.price
            tif = taker.tif
        else:
            limit_key = _NO_LIMIT
            tif = FOK if taker.tif == FOK else IOC
        if side == BUY:
            opp = self._asks
            left = taker.quote_limit
        else:
            opp = self._bids
            left = None  # sells spend base, never quote
        lvl = opp.best
        if lvl is not None and lvl.key <= limit_key:
            return self._match(taker, opp, lvl, limit_key, tif, left, events)
        # Nothing to take.
        if tif == GTC:
            self._rest_or_expire(taker, left, events)
        else:
            reason = FOK_NOT_FILLED if tif == FOK else IOC_REMAINDER
            self._finish(taker, EXPIRED, reason, events)
        return events

    def _match(
        self,
        taker: Order,
        opp: _Side,
        lvl: _Level,
        limit_key: int,
        tif: int,
        left: int | None,
        events: list,
    ) -> list:
        """Match ``taker`` against ``opp``, whose best level ``lvl`` crosses ``limit_key``.

        ``left`` is the quote a buy may spend (``None``: unlimited, and always for a
        sell). Settles the remainder by ``tif``; appends to and returns ``events``.
        """
        by_quote = taker.quantity is None
        if tif == FOK and not self._fok_fillable(taker, opp, limit_key, left, by_quote):
            self._finish(taker, EXPIRED, FOK_NOT_FILLED, events)
            return events

        # The matching loop. Hot: everything it needs is in locals; the outer loop runs
        # once per price level, the inner once per maker, and the level total and the
        # taker's totals are written back once rather than per trade.
        buy = opp is self._asks  # a buy takes from the asks
        need = start = _NO_LIMIT if by_quote else taker.remaining
        limited = left is not None
        owner = taker.owner
        mnum = self.maker_fee
        tnum = self.taker_fee
        index = self._index
        touched = self._touched
        append = events.append
        seq = self.seq
        filled_quote = 0
        last_px = 0
        stop = _STOP_GO  # or why the taker stopped inside a level: funds or STP
        while True:
            px = lvl.price
            q = lvl.orders
            total = lvl.total
            touched.add(lvl)
            while True:
                maker = q[0]
                if maker.status is CANCELLED:
                    q.popleft()
                    lvl.dead -= 1
                    continue
                mrem = maker.remaining
                qty = mrem if mrem < need else need
                if limited:
                    afford = (left - filled_quote) // px
                    if afford == 0:
                        stop = _STOP_FUNDS
                        break
                    if qty > afford:
                        qty = afford
                if maker.owner == owner:
                    stp = self.stp  # rare: not worth a local up front
                    if stp != EXPIRE_TAKER:
                        q.popleft()
                        total -= mrem
                        del index[maker.id]
                        maker.status = EXPIRED
                        maker.reason = SELF_TRADE_PREVENTED
                        seq += 1
                        append((EXPIRED, seq, maker))
                    if stp != EXPIRE_MAKER:
                        stop = _STOP_STP
                        break
                    if not total:
                        break
                    continue
                quote = px * qty
                if buy:
                    maker_fee = quote * mnum
                    fee = qty * tnum
                else:
                    maker_fee = qty * mnum
                    fee = quote * tnum
                if qty == mrem:
                    q.popleft()
                    del index[maker.id]
                    maker.remaining = 0
                    maker.status = FILLED
                else:
                    maker.remaining = mrem - qty
                    maker.status = PARTIALLY_FILLED
                maker.filled += qty
                maker.filled_quote += quote
                maker.fee += maker_fee
                seq += 1
                append((TRADE, seq, maker, taker, px, qty, quote, maker_fee, fee))
                filled_quote += quote
                total -= qty
                need -= qty
                last_px = px
                if not need or not total:
                    break
            lvl.total = total
            if not total:
                # drop_best, inline (the call would cost as much as this block):
                # retire the empty level, pop its key and any stale ones, take the
                # next best.
                levels = opp.levels
                del levels[lvl.key]
                if q:
                    q.clear()  # only dead entries can be left
                    lvl.dead = 0
                spare = opp.spare
                if len(spare) >= _SPARE_LEVELS:
                    spare.clear()
                spare[lvl.key] = lvl
                heap = opp.heap
                while heap and heap[0] not in levels:
                    heappop(heap)
                opp.best = lvl = levels[heap[0]] if heap else None
            if stop or not need or lvl is None or lvl.key > limit_key:
                break
        self.seq = seq
        # The taker's totals, once: its per-trade fees sum to this exactly.
        filled = start - need
        if filled:
            self.last_price = last_px
            taker.filled += filled
            taker.filled_quote += filled_quote
            taker.fee += filled * tnum if buy else filled_quote * tnum
        if limited:
            left -= filled_quote

        if by_quote:
            if stop == _STOP_STP:
                self._finish(taker, EXPIRED, SELF_TRADE_PREVENTED, events)
            elif filled and (stop == _STOP_FUNDS or left < last_px):
                # Less than one lot's worth is left unspent: that is a complete fill.
                taker.status = FILLED
            else:
                self._finish(taker, EXPIRED, IOC_REMAINDER, events)
            return events
        taker.remaining = need
        if not need:
            taker.status = FILLED
        elif stop == _STOP_STP:
            self._finish(taker, EXPIRED, SELF_TRADE_PREVENTED, events)
        elif stop == _STOP_FUNDS:
            self._finish(taker, EXPIRED, FUNDS_EXHAUSTED, events)
        elif tif != GTC:
            self._finish(taker, EXPIRED, IOC_REMAINDER, events)
        elif limited and taker.price * need > left:
            # Resting would let it buy more than its hold as a maker.
            self._finish(taker, EXPIRED, FUNDS_EXHAUSTED, events)
        else:
            taker.status = PARTIALLY_FILLED if filled else OPEN
            self._rest(taker)
            self.seq = seq = seq + 1
            append((ACCEPTED, seq, taker))
        return events

    def _fok_fillable(
        self, taker: Order, opp: _Side, limit_key: int, left: int | None, by_quote: bool
    ) -> bool:
        """Whether matching would fill the taker completely; mutates nothing.

        Walks the liquidity exactly as the matching loop would (same order of
        checks: price, funds, self-trade), so a True here guarantees a full fill.
        O(L log L) to order the crossing levels, plus the orders visited.
        """
        need = taker.remaining
        owner = taker.owner
        skip_own = self.stp == EXPIRE_MAKER
        levels = opp.levels
        filled = 0
        last_px = 0
        for key in opp.sorted_keys(limit_key):
            lvl = levels[key]
            px = lvl.price
            for maker in lvl.orders:
                if maker.status is CANCELLED:
                    continue
                qty = maker.remaining
                if not by_quote and qty > need:
                    qty = need
                if left is not None:
                    afford = left // px
                    if afford == 0:
                        # A buy by quote that can no longer afford a lot is complete.
                        return by_quote and filled > 0
                    if qty > afford:
                        qty = afford
                if maker.owner == owner:
                    if skip_own:
                        continue  # it would be expired, not traded with
                    return False  # the taker would be stopped here
                filled += qty
                last_px = px
                if left is not None:
                    left -= px * qty
                if not by_quote:
                    need -= qty
                    if need == 0:
                        return True
        return by_quote and filled > 0 and left < last_px

    # stops

    def _stops_of(self, side: int) -> SortedList:
        return self._buy_stops if side == BUY else self._sell_stops

    @staticmethod
    def _stop_entry(order: Order) -> tuple:
        key = order.stop_price if order.side == BUY else -order.stop_price
        return (key, order.seq, order)

    def _stop_holds(self, order: Order) -> bool:
        last = self.last_price
        if last is None:
            return False
        if order.side == BUY:
            return last >= order.stop_price
        return last <= order.stop_price

    def _place_stop(self, order: Order) -> list:
        """Reject a stop whose condition already holds, else keep it untriggered."""
        if self._stop_holds(order):
            return self._reject(order, STOP_WOULD_TRIGGER_IMMEDIATELY)
        self.seq = seq = self.seq + 1
        order.seq = seq  # before keying the entry: ties between stops go by seq
        order.status = UNTRIGGERED
        self._stops_of(order.side).add(self._stop_entry(order))
        self._stop_count += 1
        self._index[order.id] = order
        return [(ACCEPTED, seq, order)]

    def _run_stops(self, events: list) -> None:
        """Trigger every stop whose condition holds, in rounds, until none does.

        A round collects the stops that hold at the current last price: buy stops
        by ascending stop price (the price rose to them), sell stops by descending
        stop price (it fell to them), ties by seq; only before any trade ever can
        both sides trigger at once, and then buys go first. Each enters matching in
        turn with a ``triggered`` event whose seq becomes its time priority. Their
        trades may move the price: the next round sees the new last price.
        O(log S) per triggered stop plus its matching.
        """
        buy_stops = self._buy_stops
        sell_stops = self._sell_stops
        while True:
            last = self.last_price
            if last is None:
                return  # nothing traded yet: no stop can hold
            batch = []
            while buy_stops and buy_stops[0][0] <= last:
                batch.append(buy_stops.pop(0)[2])
            while sell_stops and -sell_stops[0][0] >= last:
                batch.append(sell_stops.pop(0)[2])
            if not batch:
                return
            self._stop_count -= len(batch)
            for order in batch:
                del self._index[order.id]
                self.seq = seq = self.seq + 1
                order.seq = seq
                events.append((TRIGGERED, seq, order))
                self._execute(order, events)


def _by_seq(order: Order) -> int:
    return order.seq


def _positive_int(value: object, what: str, minimum: int = 1) -> None:
    if value is None:
        raise ValueError(f"{what} is required")
    # Floats never enter the core: amounts are integer ticks, lots and units.
    if type(value) is not int:
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")


def _require(condition: bool, message: str) -> None:
    # Explicit raise rather than ``assert`` so check() still works under ``python -O``.
    if not condition:
        raise AssertionError(message)
