"""Writes to the wallet ledger: holds, transfers, releases, deposits, withdrawals.

Concurrency rules (why nothing can go negative):

* A balance changes only in SQL that either checks it under the row lock
  (`UPDATE ... WHERE available >= %s`, re-evaluated by PostgreSQL on the newest row
  version) or after `SELECT ... FOR NO KEY UPDATE` (the lock an UPDATE takes: it
  does not block other transactions' foreign-key checks). The tables' CHECK
  constraints are the last line of defence.
* Rows are locked in one global order: operation keys (sorted), then holds by
  id, then accounts by id. Hold placement locks a single account row.
* An idempotency key is claimed by inserting its `Operation` row first
  (`ON CONFLICT DO NOTHING`): a concurrent request with the same key waits on the
  unique index and then sees the key taken, so one key moves money once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

import psycopg.errors
from django.db import DataError, IntegrityError, OperationalError, connection, transaction

from exchange.errors import DomainError, InsufficientFunds, ValidationFailed
from wallet.validation import (
    MONEY_CONTEXT,
    MONEY_LIMIT,
    InvalidSpec,
    Leg,
    OperationSpec,
    ReleaseSpec,
    TransferSpec,
    fmt,
    parse_amount,
    parse_asset,
    parse_bool,
    parse_key,
    parse_owner,
    parse_transfer,
)

ZERO = Decimal(0)
DEADLOCK_RETRIES = 3


class KeyConflict(DomainError):
    code = "key_conflict"
    http_status = 409
    default_message = "This idempotency key was already used for something else."


class OperationRejected(DomainError):
    """A single operation refused by the ledger rules (the batch reports it as `rejected`)."""

    http_status = 422

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(slots=True, frozen=True)
class HoldState:
    key: str
    owner: str
    asset: str
    amount: Decimal
    requested: Decimal
    captured: Decimal
    released: Decimal
    created_at: datetime

    @property
    def remaining(self) -> Decimal:
        with localcontext(MONEY_CONTEXT):
            return self.amount - self.captured - self.released


@dataclass(slots=True, frozen=True)
class OperationResult:
    key: str
    status: str  # applied | duplicate | rejected
    code: str | None = None
    message: str | None = None


@dataclass(slots=True, frozen=True)
class OperationRecord:
    key: str
    kind: str
    payload: dict
    created_at: datetime


# --- helpers -------------------------------------------------------------------


def _statement_scope():
    """A single SQL statement is atomic on its own; inside an outer transaction it
    still needs a savepoint so that its failure does not poison the outer one."""
    if connection.in_atomic_block:
        return transaction.atomic()
    return contextlib.nullcontext()


def _retrying_deadlocks(fn, *args, **kwargs):
    """Run `fn` in its own transaction, again if PostgreSQL broke a deadlock by killing it."""
    for attempt in range(DEADLOCK_RETRIES):
        try:
            with transaction.atomic():
                return fn(*args, **kwargs)
        except OperationalError as exc:
            transient = isinstance(exc.__cause__, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)
            if not transient or attempt == DEADLOCK_RETRIES - 1 or connection.in_atomic_block:
                raise
    raise AssertionError("unreachable")


# --- holds ---------------------------------------------------------------------

# One statement: take the funds if (and only if) they are there, record the hold
# and its two ledger lines. A key already used fails the insert (unique index),
# which rolls the whole statement back.
_PLACE_HOLD_SQL = """
WITH acc AS (
    UPDATE wallet_account
       SET available = available - %(amount)s, held = held + %(amount)s, updated_at = now()
     WHERE owner = %(owner)s AND asset = %(asset)s AND available >= %(amount)s
 RETURNING id
), h AS (
    INSERT INTO wallet_hold (key, account_id, amount, requested, captured, released, created_at)
    SELECT %(key)s, acc.id, %(amount)s, %(requested)s, 0, 0, now() FROM acc
 RETURNING id, account_id, created_at
), e AS (
    INSERT INTO wallet_entry (operation_id, hold_id, account_id, amount, bucket, created_at)
    SELECT NULL, h.id, h.account_id, v.amount, v.bucket, h.created_at
      FROM h, (VALUES (-%(amount)s::numeric, 'available'), (%(amount)s::numeric, 'held')) AS v(amount, bucket)
)
SELECT created_at FROM h
"""


def hold_place(*, key: str, owner: str, asset: str, amount: Decimal, up_to: bool = False) -> tuple[HoldState, bool]:
    """Reserve `amount` of the owner's available `asset` under `key`; return (hold, created).

    Idempotent on `key`: a repeat returns the first hold (created=False) and holds
    nothing more. With `up_to`, holds min(available, amount). Raises
    InsufficientFunds when nothing could be held, KeyConflict when the key names a
    hold of another account.
    """
    key, owner, asset = parse_key(key), parse_owner(owner), parse_asset(asset)
    requested = parse_amount(amount)
    up_to = parse_bool(up_to, "up_to")
    held, created_at = requested, None
    try:
        if up_to:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT available FROM wallet_account WHERE owner = %s AND asset = %s FOR NO KEY UPDATE",
                    [owner, asset],
                )
                row = cursor.fetchone()
                held = min(row[0], requested) if row else ZERO
                if held > 0:
                    created_at = _place(cursor, key, owner, asset, held, requested)
        else:
            with _statement_scope(), connection.cursor() as cursor:
                created_at = _place(cursor, key, owner, asset, held, requested)
    except IntegrityError as exc:
        if not isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
            raise
        created_at = None  # the key is taken: answered below
    if created_at is not None:
        return HoldState(key, owner, asset, held, requested, ZERO, ZERO, created_at), True
    existing = hold_find(key=key)
    if existing is None:
        raise InsufficientFunds(f"Not enough {asset} available to hold.", details={"asset": asset})
    if (existing.owner, existing.asset) != (owner, asset):
        raise KeyConflict(f"Hold {key} belongs to another account.")
    return existing, False


def _place(cursor, key, owner, asset, amount, requested):
    cursor.execute(_PLACE_HOLD_SQL, {"key": key, "owner": owner, "asset": asset, "amount": amount, "requested": requested})
    row = cursor.fetchone()
    return row[0] if row else None


def hold_find(*, key: str) -> HoldState | None:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT h.key, a.owner, a.asset, h.amount, h.requested, h.captured, h.released, h.created_at
                 FROM wallet_hold h JOIN wallet_account a ON a.id = h.account_id WHERE h.key = %s""",
            [key],
        )
        row = cursor.fetchone()
    return HoldState(*row) if row else None


# --- batches of transfers and releases -----------------------------------------


class _Rejection(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message


@dataclass(slots=True)
class _HoldRow:
    id: int
    account_id: int
    amount: Decimal
    captured: Decimal
    released: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.captured - self.released


@dataclass(slots=True)
class _AccountRow:
    id: int
    owner: str
    asset: str
    available: Decimal
    held: Decimal


class _Ledger:
    """The locked rows of one batch, their running values, and what to write back."""

    def __init__(self, holds: dict[str, _HoldRow], accounts: dict[tuple[str, str], _AccountRow]):
        self.holds = holds
        self.accounts = accounts
        self.accounts_by_id = {account.id: account for account in accounts.values()}
        self.hold_deltas: dict[int, list[Decimal]] = {}  # id -> [captured, released]
        self.account_deltas: dict[int, list[Decimal]] = {}  # id -> [available, held]
        self.entries: list[tuple[int, int | None, int, Decimal, str]] = []

    def evaluate(self, spec: TransferSpec | ReleaseSpec) -> list[tuple]:
        """Check one operation against the running values; return its changes or raise _Rejection.

        Changes: ("hold", hold, d_captured, d_released) and ("entry", hold|None, account, amount, bucket).
        """
        if isinstance(spec, ReleaseSpec):
            hold = self._hold(spec.hold)
            if spec.amount > hold.remaining:
                raise _Rejection("hold_exceeded", f"Hold {spec.hold} has {fmt(hold.remaining)} left, {fmt(spec.amount)} asked.")
            account = self.accounts_by_id[hold.account_id]
            return [
                ("hold", hold, ZERO, spec.amount),
                ("entry", hold, account, -spec.amount, "held"),
                ("entry", hold, account, spec.amount, "available"),
            ]
        changes: list[tuple] = []
        taken: dict[int, Decimal] = {}
        credited: dict[int, Decimal] = {}
        for leg in spec.legs:
            account = self.accounts.get((leg.owner, leg.asset))
            if leg.from_hold is None:
                changes.append(("entry", None, account, leg.amount, "available"))
                credited[account.id] = credited.get(account.id, ZERO) + leg.amount
                continue
            hold = self._hold(leg.from_hold)
            if account is None or hold.account_id != account.id:
                raise _Rejection("hold_mismatch", f"Hold {leg.from_hold} is not {leg.owner}'s {leg.asset}.")
            taken[hold.id] = taken.get(hold.id, ZERO) + leg.amount
            if taken[hold.id] > hold.remaining:
                raise _Rejection(
                    "hold_exceeded", f"Hold {leg.from_hold} has {fmt(hold.remaining)} left, {fmt(taken[hold.id])} asked."
                )
            changes.append(("hold", hold, leg.amount, ZERO))
            changes.append(("entry", hold, account, -leg.amount, "held"))
        for account_id, amount in credited.items():
            if self.accounts_by_id[account_id].available + amount >= MONEY_LIMIT:
                raise _Rejection("amount_out_of_range", "The credit would exceed the largest balance the ledger stores.")
        return changes

    def _hold(self, key: str) -> _HoldRow:
        hold = self.holds.get(key)
        if hold is None:
            raise _Rejection("hold_not_found", f"No hold {key}.")
        return hold

    def apply(self, operation_id: int, changes: list[tuple]) -> None:
        for change in changes:
            if change[0] == "hold":
                _, hold, d_captured, d_released = change
                hold.captured += d_captured
                hold.released += d_released
                delta = self.hold_deltas.setdefault(hold.id, [ZERO, ZERO])
                delta[0] += d_captured
                delta[1] += d_released
            else:
                _, hold, account, amount, bucket = change
                delta = self.account_deltas.setdefault(account.id, [ZERO, ZERO])
                if bucket == "available":
                    account.available += amount
                    delta[0] += amount
                else:
                    account.held += amount
                    delta[1] += amount
                self.entries.append((operation_id, hold.id if hold else None, account.id, amount, bucket))


def operations_apply(*, operations: Sequence[OperationSpec]) -> list[OperationResult]:
    """Apply a batch of transfers and releases; one result per operation, in order.

    Each operation is atomic and idempotent on its key: `applied` the first time,
    `duplicate` after (the money moved once), `rejected` with a code when invalid
    or when the ledger refuses it (others in the batch still apply). A key repeated
    within the batch is evaluated once: `duplicate` if its first occurrence was
    applied, else rejected like it.
    """
    results: list[OperationResult | None] = [None] * len(operations)
    valid: list[TransferSpec | ReleaseSpec] = []
    for index, spec in enumerate(operations):
        if isinstance(spec, InvalidSpec):
            results[index] = OperationResult(spec.key, "rejected", spec.code, spec.message)
        else:
            valid.append(spec)
    if valid:
        by_key = _retrying_deadlocks(_apply_batch, valid)
        seen: set[str] = set()
        for index, spec in enumerate(operations):
            if results[index] is None:
                result = by_key[spec.key]
                if spec.key in seen and result.status == "applied":
                    result = OperationResult(spec.key, "duplicate")
                results[index] = result
                seen.add(spec.key)
    return results  # type: ignore[return-value]


def _apply_batch(specs: list[TransferSpec | ReleaseSpec]) -> dict[str, OperationResult]:
    """Precondition: inside a transaction. A handful of statements whatever the batch size."""
    first: dict[str, TransferSpec | ReleaseSpec] = {}
    for spec in specs:
        first.setdefault(spec.key, spec)
    with localcontext(MONEY_CONTEXT), connection.cursor() as cursor:
        claimed = _claim(cursor, first.values())
        mine = [spec for spec in first.values() if spec.key in claimed]
        ledger = _lock(cursor, mine)
        outcome: dict[str, OperationResult] = {
            key: OperationResult(key, "duplicate") for key in first if key not in claimed
        }
        rejected_ids: list[int] = []
        for spec in mine:
            operation_id = claimed[spec.key]
            try:
                changes = ledger.evaluate(spec)
            except _Rejection as rejection:
                outcome[spec.key] = OperationResult(spec.key, "rejected", rejection.code, rejection.message)
                rejected_ids.append(operation_id)
                continue
            ledger.apply(operation_id, changes)
            outcome[spec.key] = OperationResult(spec.key, "applied")
        _write(cursor, ledger, rejected_ids)
    return outcome


def _by_key(row: dict) -> str:
    return row["key"]


def _claim(cursor, specs: Iterable[TransferSpec | ReleaseSpec]) -> dict[str, int]:
    """Insert the operation records; return key -> id for the keys not taken before.

    Sorted by key, so two batches sharing keys wait for each other in one order.
    """
    rows = sorted(({"key": spec.key, "kind": spec.kind, "payload": spec.as_json()} for spec in specs), key=_by_key)
    if not rows:
        return {}
    # One JSON document rather than a text[] of JSON: no per-element array escaping.
    cursor.execute(
        """INSERT INTO wallet_operation (key, kind, payload, created_at)
           SELECT t.key, t.kind, t.payload, now()
             FROM jsonb_to_recordset(%s::jsonb) AS t(key varchar, kind varchar, payload jsonb)
            ORDER BY t.key
           ON CONFLICT (key) DO NOTHING
        RETURNING key, id""",
        [json.dumps(rows)],
    )
    return dict(cursor.fetchall())


def _lock(cursor, specs: list[TransferSpec | ReleaseSpec]) -> _Ledger:
    """Lock the holds, then the accounts, each in id order; create missing credit accounts."""
    hold_keys: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    credit_pairs: set[tuple[str, str]] = set()
    for spec in specs:
        if isinstance(spec, ReleaseSpec):
            hold_keys.add(spec.hold)
            continue
        for leg in spec.legs:
            pairs.add((leg.owner, leg.asset))
            if leg.from_hold is None:
                credit_pairs.add((leg.owner, leg.asset))
            else:
                hold_keys.add(leg.from_hold)
    holds: dict[str, _HoldRow] = {}
    if hold_keys:
        cursor.execute(
            """SELECT key, id, account_id, amount, captured, released FROM wallet_hold
                WHERE key = ANY(%s::varchar[]) ORDER BY id FOR NO KEY UPDATE""",
            [sorted(hold_keys)],
        )
        holds = {row[0]: _HoldRow(*row[1:]) for row in cursor.fetchall()}
    account_ids = sorted({hold.account_id for hold in holds.values()})
    accounts = _lock_accounts(cursor, account_ids, sorted(pairs))
    missing = sorted(credit_pairs - accounts.keys())
    if missing:
        owners, assets = (list(column) for column in zip(*missing, strict=True))
        cursor.execute(
            """INSERT INTO wallet_account (owner, asset, available, held, created_at, updated_at)
               SELECT t.owner, t.asset, 0, 0, now(), now()
                 FROM unnest(%s::varchar[], %s::varchar[]) WITH ORDINALITY AS t(owner, asset, n)
                ORDER BY t.n
               ON CONFLICT (owner, asset) DO NOTHING""",
            [owners, assets],
        )
        accounts.update(_lock_accounts(cursor, [], missing))
    return _Ledger(holds, accounts)


def _lock_accounts(cursor, ids: list[int], pairs: list[tuple[str, str]]) -> dict[tuple[str, str], _AccountRow]:
    if not ids and not pairs:
        return {}
    owners = [owner for owner, _ in pairs]
    assets = [asset for _, asset in pairs]
    # The ids are resolved in a materialized CTE, then the table is locked by id alone:
    # a locking query whose WHERE self-joins wallet_account can drop a row that another
    # transaction updated meanwhile (READ COMMITTED re-checks the changed row).
    cursor.execute(
        """WITH wanted AS MATERIALIZED (
               SELECT unnest(%s::bigint[]) AS id
               UNION
               SELECT a.id FROM wallet_account a
                 JOIN unnest(%s::varchar[], %s::varchar[]) AS t(owner, asset) ON a.owner = t.owner AND a.asset = t.asset)
           SELECT id, owner, asset, available, held FROM wallet_account
            WHERE id = ANY(ARRAY(SELECT id FROM wanted)) ORDER BY id FOR NO KEY UPDATE""",
        [ids, owners, assets],
    )
    return {(row[1], row[2]): _AccountRow(*row) for row in cursor.fetchall()}


def _write(cursor, ledger: _Ledger, rejected_ids: list[int]) -> None:
    if rejected_ids:
        cursor.execute("DELETE FROM wallet_operation WHERE id = ANY(%s::bigint[])", [rejected_ids])
    if ledger.hold_deltas:
        ids = list(ledger.hold_deltas)
        cursor.execute(
            """UPDATE wallet_hold AS h SET captured = h.captured + d.captured, released = h.released + d.released
                 FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[]) AS d(id, captured, released)
                WHERE h.id = d.id""",
            [ids, [ledger.hold_deltas[i][0] for i in ids], [ledger.hold_deltas[i][1] for i in ids]],
        )
    if ledger.account_deltas:
        ids = list(ledger.account_deltas)
        cursor.execute(
            """UPDATE wallet_account AS a
                  SET available = a.available + d.available, held = a.held + d.held, updated_at = now()
                 FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[]) AS d(id, available, held)
                WHERE a.id = d.id""",
            [ids, [ledger.account_deltas[i][0] for i in ids], [ledger.account_deltas[i][1] for i in ids]],
        )
    if ledger.entries:
        columns = [list(column) for column in zip(*ledger.entries, strict=True)]
        cursor.execute(
            """INSERT INTO wallet_entry (operation_id, hold_id, account_id, amount, bucket, created_at)
               SELECT t.operation_id, t.hold_id, t.account_id, t.amount, t.bucket, now()
                 FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::numeric[], %s::varchar[])
                   AS t(operation_id, hold_id, account_id, amount, bucket)""",
            columns,
        )


def transfer_apply(*, key: str, legs: list[Leg | dict]) -> OperationResult:
    """One atomic multi-leg transfer (see `operations_apply`); raises on rejection."""
    raw = [leg.as_json() if isinstance(leg, Leg) else leg for leg in legs]
    spec = parse_transfer(key=parse_key(key), legs=raw)
    return _single(spec)


def hold_release(*, key: str, hold: str, amount: Decimal | str) -> OperationResult:
    """Give `amount` of a hold back to its account's available; raises on rejection."""
    spec = ReleaseSpec(key=parse_key(key), hold=parse_key(hold, "hold"), amount=parse_amount(amount))
    return _single(spec)


def _single(spec: TransferSpec | ReleaseSpec) -> OperationResult:
    (result,) = operations_apply(operations=[spec])
    if result.status == "rejected":
        raise OperationRejected(result.code or "rejected", result.message or "Rejected.")
    return result


# --- deposits and withdrawals ----------------------------------------------------


def deposit(*, key: str, owner: str, asset: str, amount: Decimal | str) -> tuple[OperationRecord, bool]:
    """Credit money from outside to `owner`'s available; idempotent on `key`. Returns (record, applied)."""
    return _external(kind="deposit", key=key, owner=owner, asset=asset, amount=amount)


def withdraw(*, key: str, owner: str, asset: str, amount: Decimal | str) -> tuple[OperationRecord, bool]:
    """Debit `owner`'s available to outside; InsufficientFunds if it is not there. Idempotent on `key`."""
    return _external(kind="withdrawal", key=key, owner=owner, asset=asset, amount=amount)


def _external(*, kind: str, key: str, owner: str, asset: str, amount) -> tuple[OperationRecord, bool]:
    key, owner, asset = parse_key(key), parse_owner(owner), parse_asset(asset)
    amount = parse_amount(amount)
    payload = {"owner": owner, "asset": asset, "amount": fmt(amount)}
    try:
        return _external_apply(kind, key, owner, asset, amount, payload)
    except DataError as exc:  # numeric overflow: the balance would not fit numeric(38, 18)
        raise ValidationFailed.field("amount", "the balance would exceed the largest the ledger stores") from exc


def _external_apply(kind, key, owner, asset, amount, payload) -> tuple[OperationRecord, bool]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO wallet_operation (key, kind, payload, created_at) VALUES (%s, %s, %s::jsonb, now())
               ON CONFLICT (key) DO NOTHING RETURNING id, created_at""",
            [key, kind, json.dumps(payload)],
        )
        row = cursor.fetchone()
        if row is None:
            existing = operation_find(key=key)
            if existing is None:  # claimed and rolled back meanwhile: cannot happen after the wait
                raise RuntimeError(f"operation {key} neither inserted nor found")
            if existing.kind != kind or existing.payload != payload:
                raise KeyConflict(f"Key {key} was used for another operation.")
            return existing, False
        operation_id, created_at = row
        if kind == "deposit":
            cursor.execute(
                """INSERT INTO wallet_account AS a (owner, asset, available, held, created_at, updated_at)
                   VALUES (%s, %s, %s, 0, now(), now())
                   ON CONFLICT (owner, asset)
                   DO UPDATE SET available = a.available + EXCLUDED.available, updated_at = now()
                   RETURNING id, available""",
                [owner, asset, amount],
            )
            account_id, available = cursor.fetchone()
            if available >= MONEY_LIMIT:
                raise ValidationFailed.field("amount", "the balance would exceed the largest the ledger stores")
            signed = amount
        else:
            cursor.execute(
                """UPDATE wallet_account SET available = available - %s, updated_at = now()
                    WHERE owner = %s AND asset = %s AND available >= %s RETURNING id""",
                [amount, owner, asset, amount],
            )
            row = cursor.fetchone()
            if row is None:
                raise InsufficientFunds(f"Not enough {asset} available to withdraw.", details={"asset": asset})
            account_id, signed = row[0], -amount
        cursor.execute(
            """INSERT INTO wallet_entry (operation_id, hold_id, account_id, amount, bucket, created_at)
               VALUES (%s, NULL, %s, %s, 'available', now())""",
            [operation_id, account_id, signed],
        )
    return OperationRecord(key, kind, payload, created_at), True


def operation_find(*, key: str) -> OperationRecord | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, kind, payload, created_at FROM wallet_operation WHERE key = %s", [key])
        row = cursor.fetchone()
    if row is None:
        return None
    key, kind, payload, created_at = row
    if isinstance(payload, str):
        payload = json.loads(payload)
    return OperationRecord(key, kind, payload, created_at)
