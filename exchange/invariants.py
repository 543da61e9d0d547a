"""The exchange's invariants, as queries: used by integration tests, `make chaos` and `make bench`.

Each check returns a list of human-readable violations (empty = holds). Some
only hold once the system is quiescent (no command in flight, the outbox
drained): `check_all(quiescent=True)` runs those too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal

from django.db import connection

from marketdata.models import Market
from orders.models import Order


@dataclass
class Report:
    violations: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def add(self, name: str, found: list[str]) -> None:
        self.violations[name] = found

    def summary(self) -> dict[str, int]:
        return {name: len(found) for name, found in self.violations.items()}


# Sums and differences of numeric(38, 18) values need more than the default 28 digits.
_EXACT = Context(prec=80)


def _rows(sql: str, params=None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


def no_order_left_pending(*, older_than_seconds: float = 10) -> list[str]:
    rows = _rows(
        "SELECT id FROM orders_order WHERE status = 'pending' AND created_at < now() - make_interval(secs => %s)",
        [older_than_seconds],
    )
    return [f"order {order_id} still pending" for (order_id,) in rows]


def no_duplicate_trade() -> list[str]:
    rows = _rows(
        "SELECT taker_order_id, taker_step, count(*) FROM orders_trade GROUP BY 1, 2 HAVING count(*) > 1"
    )
    return [f"trade key ({taker}, {step}) appears {n} times" for taker, step, n in rows]


def fills_match_trades() -> list[str]:
    """Each order's filled quantity (and quote) equals the sum of its trades, never above its quantity."""
    rows = _rows(
        """
        WITH fills AS (
            SELECT order_id, sum(quantity) AS qty, sum(quote_quantity) AS quote FROM (
                SELECT maker_order_id AS order_id, quantity, quote_quantity FROM orders_trade
                UNION ALL
                SELECT taker_order_id, quantity, quote_quantity FROM orders_trade
            ) legs GROUP BY order_id
        )
        SELECT o.id, o.filled_quantity, coalesce(f.qty, 0), o.filled_quote, coalesce(f.quote, 0), o.quantity
          FROM orders_order o LEFT JOIN fills f ON f.order_id = o.id
         WHERE o.filled_quantity <> coalesce(f.qty, 0)
            OR o.filled_quote <> coalesce(f.quote, 0)
            OR (o.quantity IS NOT NULL AND o.filled_quantity > o.quantity)
        """
    )
    return [f"order {oid}: filled {fq} vs trades {tq}, quote {fqq} vs {tqq}, quantity {q}" for oid, fq, tq, fqq, tqq, q in rows]


def no_self_trade() -> list[str]:
    rows = _rows("SELECT id FROM orders_trade WHERE buyer_id = seller_id")
    return [f"trade {trade_id} is a self-trade" for (trade_id,) in rows]


def no_negative_balance() -> list[str]:
    rows = _rows("SELECT owner, asset, available, held FROM wallet_account WHERE available < 0 OR held < 0")
    rows += _rows(
        "SELECT key, '', amount - captured - released, 0 FROM wallet_hold WHERE captured + released > amount OR captured < 0 OR released < 0"
    )
    return [f"{owner} {asset}: available {available}, held {held}" for owner, asset, available, held in rows]


def funds_conserved() -> list[str]:
    """For each asset: all balances (users and fee account) == deposits − withdrawals (+ staff adjustments)."""
    from settlement.clients.wallet import wallet_client

    return [
        f"{asset}: accounts hold {t.available + t.held}, deposits {t.deposits} − withdrawals {t.withdrawals} + adjustments {t.adjustments}"
        for asset, t in wallet_client().totals().items()
        if not t.balanced
    ]


def holds_match_open_orders() -> list[str]:
    """Quiescent only: what a user holds is exactly the unused holds of their live orders."""
    expected: dict[tuple[str, str], Decimal] = {}
    for order in Order.objects.filter(status__in=Order.LIVE_STATUSES).only(
        "user_id", "side", "hold_asset", "hold_amount", "filled_quantity", "filled_quote"
    ):
        captured = order.filled_quote if order.side == Order.Side.BUY else order.filled_quantity
        key = (f"user:{order.user_id}", order.hold_asset)
        expected[key] = _EXACT.add(expected.get(key, Decimal(0)), _EXACT.subtract(order.hold_amount, captured))
    actual = {
        (owner, asset): held
        for owner, asset, held in _rows("SELECT owner, asset, held FROM wallet_account WHERE owner LIKE 'user:%%'")
    }
    problems = []
    for key in set(expected) | set(actual):
        if expected.get(key, Decimal(0)) != actual.get(key, Decimal(0)):
            problems.append(f"{key[0]} {key[1]}: held {actual.get(key, 0)}, open orders need {expected.get(key, 0)}")
    return problems


def outbox_drained() -> list[str]:
    rows = _rows(
        "SELECT 'settlement', status, count(*) FROM settlement_settlement WHERE status <> 'settled' GROUP BY status "
        "UNION ALL SELECT 'release', status, count(*) FROM settlement_holdrelease WHERE status <> 'done' GROUP BY status"
    )
    return [f"{n} {what} rows {status}" for what, status, n in rows]


def books_consistent() -> list[str]:
    """The book rebuilt from the DB is sound (not crossed, quantities add up) and equals
    the engine's published snapshot (quiescent only)."""
    from matching.selectors import book_snapshot
    from matching.services import book_rebuild

    problems = []
    for market in Market.objects.all():
        try:
            rebuilt = book_rebuild(market).book
            rebuilt.check()
        except (AssertionError, ValueError) as exc:
            problems.append(f"{market.symbol}: rebuilt book is inconsistent: {exc}")
            continue
        snapshot = book_snapshot(market.symbol)
        if snapshot is None:
            continue
        bids, asks = rebuilt.depth(1000)
        if [list(level) for level in bids] != snapshot["bids"] or [list(level) for level in asks] != snapshot["asks"]:
            problems.append(f"{market.symbol}: engine snapshot differs from the book rebuilt from the DB")
    return problems


def no_replayed_trade() -> list[str]:
    """A replayed command must not add trades under new keys either: each engine sequence is
    one event (so one trade), and a maker meets a given taker in one trade at most (a taker
    sweeps a maker once, in the one batch that places it)."""
    rows = _rows("SELECT market_id, sequence, count(*) FROM orders_trade GROUP BY 1, 2 HAVING count(*) > 1")
    problems = [f"market {market}: engine sequence {seq} carries {n} trades" for market, seq, n in rows]
    rows = _rows("SELECT maker_order_id, taker_order_id, count(*) FROM orders_trade GROUP BY 1, 2 HAVING count(*) > 1")
    problems += [f"maker {maker} and taker {taker} traded {n} times" for maker, taker, n in rows]
    return problems


def statuses_match_fills() -> list[str]:
    """An order's status agrees with its fills: `filled` is all of it, `open`/`pending`/
    `untriggered` none, `partially_filled` some; a cancelled, expired or rejected order
    was never completely filled (it cannot be both filled and cancelled)."""
    rows = _rows(
        """
        SELECT id, status, filled_quantity, quantity FROM orders_order
         WHERE (status IN ('pending', 'untriggered', 'open') AND (filled_quantity <> 0 OR filled_quote <> 0))
            OR (quantity IS NOT NULL AND status = 'filled' AND filled_quantity <> quantity)
            OR (quantity IS NULL AND status = 'filled' AND filled_quantity = 0)
            OR (status = 'partially_filled' AND (filled_quantity = 0 OR filled_quantity >= coalesce(quantity, filled_quantity + 1)))
            OR (quantity IS NOT NULL AND status IN ('cancelled', 'expired', 'rejected') AND filled_quantity >= quantity)
        """
    )
    return [f"order {oid}: status {status} with filled {filled} of {quantity}" for oid, status, filled, quantity in rows]


def trades_exact() -> list[str]:
    """Every trade's amounts are exact (PostgreSQL numeric arithmetic, no rounding): quote =
    price × quantity; the buyer's fee = quantity × its rate (in base), the seller's =
    quote × its rate (in quote); the rates are the market's maker/taker rates by role."""
    rows = _rows(
        """
        SELECT id, price, quantity, quote_quantity, buyer_fee, seller_fee, taker_side, maker_fee_rate, taker_fee_rate
          FROM orders_trade
         WHERE quote_quantity <> price * quantity
            OR buyer_fee <> quantity * CASE WHEN taker_side = 'buy' THEN taker_fee_rate ELSE maker_fee_rate END
            OR seller_fee <> quote_quantity * CASE WHEN taker_side = 'sell' THEN taker_fee_rate ELSE maker_fee_rate END
            OR quantity <= 0 OR price <= 0
        """
    )
    return [
        f"trade {tid}: {qty} @ {price} = {quote} (exact {_EXACT.multiply(price, qty)}), fees buyer {bfee} seller {sfee}, "
        f"taker {side}, rates maker {mrate} taker {trate}"
        for tid, price, qty, quote, bfee, sfee, side, mrate, trate in rows
    ]


def captures_within_holds() -> list[str]:
    """No order spends more than it held: a buy's filled quote, a sell's filled quantity."""
    rows = _rows(
        """
        SELECT id, side, hold_amount, filled_quote, filled_quantity FROM orders_order
         WHERE (side = 'buy' AND filled_quote > hold_amount) OR (side = 'sell' AND filled_quantity > hold_amount)
        """
    )
    return [f"order {oid} ({side}) holds {hold}, filled quote {fq}, quantity {fqty}" for oid, side, hold, fq, fqty in rows]


def holds_match_orders() -> list[str]:
    """Quiescent only, per order (finer than `holds_match_open_orders`): the wallet hold
    `order:<id>` is what the order reserved; a live order still holds exactly what its
    fills did not capture; an ended order holds nothing (no stuck hold); and no hold of
    an order that was never created keeps funds."""
    rows = _rows(
        """
        SELECT o.id, o.status, o.side, o.hold_amount, o.filled_quote, o.filled_quantity,
               h.amount, h.captured, h.released
          FROM orders_order o LEFT JOIN wallet_hold h ON h.key = 'order:' || o.id
        """
    )
    live = set(Order.LIVE_STATUSES)
    problems = []
    for oid, status, side, hold_amount, filled_quote, filled_qty, amount, captured, released in rows:
        spent = filled_quote if side == "buy" else filled_qty
        if amount is None:
            if hold_amount:
                problems.append(f"order {oid}: holds {hold_amount} but the wallet has no hold order:{oid}")
            continue
        remaining = _EXACT.subtract(_EXACT.subtract(amount, captured), released)
        if amount != hold_amount:
            problems.append(f"order {oid}: order says hold {hold_amount}, wallet hold is {amount}")
        if captured != spent:
            problems.append(f"order {oid} ({status}): fills spent {spent}, the wallet captured {captured}")
        if status in live:
            needed = _EXACT.subtract(hold_amount, spent)
            if remaining != needed:
                problems.append(f"order {oid} ({status}): wallet hold has {remaining} left, the order needs {needed}")
        elif remaining != 0:
            problems.append(f"order {oid} ({status}): stuck hold, {remaining} still held")
    orphans = _rows(
        """
        SELECT h.key, h.amount - h.captured - h.released FROM wallet_hold h
         WHERE h.key LIKE 'order:%%' AND h.amount - h.captured - h.released <> 0
           AND NOT EXISTS (SELECT 1 FROM orders_order o WHERE 'order:' || o.id = h.key)
        """
    )
    problems += [f"hold {key} of no order still holds {left}" for key, left in orphans]
    return problems


def balances_match_trades() -> list[str]:
    """Settled only, per wallet account: its total (available + held) is exactly what came in
    from outside (deposits, withdrawals, staff adjustments) plus the effect of every
    *settled* trade (the buyer gets quantity − fee and pays quote; the seller gets quote −
    fee and pays quantity; the fee account gets both fees). Money moved twice, or moved
    for a trade not marked settled, or not moved for one that is, shows here."""
    from django.conf import settings

    rows = _rows(
        """
        WITH outside AS (
            SELECT a.owner, a.asset, e.amount
              FROM wallet_entry e
              JOIN wallet_operation o ON o.id = e.operation_id
              JOIN wallet_account a ON a.id = e.account_id
             WHERE o.kind IN ('deposit', 'withdrawal', 'adjustment')
        ), settled AS (
            SELECT t.buyer_id, t.seller_id, t.quantity, t.quote_quantity, t.buyer_fee, t.seller_fee,
                   m.base_asset, m.quote_asset
              FROM orders_trade t
              JOIN settlement_settlement s ON s.trade_id = t.id AND s.status = 'settled'
              JOIN marketdata_market m ON m.id = t.market_id
        ), moves AS (
            SELECT owner, asset, amount FROM outside
            UNION ALL SELECT 'user:' || buyer_id, base_asset, quantity - buyer_fee FROM settled
            UNION ALL SELECT 'user:' || buyer_id, quote_asset, -quote_quantity FROM settled
            UNION ALL SELECT 'user:' || seller_id, base_asset, -quantity FROM settled
            UNION ALL SELECT 'user:' || seller_id, quote_asset, quote_quantity - seller_fee FROM settled
            UNION ALL SELECT %s, base_asset, buyer_fee FROM settled
            UNION ALL SELECT %s, quote_asset, seller_fee FROM settled
        ), expected AS (
            SELECT owner, asset, sum(amount) AS amount FROM moves GROUP BY owner, asset
        )
        SELECT coalesce(a.owner, x.owner), coalesce(a.asset, x.asset),
               coalesce(a.available + a.held, 0), coalesce(x.amount, 0)
          FROM wallet_account a FULL JOIN expected x ON x.owner = a.owner AND x.asset = a.asset
         WHERE coalesce(a.available + a.held, 0) <> coalesce(x.amount, 0)
        """,
        [settings.FEE_ACCOUNT, settings.FEE_ACCOUNT],
    )
    return [f"{owner} {asset}: has {has}, deposits and settled trades say {expected}" for owner, asset, has, expected in rows]


def snapshots_published() -> list[str]:
    """Quiescent only: every market a live engine owns (its heartbeat is there) has a
    published book snapshot (what the order book endpoint, the ticker and market-buy holds
    read); `books_consistent` then compares it with the database."""
    from exchange.infra import redis_client
    from matching import feed

    symbols = list(Market.objects.values_list("symbol", flat=True))
    if not symbols:
        return []
    client = redis_client()
    beats = client.mget([feed.heartbeat_key(symbol) for symbol in symbols])
    books = client.mget([feed.book_key(symbol) for symbol in symbols])
    return [
        f"{symbol}: owned by a live engine but no book snapshot is published"
        for symbol, beat, book in zip(symbols, beats, books, strict=True)
        if beat and not book
    ]


def check_all(*, quiescent: bool = False, pending_grace_seconds: float = 10, settled: bool | None = None) -> Report:
    """All invariants. `quiescent`: nothing in flight, so the engine's book and the wallet
    must agree with the DB too. `settled` (default: same as `quiescent`): the outbox was
    drained, so holds must match orders; pass False for a quiescent engine whose
    settlements are not carried out (no worker)."""
    settled = quiescent if settled is None else settled
    report = Report()
    report.add("no_order_left_pending", no_order_left_pending(older_than_seconds=pending_grace_seconds))
    report.add("no_duplicate_trade", no_duplicate_trade())
    report.add("no_replayed_trade", no_replayed_trade())
    report.add("fills_match_trades", fills_match_trades())
    report.add("statuses_match_fills", statuses_match_fills())
    report.add("trades_exact", trades_exact())
    report.add("captures_within_holds", captures_within_holds())
    report.add("no_self_trade", no_self_trade())
    report.add("no_negative_balance", no_negative_balance())
    report.add("funds_conserved", funds_conserved())
    if quiescent:
        report.add("books_consistent", books_consistent())
        report.add("snapshots_published", snapshots_published())
    if settled:
        report.add("outbox_drained", outbox_drained())
        report.add("holds_match_open_orders", holds_match_open_orders())
        report.add("holds_match_orders", holds_match_orders())
        report.add("balances_match_trades", balances_match_trades())
    return report
