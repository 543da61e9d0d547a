"""The engine's database side: rebuild books from PostgreSQL and record committed batches.

The hot write path speaks set-based SQL on Django's own connection (one
transaction per batch: `UPDATE ... FROM unnest(...)` for orders, `COPY` for
trades and outbox rows); the models stay in the ORM. A batch is rendered
(`batch_prepare`, right after matching) apart from being written (`batch_write`,
possibly on the engine's committer thread, with that thread's connection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

from django.db import connection, transaction

from marketdata.models import Market
from matching import core
from matching.core import MarketUnits, OrderBook
from orders.models import Order

SIDES = {"buy": core.BUY, "sell": core.SELL}
SIDE_NAMES = {core.BUY: "buy", core.SELL: "sell"}
KINDS = {"limit": core.LIMIT, "market": core.MARKET, "stop_limit": core.STOP_LIMIT, "stop_market": core.STOP_MARKET}
TIFS = {"gtc": core.GTC, "ioc": core.IOC, "fok": core.FOK}
STPS = {"expire_taker": core.EXPIRE_TAKER, "expire_maker": core.EXPIRE_MAKER, "expire_both": core.EXPIRE_BOTH}
FINAL = frozenset(Order.FINAL_STATUSES)


class LeaseLost(Exception):
    """Another engine advanced this market's sequence: we are no longer its owner."""


@dataclass(slots=True)
class OrderRow:
    """What the engine needs of an order row; amounts already in the market's integer units."""

    id: int
    market_id: int
    user_id: int
    side: str
    type: str
    time_in_force: str
    post_only: bool
    price: int | None  # ticks
    stop_price: int | None  # ticks
    quantity: int | None  # lots
    filled: int  # lots
    filled_quote: int  # quote units
    fee_total: Decimal
    status: str
    sequence: int | None
    hold_amount: Decimal
    hold_units: int  # the hold in whole quote units (what a buy may spend)
    cancel_requested: bool


# PostgreSQL turns amounts into integer units (exact numeric division; numeric,
# not bigint: a price in ticks can exceed 2**63 on a fine tick).
_ORDER_SELECT = """
    SELECT o.id, o.market_id, o.user_id, o.side, o.type, o.time_in_force, o.post_only,
           (o.price / m.tick_size)::numeric(60), (o.stop_price / m.tick_size)::numeric(60),
           (o.quantity / m.lot_size)::numeric(60), (o.filled_quantity / m.lot_size)::numeric(60),
           (o.filled_quote / (m.tick_size * m.lot_size))::numeric(60), o.fee_total, o.status, o.sequence,
           o.hold_amount, floor(o.hold_amount / (m.tick_size * m.lot_size))::numeric(60),
           o.cancel_requested_at IS NOT NULL
      FROM orders_order o JOIN marketdata_market m ON m.id = o.market_id
"""


class TextUnits:
    """Integer units -> fixed-point text by integer arithmetic (COPY rows, replies).

    Same values as MarketUnits' Decimals, at the unit's own scale, without
    building a Decimal per amount on the engine's hot path.
    """

    __slots__ = ("price", "qty", "quote", "base_fee", "quote_fee")

    def __init__(self, units: MarketUnits):
        tick_c, tick_e = _int_parts(units.tick_size.normalize())
        lot_c, lot_e = _int_parts(units.lot_size.normalize())
        fee_places = len(str(units.fee_scale)) - 1
        self.price = _formatter(tick_c, tick_e)
        self.qty = _formatter(lot_c, lot_e)
        self.quote = _formatter(tick_c * lot_c, tick_e + lot_e)
        self.base_fee = _formatter(lot_c, lot_e - fee_places)
        self.quote_fee = _formatter(tick_c * lot_c, tick_e + lot_e - fee_places)


def _formatter(coefficient: int, exponent: int):
    if exponent >= 0:
        multiplier = coefficient * 10**exponent
        return lambda n: str(n * multiplier)
    places = -exponent
    pad = "0" * places

    def fmt(n: int) -> str:
        value = n * coefficient
        if value < 0:
            return "-" + fmt(-n)
        digits = str(value)  # then the point goes in by slicing (cheaper than divmod and a format spec)
        if len(digits) <= places:
            digits = (pad + digits)[-places - 1 :]
        return f"{digits[:-places]}.{digits[-places:]}"

    return fmt


@dataclass(slots=True)
class MarketBook:
    """One owned market: its book, its units, and what the DB last committed for it."""

    market_id: int
    symbol: str
    base_asset: str
    quote_asset: str
    units: MarketUnits
    book: OrderBook
    committed_seq: int
    prepared_seq: int = 0  # the sequence the last prepared batch moves it to (the next batch's CAS)
    # order id -> hold amount, for every order in the book (to size hold releases)
    holds: dict[int, Decimal] = field(default_factory=dict)
    text: TextUnits | None = None
    # SQL multipliers from integer units back to amounts
    lot: Decimal = Decimal(0)
    quote_unit: Decimal = Decimal(0)
    base_fee_unit: Decimal = Decimal(0)
    quote_fee_unit: Decimal = Decimal(0)
    maker_fee_text: str = ""
    taker_fee_text: str = ""

    def __post_init__(self):
        self.prepared_seq = self.committed_seq
        units = self.units
        self.text = TextUnits(units)
        self.lot = units.lot_size
        self.quote_unit = units.tick_size * units.lot_size
        self.base_fee_unit = units.lot_size / units.fee_scale
        self.quote_fee_unit = self.quote_unit / units.fee_scale
        self.maker_fee_text = str(units.maker_fee)
        self.taker_fee_text = str(units.taker_fee)


@dataclass(slots=True)
class Batch:
    """What applying one batch of commands changed, to be committed at once."""

    touched: dict[int, tuple[MarketBook, core.Order]] = field(default_factory=dict)
    trades: list[tuple[MarketBook, tuple]] = field(default_factory=list)  # (book, trade event)
    markets: dict[int, MarketBook] = field(default_factory=dict)


@dataclass(slots=True)
class Commit:
    """One batch rendered for the database: it no longer reads the (moving) books."""

    now: datetime
    orders: list[tuple[MarketBook, list]] = field(default_factory=list)  # per market: update columns
    # (market, sequence the previous batch left, sequence after this one, last price)
    markets: list[tuple[MarketBook, int, int, Decimal | None]] = field(default_factory=list)
    copies: list[tuple[str, bytes]] = field(default_factory=list)  # (COPY statement, rows)
    trade_ids: list[int] = field(default_factory=list)
    trade_rows: list[TradeRow] = field(default_factory=list)
    released_order_ids: list[int] = field(default_factory=list)

    @property
    def at(self) -> str:
        """`now` as text (COPY rows, replies)."""
        return self.now.isoformat()


def _exact_units(value: Decimal, unit: Decimal) -> int:
    """value / unit as an exact integer (raises if it is not one)."""
    coefficient, exponent = _int_parts(value)
    unit_coefficient, unit_exponent = _int_parts(unit)
    shift = exponent - unit_exponent
    numerator = coefficient * 10**shift if shift >= 0 else coefficient
    denominator = unit_coefficient if shift >= 0 else unit_coefficient * 10**-shift
    count, rest = divmod(numerator, denominator)
    if rest:
        raise ValueError(f"{value} is not a multiple of {unit}")
    return count


def _floor_units(value: Decimal, unit: Decimal) -> int:
    coefficient, exponent = _int_parts(value)
    unit_coefficient, unit_exponent = _int_parts(unit)
    shift = exponent - unit_exponent
    numerator = coefficient * 10**shift if shift >= 0 else coefficient
    denominator = unit_coefficient if shift >= 0 else unit_coefficient * 10**-shift
    return numerator // denominator


def _int_parts(value: Decimal) -> tuple[int, int]:
    sign, digits, exponent = value.as_tuple()
    coefficient = int("".join(map(str, digits))) if digits else 0
    return (-coefficient if sign else coefficient), exponent


def market_units(market: Market) -> MarketUnits:
    return MarketUnits(market.tick_size, market.lot_size, market.maker_fee, market.taker_fee)


def core_order(row: OrderRow, units: MarketUnits) -> core.Order:
    """The core's integer form of an order row (state included, for rebuilds)."""
    side = SIDES[row.side]
    order = core.Order(
        row.id,
        row.user_id,
        side,
        KINDS[row.type],
        TIFS[row.time_in_force],
        price=row.price,
        quantity=row.quantity,
        stop_price=row.stop_price,
        # A buy never spends more than its hold; the hold is in quote.
        quote_limit=row.hold_units if side == core.BUY else None,
        post_only=row.post_only,
    )
    if row.status != Order.Status.PENDING:
        order.filled = row.filled
        order.filled_quote = row.filled_quote
        if row.fee_total:
            fee_unit = units.lot_size if side == core.BUY else units.tick_size * units.lot_size
            order.fee = _exact_units(row.fee_total * units.fee_scale, fee_unit)
        order.remaining = (order.quantity - order.filled) if order.quantity is not None else 0
        order.seq = row.sequence or 0
        order.status = row.status
    return order


def _order_row(row: tuple) -> OrderRow:
    (order_id, market_id, user_id, side, kind, tif, post_only, price, stop, qty, filled, filled_quote,
     fee_total, status, sequence, hold_amount, hold_units, cancel_requested) = row  # fmt: skip
    return OrderRow(
        order_id, market_id, user_id, side, kind, tif, post_only,
        None if price is None else int(price), None if stop is None else int(stop),
        None if qty is None else int(qty), int(filled), int(filled_quote), fee_total, status, sequence,
        hold_amount, int(hold_units), cancel_requested,
    )  # fmt: skip


def orders_fetch(order_ids) -> dict[int, OrderRow]:
    if not order_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_ORDER_SELECT + " WHERE o.id = ANY(%s::bigint[])", [_int_array(order_ids)])
        return {row[0]: _order_row(row) for row in cursor.fetchall()}


def book_rebuild(market: Market) -> MarketBook:
    """Restore the market's book from its resting and untriggered orders, by sequence."""
    units = market_units(market)
    with connection.cursor() as cursor:
        cursor.execute(
            _ORDER_SELECT + " WHERE o.market_id = %s AND o.status = ANY(%s) ORDER BY o.sequence",
            [market.id, list(Order.RESTING_STATUSES)],
        )
        rows = [_order_row(row) for row in cursor.fetchall()]
    orders = [core_order(row, units) for row in rows]
    book = OrderBook.restore(
        orders,
        **units.book_kwargs(),
        stp=STPS[market.stp_mode],
        last_price=units.price_to_ticks(market.last_price) if market.last_price is not None else None,
        seq=market.last_sequence,
    )
    return MarketBook(
        market_id=market.id,
        symbol=market.symbol,
        base_asset=market.base_asset,
        quote_asset=market.quote_asset,
        units=units,
        book=book,
        committed_seq=market.last_sequence,
        holds={row.id: row.hold_amount for row in rows},
    )


def reconcile_candidates(market_ids: list[int], *, min_age_seconds: float, limit: int) -> list[tuple[str, int, int]]:
    """Commands the DB holds but the engine may never have heard of (Redis lost them).

    Returns (kind, market_id, order_id): pending orders to place, recorded cancels to apply.
    """
    if not market_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT 'place', market_id, id FROM orders_order
             WHERE market_id = ANY(%s) AND status = 'pending'
               AND created_at < now() - make_interval(secs => %s)
            UNION ALL
            SELECT 'cancel', market_id, id FROM orders_order
             WHERE market_id = ANY(%s) AND cancel_requested_at IS NOT NULL
               AND status = ANY(%s) AND cancel_requested_at < now() - make_interval(secs => %s)
            ORDER BY 3 LIMIT %s
            """,
            [market_ids, min_age_seconds, market_ids, list(Order.LIVE_STATUSES), min_age_seconds, limit],
        )
        return cursor.fetchall()


def batch_prepare(batch: Batch) -> Commit:
    """Render what the batch changed as SQL parameters and COPY text (no write yet).

    Done right after matching, before the books move on: the commit may then run
    while the next batch is matched. Trade ids are drawn from the table's sequence
    here (a gap when the commit fails is harmless, as with any sequence).
    """
    now = datetime.now(UTC)
    commit = Commit(now=now)
    with connection.cursor() as cursor:
        commit.trade_ids = _allocate_trade_ids(cursor, len(batch.trades))
    _render_orders(batch, commit)
    _render_trades(batch, commit)
    _render_releases(batch, commit)
    for market_book in batch.markets.values():
        book = market_book.book
        last_price = market_book.units.ticks_to_price(book.last_price) if book.last_price is not None else None
        commit.markets.append((market_book, market_book.prepared_seq, book.seq, last_price))
        market_book.prepared_seq = book.seq
    return commit


def batch_write(commit: Commit) -> None:
    """Write a prepared batch in one transaction on this thread's connection; raise LeaseLost if fenced out.

    Orders: absolute state (idempotent). Trades, settlements, hold releases:
    inserted once (a trade's (taker, step) key is unique: a replay cannot insert
    it twice). Each market's sequence moves forward only from what the previous
    batch set (a compare-and-set that fences out a stale owner).
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            _advance_markets(cursor, commit)
            for market_book, columns in commit.orders:
                _update_orders(cursor, market_book, columns, commit.now)
        raw = connection.connection
        with raw.cursor() as cursor:
            for statement, text in commit.copies:
                with cursor.copy(statement) as copy:
                    copy.write(text)


def batch_committed(commit: Commit) -> None:
    for market_book, _expected, seq, _last_price in commit.markets:
        market_book.committed_seq = seq


def _allocate_trade_ids(cursor, count: int) -> list[int]:
    if not count:
        return []
    cursor.execute("SELECT nextval('orders_trade_id_seq') FROM generate_series(1, %s)", [count])
    return [row[0] for row in cursor.fetchall()]


def _render_orders(batch: Batch, commit: Commit) -> None:
    """Absolute state of every touched order, in integer units, one column list per market."""
    per_market: dict[int, tuple[MarketBook, list]] = {}
    # By id: rows are then locked in one order whoever else updates several of them.
    for order_id, (market_book, order) in sorted(batch.touched.items()):
        entry = per_market.get(market_book.market_id)
        if entry is None:
            entry = per_market[market_book.market_id] = (market_book, [[], [], [], [], [], [], []])
        ids, statuses, reasons, filled, filled_quote, fees, seqs = entry[1]
        status = order.status
        ids.append(order_id)
        statuses.append(status)
        reasons.append(order.reason if status in _REASONED else "NULL")
        filled.append(order.filled)
        filled_quote.append(order.filled_quote)
        fees.append(order.fee)
        seqs.append(order.seq or "NULL")
    # Array parameters as literals: a few joins here instead of psycopg quoting each element.
    commit.orders = [
        (market_book, [_int_array(ids), _word_array(statuses), _word_array(reasons), _int_array(filled),
                       _int_array(filled_quote), _int_array(fees), _int_array(seqs)])
        for market_book, (ids, statuses, reasons, filled, filled_quote, fees, seqs) in per_market.values()
    ]  # fmt: skip


def _update_orders(cursor, market_book: MarketBook, columns: list, now: datetime) -> None:
    """One market's touched orders, scaled from integer units in SQL.

    `o.id = ANY(ids)` besides the join: it makes the planner reach the rows by the
    primary key (an unnest's row count is a guess, and stale table statistics had it
    hash-join against a sequential scan of the whole table).
    """
    cursor.execute(
        """
        UPDATE orders_order AS o
           SET status = v.status, reject_reason = v.reason, filled_quantity = v.filled * %s,
               filled_quote = v.filled_quote * %s,
               fee_total = v.fee * CASE WHEN o.side = 'buy' THEN %s ELSE %s END,
               sequence = COALESCE(v.seq, o.sequence), updated_at = %s
          FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::numeric[], %s::numeric[], %s::numeric[],
                      %s::bigint[]) AS v(id, status, reason, filled, filled_quote, fee, seq)
         WHERE o.id = v.id AND o.id = ANY(%s::bigint[])
        """,
        [market_book.lot, market_book.quote_unit, market_book.base_fee_unit, market_book.quote_fee_unit, now,
         *columns, columns[0]],
    )  # fmt: skip


_REASONED = frozenset((core.EXPIRED, core.REJECTED, core.CANCELLED))


def _advance_markets(cursor, commit: Commit) -> None:
    for market_book, expected, seq, last_price in commit.markets:
        cursor.execute(
            "UPDATE marketdata_market SET last_sequence = %s, last_price = %s WHERE id = %s AND last_sequence = %s",
            [seq, last_price, market_book.market_id, expected],
        )
        if cursor.rowcount != 1:
            raise LeaseLost(market_book.symbol)


class TradeRow(NamedTuple):
    """A trade as COPY writes it (field order = _TRADE_COLUMNS)."""

    id: int
    market_id: int
    sequence: int
    price: str
    quantity: str
    quote_quantity: str
    taker_side: str
    maker_order_id: int
    taker_order_id: int
    taker_step: int
    buyer_id: int
    seller_id: int
    buyer_fee: str
    seller_fee: str
    maker_fee_rate: str
    taker_fee_rate: str


_TRADE_COLUMNS = (
    "id, market_id, sequence, price, quantity, quote_quantity, taker_side, maker_order_id, "
    "taker_order_id, taker_step, buyer_id, seller_id, buyer_fee, seller_fee, maker_fee_rate, "
    "taker_fee_rate, created_at"
)


def _render_trades(batch: Batch, commit: Commit) -> None:
    if not batch.trades:
        return
    steps: dict[int, int] = {}
    rows = []
    for trade_id, (market_book, trade) in zip(commit.trade_ids, batch.trades, strict=True):
        text = market_book.text
        _, seq, maker, taker, price, quantity, quote, maker_fee, taker_fee = trade
        step = steps[taker.id] = steps.get(taker.id, -1) + 1
        if taker.side == core.BUY:
            buyer, seller, buyer_fee, seller_fee = taker, maker, taker_fee, maker_fee
        else:
            buyer, seller, buyer_fee, seller_fee = maker, taker, maker_fee, taker_fee
        rows.append(
            TradeRow(
                trade_id, market_book.market_id, seq, text.price(price), text.qty(quantity),
                text.quote(quote), SIDE_NAMES[taker.side], maker.id, taker.id, step, buyer.owner,
                seller.owner, text.base_fee(buyer_fee), text.quote_fee(seller_fee), market_book.maker_fee_text,
                market_book.taker_fee_text,
            )
        )
    # A taker's steps continue across batches only if it took before: it cannot
    # (a taker is placed once), so numbering from 0 per batch is stable on replay.
    # COPY text built here: one write per table instead of psycopg's per-value dumping.
    at = commit.at
    commit.copies.append((
        f"COPY orders_trade ({_TRADE_COLUMNS}) FROM STDIN",
        _copy_bytes("\t".join(map(str, row)) + f"\t{at}\n" for row in rows),
    ))  # fmt: skip
    commit.copies.append((
        "COPY settlement_settlement (trade_id, status, attempts, next_attempt_at, last_error, created_at,"
        " resolution_note) FROM STDIN",
        _copy_bytes(f"{trade_id}\tpending\t0\t{at}\t\t{at}\t\n" for trade_id in commit.trade_ids),
    ))  # fmt: skip
    commit.trade_rows = rows


def _render_releases(batch: Batch, commit: Commit) -> None:
    """What final orders did not spend of their hold goes back (one outbox row per order)."""
    releases = []
    for order_id, (market_book, order) in batch.touched.items():
        if order.status not in FINAL:
            continue
        hold = market_book.holds.pop(order_id, None)
        if hold is None:
            continue
        units = market_book.units
        captured = units.units_to_quote(order.filled_quote) if order.side == core.BUY else units.lots_to_qty(order.filled)
        rest = hold - captured
        if rest < 0:
            raise AssertionError(f"order {order_id} captured {captured} beyond its hold {hold}")
        if rest > 0:
            asset = market_book.quote_asset if order.side == core.BUY else market_book.base_asset
            releases.append((order_id, asset, rest))
    if not releases:
        return
    at = commit.at
    commit.copies.append((
        "COPY settlement_holdrelease (order_id, asset, amount, status, attempts, next_attempt_at, last_error,"
        " created_at) FROM STDIN",
        _copy_bytes(f"{order_id}\t{asset}\t{rest:f}\tpending\t0\t{at}\t\t{at}\n" for order_id, asset, rest in releases),
    ))  # fmt: skip
    commit.released_order_ids = [order_id for order_id, _, _ in releases]


def _int_array(values) -> str:
    """A PostgreSQL array literal of integers (and "NULL"s)."""
    return "{" + ",".join(map(str, values)) + "}"


def _word_array(values) -> str:
    """A PostgreSQL array literal of words ([a-z_] statuses and reasons; "NULL" is NULL)."""
    for v in set(values):
        if not _WORD.fullmatch(v):
            raise ValueError(f"not a plain word: {v!r}")
    return "{" + ",".join(values) + "}"


_WORD = re.compile(r"[a-z_]+|NULL")


def _copy_bytes(lines) -> bytes:
    """COPY rows given as text lines (values contain no tab, newline or backslash)."""
    return "".join(lines).encode()
