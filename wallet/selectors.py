"""Reads of the wallet ledger: balances, holds, operations, totals, and a ledger audit."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import connection

from exchange.errors import NotFound
from wallet.services import HoldState, OperationRecord, hold_find, operation_find
from wallet.validation import MONEY_CONTEXT


@dataclass(slots=True, frozen=True)
class BalanceRow:
    asset: str
    available: Decimal
    held: Decimal

    @property
    def total(self) -> Decimal:
        return MONEY_CONTEXT.add(self.available, self.held)


@dataclass(slots=True, frozen=True)
class AssetTotals:
    """Conservation per asset: available + held == deposits - withdrawals + adjustments."""

    asset: str
    available: Decimal
    held: Decimal
    deposits: Decimal
    withdrawals: Decimal
    adjustments: Decimal

    @property
    def balanced(self) -> bool:
        in_accounts = MONEY_CONTEXT.add(self.available, self.held)
        return in_accounts == MONEY_CONTEXT.add(MONEY_CONTEXT.subtract(self.deposits, self.withdrawals), self.adjustments)


def hold_get(*, key: str) -> HoldState:
    hold = hold_find(key=key)
    if hold is None:
        raise NotFound(f"No hold {key}.")
    return hold


def holds_open(*, prefix: str, older_than_seconds: float, limit: int) -> list[HoldState]:
    """Holds with something left, whose key starts with `prefix`, placed over `older_than_seconds` ago."""
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT h.key, a.owner, a.asset, h.amount, h.requested, h.captured, h.released, h.created_at
                 FROM wallet_hold h JOIN wallet_account a ON a.id = h.account_id
                WHERE h.key LIKE %s AND h.captured + h.released < h.amount
                  AND h.created_at < now() - make_interval(secs => %s)
                ORDER BY h.id LIMIT %s""",
            [pattern, older_than_seconds, limit],
        )
        return [HoldState(*row) for row in cursor.fetchall()]


def operation_get(*, key: str) -> OperationRecord:
    record = operation_find(key=key)
    if record is None:
        raise NotFound(f"No operation {key} was applied.")
    return record


def balances_of(*, owner: str) -> list[BalanceRow]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT asset, available, held FROM wallet_account WHERE owner = %s ORDER BY asset", [owner]
        )
        return [BalanceRow(*row) for row in cursor.fetchall()]


def totals() -> list[AssetTotals]:
    """Sums per asset over all accounts, and what came in and went out (from the ledger lines)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH balances AS (
                SELECT asset, SUM(available) AS available, SUM(held) AS held
                  FROM wallet_account GROUP BY asset
            ), flows AS (
                SELECT a.asset,
                       SUM(e.amount) FILTER (WHERE o.kind = 'deposit') AS deposits,
                       -SUM(e.amount) FILTER (WHERE o.kind = 'withdrawal') AS withdrawals,
                       SUM(e.amount) FILTER (WHERE o.kind = 'adjustment') AS adjustments
                  FROM wallet_entry e
                  JOIN wallet_operation o ON o.id = e.operation_id
                  JOIN wallet_account a ON a.id = e.account_id
                 WHERE o.kind IN ('deposit', 'withdrawal', 'adjustment')
                 GROUP BY a.asset
            )
            SELECT b.asset, b.available, b.held,
                   COALESCE(f.deposits, 0), COALESCE(f.withdrawals, 0), COALESCE(f.adjustments, 0)
              FROM balances b LEFT JOIN flows f ON f.asset = b.asset
             ORDER BY b.asset
            """
        )
        return [AssetTotals(*row) for row in cursor.fetchall()]


def ledger_problems() -> list[str]:
    """Audit the double entry; an empty list means every invariant holds.

    * each account's available/held equals the sum of its entries per bucket;
    * each hold's captured/released equals what its entries say;
    * each transfer/release and each hold placement sums to zero per asset.
    """
    problems: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT a.owner, a.asset, a.available, a.held,
                   COALESCE(SUM(e.amount) FILTER (WHERE e.bucket = 'available'), 0),
                   COALESCE(SUM(e.amount) FILTER (WHERE e.bucket = 'held'), 0)
              FROM wallet_account a LEFT JOIN wallet_entry e ON e.account_id = a.id
             GROUP BY a.id
            HAVING a.available <> COALESCE(SUM(e.amount) FILTER (WHERE e.bucket = 'available'), 0)
                OR a.held <> COALESCE(SUM(e.amount) FILTER (WHERE e.bucket = 'held'), 0)
            """
        )
        for owner, asset, available, held, sum_available, sum_held in cursor.fetchall():
            problems.append(
                f"account {owner} {asset}: available {available} held {held}, entries say {sum_available} / {sum_held}"
            )
        cursor.execute(
            """
            SELECT h.key, h.captured, h.released,
                   COALESCE(-SUM(e.amount) FILTER (WHERE o.kind = 'transfer'), 0),
                   COALESCE(-SUM(e.amount) FILTER (WHERE o.kind = 'release'), 0)
              FROM wallet_hold h
              LEFT JOIN wallet_entry e ON e.hold_id = h.id AND e.bucket = 'held' AND e.operation_id IS NOT NULL
              LEFT JOIN wallet_operation o ON o.id = e.operation_id
             GROUP BY h.id
            HAVING h.captured <> COALESCE(-SUM(e.amount) FILTER (WHERE o.kind = 'transfer'), 0)
                OR h.released <> COALESCE(-SUM(e.amount) FILTER (WHERE o.kind = 'release'), 0)
            """
        )
        for key, captured, released, entries_captured, entries_released in cursor.fetchall():
            problems.append(
                f"hold {key}: captured {captured} released {released}, entries say {entries_captured} / {entries_released}"
            )
        cursor.execute(
            """
            SELECT o.key, a.asset, SUM(e.amount)
              FROM wallet_entry e
              JOIN wallet_operation o ON o.id = e.operation_id
              JOIN wallet_account a ON a.id = e.account_id
             WHERE o.kind IN ('transfer', 'release')
             GROUP BY o.id, a.asset
            HAVING SUM(e.amount) <> 0
            UNION ALL
            SELECT h.key, a.asset, SUM(e.amount)
              FROM wallet_entry e
              JOIN wallet_hold h ON h.id = e.hold_id
              JOIN wallet_account a ON a.id = e.account_id
             WHERE e.operation_id IS NULL
             GROUP BY h.id, a.asset
            HAVING SUM(e.amount) <> 0
            """
        )
        for key, asset, total in cursor.fetchall():
            problems.append(f"operation {key}: {asset} entries sum to {total}, not 0")
    return problems
