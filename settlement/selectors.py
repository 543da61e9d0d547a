"""Reads of the settlement outbox: the review queue, its filter choices, a trade's legs,
backlog counts and what staff resolutions left in holds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Case, IntegerField, Q, QuerySet, Value, When
from django.utils import timezone

from settlement.models import HoldRelease, Settlement

# Review order: dead letters first, then what is still in flight, then the rest.
_REVIEW_RANK = Case(
    When(status=Settlement.Status.FAILED, then=Value(0)),
    When(status=Settlement.Status.PENDING, then=Value(1)),
    default=Value(2),
    output_field=IntegerField(),
)

AGE_BUCKETS = {
    "5m": ("under 5 minutes", None, timedelta(minutes=5)),
    "1h": ("5 minutes to 1 hour", timedelta(minutes=5), timedelta(hours=1)),
    "24h": ("1 to 24 hours", timedelta(hours=1), timedelta(hours=24)),
    "old": ("over 24 hours", timedelta(hours=24), None),
}


def settlements_for_review() -> QuerySet[Settlement]:
    """Settlements with `review_rank` (failed 0, pending 1, others 2), trade, market and parties joined."""
    return Settlement.objects.select_related(
        "trade", "trade__market", "trade__buyer", "trade__seller"
    ).annotate(review_rank=_REVIEW_RANK)


def holdreleases_for_review() -> QuerySet[HoldRelease]:
    """Hold releases with `review_rank` (failed 0, pending 1, done 2), order and user joined."""
    rank = Case(
        When(status=HoldRelease.Status.FAILED, then=Value(0)),
        When(status=HoldRelease.Status.PENDING, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    return HoldRelease.objects.select_related("order", "order__user").annotate(review_rank=rank)


def settlements_filter(
    queryset: QuerySet[Settlement],
    *,
    user_id: int | None = None,
    error_code: str | None = None,
    age: str | None = None,
) -> QuerySet[Settlement]:
    """Narrow by party (buyer or seller), last error code, or age bucket (AGE_BUCKETS key)."""
    if user_id is not None:
        queryset = queryset.filter(Q(trade__buyer_id=user_id) | Q(trade__seller_id=user_id))
    if error_code:
        queryset = queryset.filter(last_error_code=error_code)
    if age in AGE_BUCKETS:
        _, younger, older = AGE_BUCKETS[age]
        now = timezone.now()
        if younger is not None:
            queryset = queryset.filter(created_at__lte=now - younger)
        if older is not None:
            queryset = queryset.filter(created_at__gt=now - older)
    return queryset


def settlement_error_codes(*, model=Settlement, limit: int = 50) -> list[str]:
    """Distinct last error codes of rows not settled (the error filter's choices)."""
    return list(
        model.objects.exclude(last_error_code="")
        .exclude(status__in=["settled", "done"])
        .order_by("last_error_code")
        .values_list("last_error_code", flat=True)
        .distinct()[:limit]
    )


def settlement_parties(*, limit: int = 100) -> list[tuple[int, str]]:
    """(id, username) of users party to a failed or pending settlement (the user filter's choices)."""
    open_rows = Settlement.objects.filter(
        status__in=[Settlement.Status.FAILED, Settlement.Status.PENDING]
    )
    buyer_ids = open_rows.values_list("trade__buyer_id", flat=True)
    seller_ids = open_rows.values_list("trade__seller_id", flat=True)
    return list(
        get_user_model()
        .objects.filter(Q(pk__in=buyer_ids) | Q(pk__in=seller_ids))
        .order_by("username")
        .values_list("pk", "username")[:limit]
    )


@dataclass(slots=True, frozen=True)
class LegsView:
    key: str
    legs: list[dict]
    balance: dict[str, Decimal]  # per asset, credits minus debits (zero when balanced)
    error: str = ""


def settlement_legs_view(settlement: Settlement) -> LegsView:
    """The wallet operation this settlement sends (or why it cannot be built)."""
    from settlement.services import InvalidTrade, TradeTerms, legs_balance, settlement_legs

    terms = TradeTerms.of(settlement.trade)
    try:
        legs = settlement_legs(terms=terms)
    except InvalidTrade as exc:
        return LegsView(terms.key, [], {}, exc.message)
    return LegsView(terms.key, legs, legs_balance(legs))


def outbox_counts() -> dict[str, int]:
    """Rows per kind and status, e.g. {"settlement:pending": 3, "hold_release:failed": 1}."""
    from django.db.models import Count

    counts: dict[str, int] = {}
    for kind, model in (("settlement", Settlement), ("hold_release", HoldRelease)):
        for row in model.objects.values("status").annotate(n=Count("pk")):
            counts[f"{kind}:{row['status']}"] = row["n"]
    return counts


def resolved_without_transfer_holds() -> dict[str, Decimal]:
    """Per asset, what staff resolutions left in holds (the trades' captures that never ran).

    The conservation check adds these to what is expected to remain held: the
    explicit adjustment that keeps it balanced after a "resolved without transfer".
    """
    totals: dict[str, Decimal] = {}
    rows = Settlement.objects.filter(
        resolution=Settlement.Resolution.RESOLVED_WITHOUT_TRANSFER
    ).select_related("trade__market")
    for settlement in rows:
        trade = settlement.trade
        base, quote = trade.market.base_asset, trade.market.quote_asset
        totals[base] = totals.get(base, Decimal(0)) + trade.quantity
        totals[quote] = totals.get(quote, Decimal(0)) + trade.quote_quantity
    return totals
