"""The engine's database side: rebuild books from PostgreSQL and record committed batches.

The hot write path speaks set-based SQL on Django's own connection (one
transaction per batch: `UPDATE ... FROM unnest(...)` for orders, `COPY` for
trades and outbox rows); the models stay in the ORM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

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
    """What the engine needs of an order row."""

    id: int
    market_id: int
    user_id: int
    side: str
    type: str
    time_in_force: str
    post_only: bool
    price: Decimal | None
    stop_price: Decimal | None
    quantity: Decimal | None
    quote_quantity: Decimal | None
    filled_quantity: Decimal
    filled_quote: Decimal
    fee_total: Decimal
    status: str
    reject_reason: str | None
    sequence: int | None
    hold_amount: Decimal
    cancel_requested: bool


_ORDER_COLUMNS = (
    "id, market_id, user_id, side, type, time_in_force, post_only, price, stop_price, quantity, "
    "quote_quantity, filled_quantity, filled_quote, fee_total, status, reject_reason, sequence, "
    "hold_amount, cancel_requested_at IS NOT NULL"
)


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
    # order id -> hold amount, for every order in the book (to size hold releases)
    holds: dict[int, Decimal] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """What applying one batch of commands changed, to be committed at once."""

    touched: dict[int, tuple[MarketBook, core.Order]] = field(default_factory=dict)
    trades: list[tuple[MarketBook, core.Trade]] = field(default_factory=list)
    markets: dict[int, MarketBook] = field(default_factory=dict)
    # filled after commit
    trade_ids: list[int] = field(default_factory=list)
    trade_rows: list[dict] = field(default_factory=list)
    released_order_ids: list[int] = field(default_factory=list)


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
    quote_unit = units.tick_size * units.lot_size
    quote_limit = None
    if side == core.BUY:
        # A buy never spends more than its hold; the hold is in quote.
        quote_limit = _floor_units(row.hold_amount, quote_unit)
    order = core.Order(
        row.id,
        row.user_id,
        side,
        KINDS[row.type],
        TIFS[row.time_in_force],
        price=units.price_to_ticks(row.price) if row.price is not None else None,
        quantity=units.qty_to_lots(row.quantity) if row.quantity is not None else None,
        stop_price=units.price_to_ticks(row.stop_price) if row.stop_price is not None else None,
        quote_limit=quote_limit,
        post_only=row.post_only,
    )
    if row.status != Order.Status.PENDING:
        order.filled = units.qty_to_lots(row.filled_quantity)
        order.filled_quote = _exact_units(row.filled_quote, quote_unit)
        fee_unit = (units.lot_size if side == core.BUY else quote_unit) / units.fee_scale
        order.fee = _exact_units(row.fee_total, fee_unit) if row.fee_total else 0
        order.remaining = (order.quantity - order.filled) if order.quantity is not None else 0
        order.seq = row.sequence or 0
        order.status = row.status
    return order


def orders_fetch(order_ids) -> dict[int, OrderRow]:
    if not order_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_ORDER_COLUMNS} FROM orders_order WHERE id = ANY(%s)", [list(order_ids)])
        return {row[0]: OrderRow(*row) for row in cursor.fetchall()}


def book_rebuild(market: Market) -> MarketBook:
    """Restore the market's book from its resting and untriggered orders, by sequence."""
    units = market_units(market)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders_order WHERE market_id = %s AND status = ANY(%s) ORDER BY sequence",
            [market.id, list(Order.RESTING_STATUSES)],
        )
        rows = [OrderRow(*row) for row in cursor.fetchall()]
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


def reconcile_candidates(market_ids: list[int], *, min_age_seconds: float) -> list[tuple[str, int, int]]:
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
            ORDER BY 3
            """,
            [market_ids, min_age_seconds, market_ids, list(Order.LIVE_STATUSES), min_age_seconds],
        )
        return cursor.fetchall()


def batch_commit(batch: Batch) -> None:
    """Write everything the batch changed in one transaction; raise LeaseLost if fenced out.

    Orders: absolute state (idempotent). Trades, settlements, hold releases:
    inserted once (a trade's (taker, step) key is unique: a replay cannot insert
    it twice). Each market's sequence moves forward only from what we last
    committed (a compare-and-set that fences out a stale owner).
    """
    now = datetime.now(UTC)
    with transaction.atomic():
        with connection.cursor() as cursor:
            trade_ids = _allocate_trade_ids(cursor, len(batch.trades))
            _update_orders(cursor, batch, now)
            _advance_markets(cursor, batch)
        raw = connection.connection
        with raw.cursor() as cursor:
            _copy_trades(cursor, batch, trade_ids, now)
            _copy_releases(cursor, batch, now)
    batch.trade_ids = trade_ids
    for market_book in batch.markets.values():
        market_book.committed_seq = market_book.book.seq


def _allocate_trade_ids(cursor, count: int) -> list[int]:
    if not count:
        return []
    cursor.execute("SELECT nextval('orders_trade_id_seq') FROM generate_series(1, %s)", [count])
    return [row[0] for row in cursor.fetchall()]


def _update_orders(cursor, batch: Batch, now: datetime) -> None:
    ids, statuses, reasons, filled, filled_quote, fees, seqs = [], [], [], [], [], [], []
    for order_id, (market_book, order) in batch.touched.items():
        units = market_book.units
        ids.append(order_id)
        statuses.append(order.status)
        reasons.append(order.reason if order.status in (core.EXPIRED, core.REJECTED, core.CANCELLED) else None)
        filled.append(units.lots_to_qty(order.filled))
        filled_quote.append(units.units_to_quote(order.filled_quote))
        fees.append(units.base_fee(order.fee) if order.side == core.BUY else units.quote_fee(order.fee))
        seqs.append(order.seq or None)
    if not ids:
        return
    cursor.execute(
        """
        UPDATE orders_order AS o
           SET status = v.status, reject_reason = v.reason, filled_quantity = v.filled,
               filled_quote = v.filled_quote, fee_total = v.fee,
               sequence = COALESCE(v.seq, o.sequence), updated_at = %s
          FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::numeric[], %s::numeric[],
                      %s::numeric[], %s::bigint[]) AS v(id, status, reason, filled, filled_quote, fee, seq)
         WHERE o.id = v.id
        """,
        [now, ids, statuses, reasons, filled, filled_quote, fees, seqs],
    )


def _advance_markets(cursor, batch: Batch) -> None:
    for market_book in batch.markets.values():
        book = market_book.book
        last_price = market_book.units.ticks_to_price(book.last_price) if book.last_price is not None else None
        cursor.execute(
            "UPDATE marketdata_market SET last_sequence = %s, last_price = %s WHERE id = %s AND last_sequence = %s",
            [book.seq, last_price, market_book.market_id, market_book.committed_seq],
        )
        if cursor.rowcount != 1:
            raise LeaseLost(market_book.symbol)


_TRADE_COLUMNS = (
    "id, market_id, sequence, price, quantity, quote_quantity, taker_side, maker_order_id, "
    "taker_order_id, taker_step, buyer_id, seller_id, buyer_fee, seller_fee, maker_fee_rate, "
    "taker_fee_rate, created_at"
)


def _copy_trades(cursor, batch: Batch, trade_ids: list[int], now: datetime) -> None:
    if not batch.trades:
        return
    steps: dict[int, int] = {}
    rows = []
    for trade_id, (market_book, trade) in zip(trade_ids, batch.trades, strict=True):
        units = market_book.units
        taker, maker = trade.taker, trade.maker
        step = steps[taker.id] = steps.get(taker.id, -1) + 1
        taker_buys = taker.side == core.BUY
        buyer, seller = (taker, maker) if taker_buys else (maker, taker)
        buyer_fee_units, seller_fee_units = (
            (trade.taker_fee, trade.maker_fee) if taker_buys else (trade.maker_fee, trade.taker_fee)
        )
        row = {
            "id": trade_id,
            "market_id": market_book.market_id,
            "sequence": trade.seq,
            "price": units.ticks_to_price(trade.price),
            "quantity": units.lots_to_qty(trade.quantity),
            "quote_quantity": units.units_to_quote(trade.quote),
            "taker_side": SIDE_NAMES[taker.side],
            "maker_order_id": maker.id,
            "taker_order_id": taker.id,
            "taker_step": step,
            "buyer_id": buyer.owner,
            "seller_id": seller.owner,
            "buyer_fee": units.base_fee(buyer_fee_units),
            "seller_fee": units.quote_fee(seller_fee_units),
            "maker_fee_rate": units.maker_fee,
            "taker_fee_rate": units.taker_fee,
            "created_at": now,
        }
        rows.append(row)
    # A taker's steps continue across batches only if it took before: it cannot
    # (a taker is placed once), so numbering from 0 per batch is stable on replay.
    with cursor.copy(f"COPY orders_trade ({_TRADE_COLUMNS}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(tuple(row.values()))
    with cursor.copy(
        "COPY settlement_settlement (trade_id, status, attempts, next_attempt_at, last_error, created_at, resolution_note) FROM STDIN"
    ) as copy:
        for row in rows:
            copy.write_row((row["id"], "pending", 0, now, "", now, ""))
    batch.trade_rows = rows


def _copy_releases(cursor, batch: Batch, now: datetime) -> None:
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
    with cursor.copy(
        "COPY settlement_holdrelease (order_id, asset, amount, status, attempts, next_attempt_at, last_error, created_at) FROM STDIN"
    ) as copy:
        for order_id, asset, rest in releases:
            copy.write_row((order_id, asset, rest, "pending", 0, now, "", now))
    batch.released_order_ids = [order_id for order_id, _, _ in releases]
