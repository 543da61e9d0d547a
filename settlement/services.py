"""Settlement services: carry the engine's outbox (trades, hold releases) to the wallet.

The engine writes one `Settlement` per trade and one `HoldRelease` per ended
order in its batch transaction; these services move the money and record what
happened. The DB side is set-based, like the wallet's:

1. **claim** a batch in one statement (`UPDATE ... WHERE id IN (SELECT ... FOR
   UPDATE SKIP LOCKED LIMIT n) RETURNING` the trade's terms): each row's
   `attempts` goes up and `next_attempt_at` moves one lease ahead, so nobody else
   claims it while this call is in flight (and anybody may once the lease is over:
   a worker killed mid-call loses nothing);
2. **one wallet call** for the whole batch (`apply`: one atomic, idempotent
   operation per trade, key `trade:<id>`; the same key twice moves money once);
3. **mark** every row and write its history line in one statement
   (`UPDATE ... FROM unnest(...)` plus an `INSERT ... SELECT` in the same CTE).

Transient failures (wallet unreachable, timeout, 5xx) go back to `pending` with
an exponential, jittered `next_attempt_at`; after the last attempt, or at once on
a permanent refusal, the row is `failed`: a dead letter for staff, never dropped.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Context, Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from exchange.crashpoints import crash_point
from exchange.errors import DomainError, WalletUnavailable
from settlement import metrics
from settlement.models import HoldRelease, Settlement, SettlementAttempt

logger = logging.getLogger(__name__)

# Sums and differences of numeric(38, 18) values need more than 28 significant digits.
_EXACT = Context(prec=80)
ZERO = Decimal(0)

# HTTP statuses that mean "try again later" although they are 4xx.
_TRANSIENT_4XX = frozenset({408, 425, 429})


# --- configuration (settings with defaults) ----------------------------------------


def _setting(name: str, default):
    return getattr(settings, name, default)


def batch_size() -> int:
    """Operations per wallet call (and ids per task message)."""
    return int(_setting("SETTLEMENT_BATCH_SIZE", 200))


def max_attempts() -> int:
    return int(_setting("SETTLEMENT_MAX_ATTEMPTS", 8))


def lease_seconds() -> float:
    """How long a claimed row is left alone; must exceed one wallet call's worst case."""
    return float(_setting("SETTLEMENT_LEASE_SECONDS", 60.0))


def settlement_queue() -> str | None:
    """The Celery queue of settlement tasks (None: the default queue)."""
    return _setting("SETTLEMENT_QUEUE", None) or None


def backoff_seconds(attempt: int, *, rand=random.random) -> float:
    """Wait before attempt `attempt + 1` after `attempt` failed: exponential with equal jitter.

    base * 2**(attempt-1), capped, then a uniform draw from its upper half, so
    retries of many rows that failed together spread out instead of stampeding.
    """
    base = float(_setting("SETTLEMENT_BACKOFF_BASE_SECONDS", 2.0))
    cap = float(_setting("SETTLEMENT_BACKOFF_MAX_SECONDS", 300.0))
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + rand() * ceiling / 2


# --- errors -----------------------------------------------------------------------


class SettlementNotResolvable(DomainError):
    code = "settlement_not_resolvable"
    http_status = 409
    default_message = "This settlement cannot be resolved now."


class InvalidTrade(DomainError):
    """The trade's numbers cannot make a balanced transfer (a bug upstream: never retried)."""

    code = "invalid_trade"
    http_status = 422


# --- legs ---------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class TradeTerms:
    """What settling one trade needs to know (read with the claim)."""

    trade_id: int
    buyer_id: int
    seller_id: int
    buy_order_id: int
    sell_order_id: int
    base_asset: str
    quote_asset: str
    quantity: Decimal
    quote_quantity: Decimal
    buyer_fee: Decimal
    seller_fee: Decimal
    created_at: datetime | None = None

    @property
    def key(self) -> str:
        return f"trade:{self.trade_id}"

    @classmethod
    def of(cls, trade) -> TradeTerms:
        """From an `orders.Trade` (with its market)."""
        buy_order_id, sell_order_id = (
            (trade.taker_order_id, trade.maker_order_id)
            if trade.taker_side == "buy"
            else (trade.maker_order_id, trade.taker_order_id)
        )
        return cls(
            trade_id=trade.pk,
            buyer_id=trade.buyer_id,
            seller_id=trade.seller_id,
            buy_order_id=buy_order_id,
            sell_order_id=sell_order_id,
            base_asset=trade.market.base_asset,
            quote_asset=trade.market.quote_asset,
            quantity=trade.quantity,
            quote_quantity=trade.quote_quantity,
            buyer_fee=trade.buyer_fee,
            seller_fee=trade.seller_fee,
            created_at=trade.created_at,
        )


def _owner(user_id: int) -> str:
    from settlement.clients.wallet import owner_for_user

    return owner_for_user(user_id)


def settlement_legs(*, terms: TradeTerms, fee_account: str | None = None) -> list[dict]:
    """The transfer's legs: both holds captured, both sides credited net of fees, fees collected.

    Per asset the legs balance: base: seller's hold gives `quantity` = buyer's
    `quantity - buyer_fee` + fee account's `buyer_fee`; quote: buyer's hold gives
    `quote_quantity` = seller's `quote_quantity - seller_fee` + fee account's
    `seller_fee`. Zero legs are left out (the wallet takes positive amounts only).
    Raises InvalidTrade when an amount is negative or nothing would move.
    """
    fee_account = fee_account or settings.FEE_ACCOUNT
    buyer, seller = _owner(terms.buyer_id), _owner(terms.seller_id)
    base, quote = terms.base_asset, terms.quote_asset
    buyer_gets = _EXACT.subtract(terms.quantity, terms.buyer_fee)
    seller_gets = _EXACT.subtract(terms.quote_quantity, terms.seller_fee)
    amounts = (
        terms.quantity,
        terms.quote_quantity,
        terms.buyer_fee,
        terms.seller_fee,
        buyer_gets,
        seller_gets,
    )
    if any(amount < 0 for amount in amounts) or terms.quantity <= 0 or terms.quote_quantity <= 0:
        raise InvalidTrade(f"Trade #{terms.trade_id} has amounts that cannot settle: {amounts}.")
    candidates = [
        {
            "owner": buyer,
            "asset": quote,
            "amount": terms.quote_quantity,
            "from_hold": f"order:{terms.buy_order_id}",
        },
        {
            "owner": seller,
            "asset": base,
            "amount": terms.quantity,
            "from_hold": f"order:{terms.sell_order_id}",
        },
        {"owner": buyer, "asset": base, "amount": buyer_gets},
        {"owner": seller, "asset": quote, "amount": seller_gets},
        {"owner": fee_account, "asset": base, "amount": terms.buyer_fee},
        {"owner": fee_account, "asset": quote, "amount": terms.seller_fee},
    ]
    return [leg for leg in candidates if leg["amount"] > 0]


def legs_balance(legs: Iterable[dict]) -> dict[str, Decimal]:
    """Per asset: credits minus hold debits (all zero for a balanced transfer)."""
    net: dict[str, Decimal] = {}
    for leg in legs:
        amount = Decimal(leg["amount"])
        signed = (
            amount.copy_negate() if leg.get("from_hold") else amount
        )  # exact (unary minus rounds)
        net[leg["asset"]] = _EXACT.add(net.get(leg["asset"], ZERO), signed)
    return net


def settlement_operation(*, terms: TradeTerms) -> dict:
    """The wallet operation that settles one trade (idempotency key `trade:<id>`)."""
    return {"key": terms.key, "type": "transfer", "legs": settlement_legs(terms=terms)}


# --- outcomes -------------------------------------------------------------------------


@dataclass(slots=True)
class ProcessReport:
    """What one `*_process` call did; `retry` maps ids to their next attempt time."""

    done: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retry: dict[int, datetime] = field(default_factory=dict)
    claimed: int = 0
    wallet_calls: int = 0

    @property
    def retry_ids(self) -> list[int]:
        return sorted(self.retry)

    def retry_countdown(self, *, cap: float | None = None) -> float:
        """Seconds until every row to retry is due again (capped below the broker's
        visibility timeout: a longer countdown would have Redis deliver it twice)."""
        if not self.retry:
            return 0.0
        cap = float(_setting("SETTLEMENT_MAX_COUNTDOWN_SECONDS", 600.0)) if cap is None else cap
        wait = (max(self.retry.values()) - timezone.now()).total_seconds()
        return max(0.0, min(cap, wait))


@dataclass(slots=True)
class _Mark:
    """The new state of one claimed row after its attempt."""

    id: int
    attempt: int
    status: str
    outcome: str
    next_at: datetime | None = None
    error: str = ""
    code: str = ""


def _error_text(code: str, message: str) -> str:
    return f"{code}: {message}" if message else code


def _classify_call_error(exc: Exception) -> tuple[bool, str, str]:
    """(transient?, code, message) for an exception of a whole wallet call."""
    if isinstance(exc, WalletUnavailable):
        return True, exc.code, exc.message
    if isinstance(exc, DomainError):
        status = getattr(exc, "status", exc.http_status)
        return status in _TRANSIENT_4XX, exc.code, exc.message
    return True, "internal_error", f"{exc.__class__.__name__}: {exc}"


def _after_failure(
    *,
    row_id: int,
    attempt: int,
    transient: bool,
    code: str,
    message: str,
    now: datetime,
    final_status: str,
) -> _Mark:
    error = _error_text(code, message)
    if not transient:
        return _Mark(row_id, attempt, final_status, "rejected", None, error, code)
    if attempt >= max_attempts():
        return _Mark(row_id, attempt, final_status, "gave_up", None, error, code)
    next_at = now + timedelta(seconds=backoff_seconds(attempt))
    outcome = "error" if code == "internal_error" else "unavailable"
    return _Mark(row_id, attempt, "pending", outcome, next_at, error, code)


def _wallet():
    from settlement.clients.wallet import wallet_client

    return wallet_client()


def _apply(operations: list[dict]) -> tuple[dict[str, object] | None, Exception | None]:
    """One wallet call: (results by key, None) or (None, the exception)."""
    try:
        results = _wallet().apply(operations)
    except Exception as exc:  # classified by the caller; nothing here may lose a row
        if isinstance(exc, DomainError):
            logger.warning(
                "settlement: wallet call for %d operations failed: %s %s",
                len(operations),
                exc.code,
                exc.message,
            )
        else:
            logger.exception("settlement: unexpected error calling the wallet")
        return None, exc
    return {result.key: result for result in results}, None


def _chunks(ids: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def _unique(ids: Iterable[int] | None) -> list[int]:
    return list(dict.fromkeys(int(i) for i in ids or ()))


# --- settlements ------------------------------------------------------------------------

# Claim = lock the due rows (skipping any another worker holds), move their lease
# ahead, count the attempt, and read the trade's terms: one statement. Either by id
# (the task's own rows) or, to top up a batch, any due rows, oldest first.
#
# Rows named by id are reached through the primary key only, and their status is
# checked once they are locked (outside the scan): a `status = 'pending'` condition on
# the table would let the planner pick the partial index of pending rows, and with
# statistics taken while the queue was empty it would then read the whole backlog
# for every batch just when the backlog is deep.
_CLAIM_BY_ID = """
    WITH locked AS MATERIALIZED (
        SELECT trade_id, status, next_attempt_at FROM settlement_settlement
         WHERE trade_id = ANY(%(ids)s::bigint[])
         ORDER BY trade_id
           FOR UPDATE SKIP LOCKED
    )
    SELECT trade_id FROM locked
     WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= now())
     LIMIT %(limit)s
"""
_CLAIM_DUE = """
    SELECT trade_id FROM settlement_settlement
     WHERE status = 'pending' AND next_attempt_at <= now()
     ORDER BY next_attempt_at LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
"""
_CLAIM_SETTLEMENTS_SQL = """
WITH due AS ({due})
UPDATE settlement_settlement AS s
   SET attempts = s.attempts + 1,
       next_attempt_at = now() + make_interval(secs => %(lease)s)
  FROM due, orders_trade AS t, marketdata_market AS m
 WHERE s.trade_id = due.trade_id AND t.id = s.trade_id AND m.id = t.market_id
RETURNING s.trade_id, s.attempts, t.buyer_id, t.seller_id,
          CASE WHEN t.taker_side = 'buy' THEN t.taker_order_id ELSE t.maker_order_id END,
          CASE WHEN t.taker_side = 'buy' THEN t.maker_order_id ELSE t.taker_order_id END,
          m.base_asset, m.quote_asset, t.quantity, t.quote_quantity, t.buyer_fee, t.seller_fee,
          t.created_at
"""
_CLAIM_SETTLEMENTS_BY_ID_SQL = _CLAIM_SETTLEMENTS_SQL.format(due=_CLAIM_BY_ID)
_CLAIM_SETTLEMENTS_DUE_SQL = _CLAIM_SETTLEMENTS_SQL.format(due=_CLAIM_DUE)

# One statement: new states (only rows still pending; a non-final outcome only if no
# later claim superseded ours, judged on the locked rows) and one history line per
# attempt. Rows are reached by primary key only (see the claim).
_MARK_SETTLEMENTS_SQL = """
WITH v AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(statuses)s::text[],
                         %(next_at)s::timestamptz[], %(errors)s::text[], %(codes)s::text[],
                         %(outcomes)s::text[])
        AS v(trade_id, attempt, status, next_at, error, code, outcome)
), cur AS (
    SELECT trade_id, status, attempts FROM settlement_settlement
     WHERE trade_id = ANY(%(ids)s::bigint[])
     ORDER BY trade_id
       FOR UPDATE
), ok AS (
    SELECT v.* FROM v JOIN cur ON cur.trade_id = v.trade_id
     WHERE cur.status = 'pending' AND (v.status = 'settled' OR cur.attempts = v.attempt)
), u AS (
    UPDATE settlement_settlement AS s
       SET status = ok.status,
           next_attempt_at = ok.next_at,
           last_error = CASE WHEN ok.error = '' THEN s.last_error ELSE ok.error END,
           last_error_code = CASE WHEN ok.error = '' THEN s.last_error_code ELSE ok.code END,
           settled_at = CASE WHEN ok.status = 'settled' THEN now() ELSE s.settled_at END
      FROM ok
     WHERE s.trade_id = ok.trade_id
    RETURNING s.trade_id, s.status
), h AS (
    INSERT INTO settlement_settlementattempt (settlement_id, at, outcome, error, actor, attempt)
    SELECT v.trade_id, now(), v.outcome, v.error, %(actor)s, v.attempt FROM v
)
SELECT trade_id, status FROM u
"""


@contextmanager
def _bookkeeping():
    """A transaction for the outbox's own rows, committed without waiting for the WAL flush.

    Safe because every write here can be lost and replayed: a lost claim or mark
    leaves the row pending (or leased), so it is claimed again and the wallet, the
    system of record for money, answers `duplicate` for what it already applied.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield cursor


def _claim_settlements(
    cursor, *, ids: list[int], limit: int, top_up: bool
) -> list[tuple[int, TradeTerms]]:
    """Claim up to `limit` due rows among `ids`, then (with `top_up`) other due rows to fill the batch."""
    rows = []
    if ids:
        cursor.execute(
            _CLAIM_SETTLEMENTS_BY_ID_SQL, {"ids": ids, "limit": limit, "lease": lease_seconds()}
        )
        rows = cursor.fetchall()
    if top_up and len(rows) < limit:
        cursor.execute(
            _CLAIM_SETTLEMENTS_DUE_SQL, {"limit": limit - len(rows), "lease": lease_seconds()}
        )
        rows += cursor.fetchall()
    claimed = []
    for row in rows:
        trade_id, attempt, *terms = row
        claimed.append((attempt, TradeTerms(trade_id, *terms)))
    return claimed


def settlements_process(
    *, trade_ids: Sequence[int], top_up: bool | None = None, actor: str = "worker"
) -> ProcessReport:
    """Settle these trades at the wallet, `batch_size()` per call; return what happened.

    Only rows that are `pending` and due are touched (anything else, or a row
    another worker holds, is skipped), so calling this twice, concurrently or
    not, moves money once. With `top_up` (setting SETTLEMENT_COALESCE, default
    on) a batch not filled by `trade_ids` takes other due rows too: a deep queue
    drains `batch_size()` trades per wallet call however the engine split it.
    """
    if top_up is None:
        top_up = bool(_setting("SETTLEMENT_COALESCE", True))
    report = ProcessReport()
    size = batch_size()
    for chunk in _chunks(_unique(trade_ids), size):
        with _bookkeeping() as cursor:
            claimed = _claim_settlements(cursor, ids=chunk, limit=size, top_up=top_up)
        if claimed:
            _settle_claimed(claimed, report, actor=actor)
    return report


def _settle_claimed(
    claimed: list[tuple[int, TradeTerms]], report: ProcessReport, *, actor: str
) -> None:
    report.claimed += len(claimed)
    marks: dict[int, _Mark] = {}
    operations: list[dict] = []
    sent: list[tuple[int, TradeTerms]] = []
    for attempt, terms in claimed:
        try:
            operations.append(settlement_operation(terms=terms))
            sent.append((attempt, terms))
        except InvalidTrade as exc:
            marks[terms.trade_id] = _Mark(
                terms.trade_id,
                attempt,
                "failed",
                "rejected",
                None,
                _error_text(exc.code, exc.message),
                exc.code,
            )
    crash_point("settlement.after_claim_before_wallet")
    if operations:
        report.wallet_calls += 1
        with metrics.WALLET_CALL_SECONDS.time():
            results, error = _apply(operations)
        crash_point("settlement.after_wallet_before_mark")
        now = timezone.now()  # backoff counts from the end of the call (it may have timed out)
        for attempt, terms in sent:
            marks[terms.trade_id] = _settlement_mark(terms.trade_id, attempt, results, error, now)
    updated = _mark_settlements(list(marks.values()), actor=actor)
    crash_point("settlement.after_mark")
    created = {terms.trade_id: terms.created_at for _, terms in claimed}
    _record(report, marks, updated, created, kind="settlement")


def _settlement_mark(trade_id: int, attempt: int, results, error, now) -> _Mark:
    key = f"trade:{trade_id}"
    result = results.get(key) if results is not None else None
    if results is not None and result is None:
        error = WalletUnavailable(f"The wallet returned no result for {key}.")
    if result is not None:
        if result.status in ("applied", "duplicate"):
            return _Mark(trade_id, attempt, "settled", result.status)
        code = result.code or "rejected"
        return _after_failure(
            row_id=trade_id,
            attempt=attempt,
            transient=False,
            code=code,
            message=result.message or "",
            now=now,
            final_status="failed",
        )
    transient, code, message = _classify_call_error(error)
    return _after_failure(
        row_id=trade_id,
        attempt=attempt,
        transient=transient,
        code=code,
        message=message,
        now=now,
        final_status="failed",
    )


def _mark_settlements(marks: list[_Mark], *, actor: str) -> dict[int, str]:
    """Write the marks and history in one statement; return {id: status} of rows changed."""
    if not marks:
        return {}
    params = _mark_params(marks)
    params["actor"] = actor
    with _bookkeeping() as cursor:
        cursor.execute(_MARK_SETTLEMENTS_SQL, params)
        return dict(cursor.fetchall())


def _mark_params(marks: list[_Mark]) -> dict:
    return {
        "ids": [m.id for m in marks],
        "attempts": [m.attempt for m in marks],
        "statuses": [m.status for m in marks],
        "next_at": [m.next_at for m in marks],
        "errors": [m.error for m in marks],
        "codes": [m.code for m in marks],
        "outcomes": [m.outcome for m in marks],
    }


def _record(
    report: ProcessReport,
    marks: dict[int, _Mark],
    updated: dict[int, str],
    created: dict,
    *,
    kind: str,
) -> None:
    """Fill the report and the metrics from what the mark statement changed."""
    now = timezone.now()
    for row_id, mark in marks.items():
        metrics.ATTEMPTS.labels(kind, mark.outcome).inc()
        status = updated.get(row_id)
        if status is None:
            continue  # superseded: a later claim owns the row now
        if status in ("settled", "done"):
            report.done.append(row_id)
            metrics.OUTCOMES.labels(kind, "settled" if kind == "settlement" else "done").inc()
            created_at = created.get(row_id)
            if created_at is not None:
                metrics.TRADE_TO_SETTLED_SECONDS.observe(
                    max(0.0, (now - created_at).total_seconds())
                )
        elif status == "failed":
            report.failed.append(row_id)
            metrics.OUTCOMES.labels(kind, "failed").inc()
            logger.warning("%s %s failed (dead letter): %s", kind, row_id, mark.error)
        elif mark.next_at is not None:
            report.retry[row_id] = mark.next_at


# --- hold releases -----------------------------------------------------------------------

_CLAIM_RELEASES_SQL = """
WITH due AS ({due})
UPDATE settlement_holdrelease AS r
   SET attempts = r.attempts + 1,
       next_attempt_at = now() + make_interval(secs => %(lease)s)
  FROM due
 WHERE r.order_id = due.order_id
RETURNING r.order_id, r.attempts, r.amount
"""
_CLAIM_RELEASES_BY_ID_SQL = _CLAIM_RELEASES_SQL.format(
    due=_CLAIM_BY_ID.replace("trade_id", "order_id").replace(
        "settlement_settlement", "settlement_holdrelease"
    )
)
_CLAIM_RELEASES_DUE_SQL = _CLAIM_RELEASES_SQL.format(
    due=_CLAIM_DUE.replace("trade_id", "order_id").replace(
        "settlement_settlement", "settlement_holdrelease"
    )
)

_MARK_RELEASES_SQL = """
WITH v AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(statuses)s::text[],
                         %(next_at)s::timestamptz[], %(errors)s::text[], %(codes)s::text[],
                         %(outcomes)s::text[])
        AS v(order_id, attempt, status, next_at, error, code, outcome)
), cur AS (
    SELECT order_id, status, attempts FROM settlement_holdrelease
     WHERE order_id = ANY(%(ids)s::bigint[])
     ORDER BY order_id
       FOR UPDATE
), ok AS (
    SELECT v.* FROM v JOIN cur ON cur.order_id = v.order_id
     WHERE cur.status = 'pending' AND (v.status = 'done' OR cur.attempts = v.attempt)
)
UPDATE settlement_holdrelease AS r
   SET status = ok.status,
       next_attempt_at = ok.next_at,
       last_error = CASE WHEN ok.error = '' THEN r.last_error ELSE ok.error END,
       last_error_code = CASE WHEN ok.error = '' THEN r.last_error_code ELSE ok.code END,
       done_at = CASE WHEN ok.status = 'done' THEN now() ELSE r.done_at END
  FROM ok
 WHERE r.order_id = ok.order_id
RETURNING r.order_id, r.status
"""


def release_operation(*, order_id: int, amount: Decimal) -> dict:
    """Give back `amount` of hold `order:<id>` (key `release:order:<id>`)."""
    return {
        "key": f"release:order:{order_id}",
        "type": "release",
        "hold": f"order:{order_id}",
        "amount": amount,
    }


def releases_process(*, order_ids: Sequence[int], top_up: bool | None = None) -> ProcessReport:
    """Carry out these hold releases, `batch_size()` per wallet call (like settlements)."""
    if top_up is None:
        top_up = bool(_setting("SETTLEMENT_COALESCE", True))
    report = ProcessReport()
    size = batch_size()
    for chunk in _chunks(_unique(order_ids), size):
        with _bookkeeping() as cursor:
            claimed = []
            if chunk:
                cursor.execute(
                    _CLAIM_RELEASES_BY_ID_SQL,
                    {"ids": chunk, "limit": size, "lease": lease_seconds()},
                )
                claimed = cursor.fetchall()
            if top_up and len(claimed) < size:
                cursor.execute(
                    _CLAIM_RELEASES_DUE_SQL,
                    {"limit": size - len(claimed), "lease": lease_seconds()},
                )
                claimed += cursor.fetchall()
        if claimed:
            _release_claimed(claimed, report)
    return report


def _release_claimed(claimed: list[tuple[int, int, Decimal]], report: ProcessReport) -> None:
    report.claimed += len(claimed)
    operations = [
        release_operation(order_id=order_id, amount=amount) for order_id, _, amount in claimed
    ]
    report.wallet_calls += 1
    with metrics.WALLET_CALL_SECONDS.time():
        results, error = _apply(operations)
    crash_point("settlement.release_after_wallet_before_mark")
    now = timezone.now()
    marks: dict[int, _Mark] = {}
    for order_id, attempt, _ in claimed:
        key = f"release:order:{order_id}"
        result = results.get(key) if results is not None else None
        call_error = error
        if results is not None and result is None:
            call_error = WalletUnavailable(f"The wallet returned no result for {key}.")
        if result is not None and result.status in ("applied", "duplicate"):
            marks[order_id] = _Mark(order_id, attempt, "done", result.status)
        elif result is not None:
            marks[order_id] = _after_failure(
                row_id=order_id,
                attempt=attempt,
                transient=False,
                code=result.code or "rejected",
                message=result.message or "",
                now=now,
                final_status="failed",
            )
        else:
            transient, code, message = _classify_call_error(call_error)
            marks[order_id] = _after_failure(
                row_id=order_id,
                attempt=attempt,
                transient=transient,
                code=code,
                message=message,
                now=now,
                final_status="failed",
            )
    with _bookkeeping() as cursor:
        cursor.execute(_MARK_RELEASES_SQL, _mark_params(list(marks.values())))
        updated = dict(cursor.fetchall())
    _record(report, marks, updated, {}, kind="hold_release")


# --- relay: dispatch after commit, sweep what was lost -------------------------------------


def _route() -> dict:
    queue = settlement_queue()
    return {"queue": queue} if queue else {}


def outbox_dispatch(*, trade_ids: list[int], released_order_ids: list[int]) -> None:
    """Hand freshly committed outbox rows to the workers (after the engine's commit).

    One message per `batch_size()` ids, so several workers share a big batch. A
    lost message (or a broker that is down right now) is harmless: beat
    re-enqueues rows left pending past a deadline (`outbox_sweep`). The messages
    of one call share one producer (one broker connection taken from the pool),
    and their argument summaries for monitoring are given, not made by Celery's
    repr of every id (that was most of the cost of sending).
    """
    from settlement import tasks

    size = batch_size()
    route = _route()
    try:
        with tasks.settle_trades.app.producer_or_acquire() as producer:
            for task, ids in (
                (tasks.settle_trades, trade_ids),
                (tasks.release_holds, released_order_ids),
            ):
                for chunk in _chunks(_unique(ids), size):
                    task.apply_async(
                        args=[chunk],
                        producer=producer,
                        argsrepr=_ids_repr(chunk),
                        kwargsrepr="{}",
                        **route,
                    )
    except Exception:  # the rows are committed: the sweep will send them
        logger.warning(
            "settlement: enqueue failed; the outbox sweep will pick the rows up", exc_info=True
        )


def _ids_repr(ids: list[int]) -> str:
    return f"[{len(ids)} ids: {ids[0]}..{ids[-1]}]"


def outbox_sweep(*, grace_seconds: float | None = None, limit: int | None = None) -> dict[str, int]:
    """Re-enqueue outbox rows still pending `grace_seconds` after they were due.

    Those are rows whose message was lost, or whose worker died mid-call (its
    lease ran out). Run by beat; harmless to run at any time or twice.
    """
    grace = (
        float(_setting("SETTLEMENT_SWEEP_GRACE_SECONDS", 30.0))
        if grace_seconds is None
        else grace_seconds
    )
    limit = int(_setting("SETTLEMENT_SWEEP_LIMIT", 5000)) if limit is None else limit
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT trade_id FROM settlement_settlement
                WHERE status = 'pending' AND next_attempt_at <= now() - make_interval(secs => %s)
                ORDER BY next_attempt_at LIMIT %s""",
            [grace, limit],
        )
        trade_ids = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            """SELECT order_id FROM settlement_holdrelease
                WHERE status = 'pending' AND next_attempt_at <= now() - make_interval(secs => %s)
                ORDER BY next_attempt_at LIMIT %s""",
            [grace, limit],
        )
        order_ids = [row[0] for row in cursor.fetchall()]
    if trade_ids or order_ids:
        logger.info(
            "settlement sweep: re-enqueueing %d settlements, %d releases",
            len(trade_ids),
            len(order_ids),
        )
        metrics.SWEPT.labels("settlement").inc(len(trade_ids))
        metrics.SWEPT.labels("hold_release").inc(len(order_ids))
        outbox_dispatch(trade_ids=trade_ids, released_order_ids=order_ids)
    return {"settlements": len(trade_ids), "releases": len(order_ids)}


# --- staff actions ------------------------------------------------------------------------


def _actor_name(actor) -> str:
    return getattr(actor, "get_username", lambda: str(actor))() if actor is not None else ""


def settlements_retry(*, trade_ids: Sequence[int], actor) -> int:
    """Staff retry: failed rows go back to `pending` (a fresh round of attempts), due now,
    and are enqueued after commit; pending ones are just enqueued again. Returns the
    number of rows re-opened or re-sent. Settled and resolved rows are left alone."""
    ids = _unique(trade_ids)
    name = _actor_name(actor)
    with transaction.atomic():
        rows = list(
            Settlement.objects.select_for_update()
            .filter(
                trade_id__in=ids, status__in=[Settlement.Status.FAILED, Settlement.Status.PENDING]
            )
            .values_list("trade_id", "status")
        )
        failed = [trade_id for trade_id, status in rows if status == Settlement.Status.FAILED]
        if failed:
            now = timezone.now()
            Settlement.objects.filter(trade_id__in=failed).update(
                status=Settlement.Status.PENDING, attempts=0, next_attempt_at=now
            )
            SettlementAttempt.objects.bulk_create(
                [
                    SettlementAttempt(settlement_id=trade_id, outcome="retry_requested", actor=name)
                    for trade_id in failed
                ]
            )
        resend = [trade_id for trade_id, _ in rows]
        if resend:
            transaction.on_commit(lambda: outbox_dispatch(trade_ids=resend, released_order_ids=[]))
    return len(rows)


def holdreleases_retry(*, order_ids: Sequence[int], actor) -> int:
    """Staff retry of failed (or stuck pending) hold releases, like `settlements_retry`."""
    ids = _unique(order_ids)
    with transaction.atomic():
        rows = list(
            HoldRelease.objects.select_for_update()
            .filter(
                order_id__in=ids, status__in=[HoldRelease.Status.FAILED, HoldRelease.Status.PENDING]
            )
            .values_list("order_id", "status")
        )
        failed = [order_id for order_id, status in rows if status == HoldRelease.Status.FAILED]
        if failed:
            HoldRelease.objects.filter(order_id__in=failed).update(
                status=HoldRelease.Status.PENDING, attempts=0, next_attempt_at=timezone.now()
            )
        resend = [order_id for order_id, _ in rows]
        if resend:
            logger.info("hold releases %s re-sent by %s", resend, _actor_name(actor))
            transaction.on_commit(lambda: outbox_dispatch(trade_ids=[], released_order_ids=resend))
    return len(rows)


def settlement_resolve(*, trade_id: int, actor, note: str) -> Settlement:
    """Staff close a dead letter, with a note (required) and their name, audited.

    First asks the wallet whether `trade:<id>` was applied: if it was, the money
    moved and the row becomes `settled` (resolution `transfer_applied`). If not,
    it becomes `resolved` with resolution `resolved_without_transfer`: an explicit
    record that this trade's holds were not captured, which the conservation
    check accounts for. Raises SettlementNotResolvable for a row that is not
    `failed`, when the note is empty, or when the last attempt is so recent that
    its wallet call might still be running; WalletUnavailable if the wallet
    cannot answer (nothing changes then).
    """
    note = (note or "").strip()
    if not note:
        raise SettlementNotResolvable("A note is required to resolve a settlement.")
    key = f"trade:{trade_id}"
    applied = _wallet().operation(key)  # outside the row lock: an HTTP call
    with transaction.atomic():
        settlement = Settlement.objects.select_for_update().get(trade_id=trade_id)
        if settlement.status != Settlement.Status.FAILED:
            raise SettlementNotResolvable(
                f"Settlement of trade #{trade_id} is {settlement.status}, not failed."
            )
        min_age = float(
            _setting(
                "SETTLEMENT_RESOLVE_MIN_AGE_SECONDS", 2 * float(settings.WALLET_TIMEOUT_SECONDS)
            )
        )
        last = (
            settlement.history.filter(attempt__isnull=False)
            .order_by("-at")
            .values_list("at", flat=True)
            .first()
        )
        if (
            applied is None
            and last is not None
            and (timezone.now() - last).total_seconds() < min_age
        ):
            raise SettlementNotResolvable(
                f"The last attempt was under {min_age:g}s ago and may still reach the wallet; try again shortly."
            )
        now = timezone.now()
        settlement.resolved_by = actor if getattr(actor, "pk", None) else None
        settlement.resolution_note = note
        settlement.resolved_at = now
        if applied is not None:
            settlement.status = Settlement.Status.SETTLED
            settlement.resolution = Settlement.Resolution.TRANSFER_APPLIED
            settlement.settled_at = now
            outcome = "resolved_transfer_applied"
        else:
            settlement.status = Settlement.Status.RESOLVED
            settlement.resolution = Settlement.Resolution.RESOLVED_WITHOUT_TRANSFER
            outcome = "resolved_without_transfer"
        settlement.save(
            update_fields=[
                "status",
                "resolution",
                "resolution_note",
                "resolved_by",
                "resolved_at",
                "settled_at",
            ]
        )
        SettlementAttempt.objects.create(
            settlement=settlement, outcome=outcome, error=note, actor=_actor_name(actor)
        )
    metrics.OUTCOMES.labels("settlement", outcome).inc()
    return settlement
