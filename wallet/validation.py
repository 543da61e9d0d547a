"""Parsing and checking of wallet inputs: amounts, assets, owners, keys, operations.

Everything here raises `ValidationFailed` (400 `validation_error`) or returns
typed values; nothing touches the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation

from exchange.errors import ValidationFailed

# numeric(38, 18): at most 18 decimal places and 20 integer digits. Arithmetic on
# such values needs more than the default 28 significant digits to stay exact.
MONEY_CONTEXT = Context(prec=80, traps=[InvalidOperation])
MAX_DECIMAL_PLACES = 18
MAX_DIGITS = 38
MONEY_LIMIT = Decimal(10) ** (MAX_DIGITS - MAX_DECIMAL_PLACES)  # exclusive

ASSET_RE = re.compile(r"^[A-Z0-9]{2,10}$")
OWNER_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,64}$")
KEY_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")

MAX_LEGS = 20


def fmt(value: Decimal) -> str:
    """Fixed-point text of a Decimal, without trailing zeros (never `1E-8`)."""
    return format(MONEY_CONTEXT.normalize(value), "f")


def parse_amount(value, field: str = "amount") -> Decimal:
    """A positive, finite amount that fits numeric(38, 18); strings or JSON numbers."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValidationFailed.field(field, "must be a decimal string")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError):
        raise ValidationFailed.field(field, "must be a decimal string") from None
    if not amount.is_finite():
        raise ValidationFailed.field(field, "must be finite")
    if amount <= 0:
        raise ValidationFailed.field(field, "must be positive")
    normal = MONEY_CONTEXT.normalize(amount)
    if normal.as_tuple().exponent < -MAX_DECIMAL_PLACES:
        raise ValidationFailed.field(field, f"at most {MAX_DECIMAL_PLACES} decimal places")
    if normal >= MONEY_LIMIT:
        raise ValidationFailed.field(field, f"at most {MAX_DIGITS} digits ({MAX_DIGITS - MAX_DECIMAL_PLACES} before the point)")
    return normal


def _text(value, field: str, pattern: re.Pattern, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValidationFailed.field(field, f"must be {what}")
    return value


def parse_asset(value, field: str = "asset") -> str:
    return _text(value, field, ASSET_RE, "2-10 of A-Z0-9")


def parse_owner(value, field: str = "owner") -> str:
    return _text(value, field, OWNER_RE, "1-64 of A-Za-z0-9._:@-")


def parse_key(value, field: str = "key") -> str:
    return _text(value, field, KEY_RE, "1-128 of A-Za-z0-9._:@-")


def parse_bool(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationFailed.field(field, "must be true or false")
    return value


def require_object(value, what: str = "body") -> dict:
    if not isinstance(value, dict):
        raise ValidationFailed.field(what, "must be a JSON object")
    return value


# --- operations of a batch -----------------------------------------------------


@dataclass(slots=True, frozen=True)
class Leg:
    """Credit `amount` to the owner's available, or (with `from_hold`) debit that hold."""

    owner: str
    asset: str
    amount: Decimal
    from_hold: str | None = None

    def as_json(self) -> dict:
        data = {"owner": self.owner, "asset": self.asset, "amount": fmt(self.amount)}
        if self.from_hold is not None:
            data["from_hold"] = self.from_hold
        return data


@dataclass(slots=True, frozen=True)
class TransferSpec:
    key: str
    legs: tuple[Leg, ...]
    kind = "transfer"

    def as_json(self) -> dict:
        return {"legs": [leg.as_json() for leg in self.legs]}


@dataclass(slots=True, frozen=True)
class ReleaseSpec:
    key: str
    hold: str
    amount: Decimal
    kind = "release"

    def as_json(self) -> dict:
        return {"hold": self.hold, "amount": fmt(self.amount)}


@dataclass(slots=True, frozen=True)
class InvalidSpec:
    """An operation refused before it reached the ledger (its result is `rejected`)."""

    key: str
    code: str
    message: str


OperationSpec = TransferSpec | ReleaseSpec | InvalidSpec


def parse_leg(raw, index: int) -> Leg:
    field = f"legs[{index}]"
    raw = require_object(raw, field)
    unknown = set(raw) - {"owner", "asset", "amount", "from_hold"}
    if unknown:
        raise ValidationFailed.field(field, f"unknown fields: {', '.join(sorted(unknown))}")
    from_hold = raw.get("from_hold")
    return Leg(
        owner=parse_owner(raw.get("owner"), f"{field}.owner"),
        asset=parse_asset(raw.get("asset"), f"{field}.asset"),
        amount=parse_amount(raw.get("amount"), f"{field}.amount"),
        from_hold=None if from_hold is None else parse_key(from_hold, f"{field}.from_hold"),
    )


def check_balanced(legs: tuple[Leg, ...]) -> None:
    """Per asset, what leaves holds equals what is credited; each transfer has both sides."""
    net: dict[str, Decimal] = {}
    debits = credits = 0
    for leg in legs:
        sign = -1 if leg.from_hold else 1
        debits += leg.from_hold is not None
        credits += leg.from_hold is None
        net[leg.asset] = MONEY_CONTEXT.add(net.get(leg.asset, Decimal(0)), sign * leg.amount)
    if not debits or not credits:
        raise ValidationFailed.field("legs", "a transfer needs at least one debit (from_hold) and one credit")
    unbalanced = sorted(asset for asset, total in net.items() if total != 0)
    if unbalanced:
        raise ValidationFailed(
            f"legs: debits and credits differ for {', '.join(unbalanced)}",
            details={"legs": [f"unbalanced: {asset}" for asset in unbalanced]},
        )


def parse_transfer(*, key: str, legs) -> TransferSpec:
    if not isinstance(legs, list) or not legs:
        raise ValidationFailed.field("legs", "must be a non-empty list")
    if len(legs) > MAX_LEGS:
        raise ValidationFailed.field("legs", f"at most {MAX_LEGS} legs")
    parsed = tuple(parse_leg(raw, i) for i, raw in enumerate(legs))
    check_balanced(parsed)
    return TransferSpec(key=key, legs=parsed)


def parse_operation(raw) -> OperationSpec:
    """One item of `POST /v1/operations`.

    A missing or malformed key fails the whole request (its result could not be
    named); any other problem only rejects this operation.
    """
    raw = require_object(raw, "operations[]")
    key = parse_key(raw.get("key"), "operations[].key")
    try:
        kind = raw.get("type")
        if kind == "transfer":
            _no_unknown(raw, {"key", "type", "legs"})
            return parse_transfer(key=key, legs=raw.get("legs"))
        if kind == "release":
            _no_unknown(raw, {"key", "type", "hold", "amount"})
            return ReleaseSpec(key=key, hold=parse_key(raw.get("hold"), "hold"), amount=parse_amount(raw.get("amount")))
        raise ValidationFailed.field("type", "must be 'transfer' or 'release'")
    except ValidationFailed as exc:
        return InvalidSpec(key=key, code=exc.code, message=exc.message)


def _no_unknown(raw: dict, allowed: set[str]) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ValidationFailed.field("operation", f"unknown fields: {', '.join(sorted(unknown))}")
