"""HTTP client of the wallet service: the only way the exchange touches balances.

One pooled `requests.Session` per process (`wallet_client()`); connection errors
are retried a few times (nothing reached the wallet, and every call is
idempotent anyway); reads and timeouts are not retried here: callers retry with
the same idempotency key.

Errors: the wallet unreachable, timing out or failing (5xx) -> `WalletUnavailable`;
422 insufficient funds -> `InsufficientFunds`; any other refusal -> `WalletRejected`
with the wallet's code.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any
from urllib.parse import quote, urlencode

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from exchange.errors import DomainError, InsufficientFunds, WalletUnavailable

POOL_SIZE = 20
CONNECT_RETRIES = 3
BACKOFF_SECONDS = 0.05
# Sums of numeric(38, 18) values need more than the default 28 significant digits.
_EXACT = Context(prec=80)


class WalletRejected(DomainError):
    """The wallet refused the request (4xx other than insufficient funds); `code` is the wallet's."""

    code = "wallet_rejected"
    http_status = 400
    default_message = "The wallet refused the request."

    def __init__(self, message: str | None = None, *, code: str | None = None, status: int = 400, details: dict | None = None):
        super().__init__(message, details=details)
        if code:
            self.code = code
        self.status = status


def owner_for_user(user_id: int) -> str:
    """The wallet owner name of a trader."""
    return f"user:{user_id}"


@dataclass(slots=True, frozen=True)
class HoldResult:
    key: str
    owner: str
    asset: str
    amount: Decimal  # what is held (less than `requested` only for an up_to hold)
    requested: Decimal
    captured: Decimal
    released: Decimal
    created: bool  # False: the key was placed before, this is that hold

    @property
    def remaining(self) -> Decimal:
        return _EXACT.subtract(_EXACT.subtract(self.amount, self.captured), self.released)

    @classmethod
    def from_json(cls, data: dict, *, created: bool) -> HoldResult:
        return cls(
            key=data["key"],
            owner=data["owner"],
            asset=data["asset"],
            amount=Decimal(data["amount"]),
            requested=Decimal(data.get("requested", data["amount"])),
            captured=Decimal(data["captured"]),
            released=Decimal(data["released"]),
            created=created,
        )


@dataclass(slots=True, frozen=True)
class OperationResult:
    key: str
    status: str  # applied | duplicate | rejected
    code: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        """The money moved, now or before (applied or duplicate)."""
        return self.status in ("applied", "duplicate")


@dataclass(slots=True, frozen=True)
class ExternalResult:
    """A deposit or withdrawal: `status` applied, or duplicate (it was applied before)."""

    key: str
    kind: str
    status: str
    owner: str
    asset: str
    amount: Decimal


@dataclass(slots=True, frozen=True)
class Balance:
    asset: str
    available: Decimal
    held: Decimal
    total: Decimal


@dataclass(slots=True, frozen=True)
class AssetTotals:
    asset: str
    available: Decimal
    held: Decimal
    deposits: Decimal
    withdrawals: Decimal
    adjustments: Decimal

    @property
    def balanced(self) -> bool:
        """Conservation: what all accounts hold is what came in minus what went out."""
        in_accounts = _EXACT.add(self.available, self.held)
        return in_accounts == _EXACT.add(_EXACT.subtract(self.deposits, self.withdrawals), self.adjustments)


# --- operation builders (the items given to `apply`) ---------------------------


def leg(owner: str, asset: str, amount: Decimal | str, *, from_hold: str | None = None) -> dict:
    """A transfer leg: credit the owner's available, or debit the hold `from_hold`."""
    data: dict[str, Any] = {"owner": owner, "asset": asset, "amount": amount}
    if from_hold is not None:
        data["from_hold"] = from_hold
    return data


def transfer(key: str, legs: list[dict]) -> dict:
    return {"key": key, "type": "transfer", "legs": legs}


def release(key: str, hold: str, amount: Decimal | str) -> dict:
    return {"key": key, "type": "release", "hold": hold, "amount": amount}


def _json_default(value: Any):
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {value}")
        return format(value, "f")
    raise TypeError(f"cannot send {type(value).__name__} to the wallet")


class WalletClient:
    """One wallet endpoint, through a pooled transport adapter (shareable by a process's threads).

    Requests go straight to the adapter as prepared requests: the Session layer
    (cookies, environment and proxy settings, redirects, hooks) has nothing to do
    for an internal JSON service, yet cost a quarter of each call's CPU, and every
    order placement makes one call.
    """

    def __init__(self, base_url: str, token: str, timeout: float, *, pool_size: int = POOL_SIZE):
        self.base_url = base_url.rstrip("/")
        self.timeout = (min(timeout, 2.0), timeout)  # (connect, read)
        retry = Retry(
            total=CONNECT_RETRIES,
            connect=CONNECT_RETRIES,
            read=0,
            status=0,
            other=0,
            redirect=0,
            backoff_factor=BACKOFF_SECONDS,
            allowed_methods=None,  # connect errors only: the request never left, any method is safe
            raise_on_status=False,
        )
        self.adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=retry)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}

    def close(self) -> None:
        self.adapter.close()

    # -- transport --

    def _request(self, method: str, path: str, body: dict | None = None, *, missing_ok: bool = False):
        data = None if body is None else json.dumps(body, default=_json_default)
        request = requests.PreparedRequest()
        request.prepare(method=method, url=self.base_url + path, headers=self.headers, data=data)
        try:
            response = self.adapter.send(request, timeout=self.timeout)
            response.content  # noqa: B018 - read the body here, where a broken connection is "unreachable"
        except requests.RequestException as exc:
            raise WalletUnavailable(f"Wallet unreachable: {exc.__class__.__name__}") from exc
        if response.status_code >= 500:
            raise WalletUnavailable(f"Wallet answered {response.status_code}.")
        try:
            payload = response.json()
        except ValueError as exc:
            raise WalletUnavailable(f"Wallet answered {response.status_code} without JSON.") from exc
        if response.status_code == 404 and missing_ok:
            return None, response.status_code
        if response.status_code >= 400:
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            code = error.get("code") or "wallet_rejected"
            message = error.get("message") or f"Wallet answered {response.status_code}."
            details = error.get("details") or {}
            if response.status_code == 422 and code == "insufficient_funds":
                raise InsufficientFunds(message, details=details)
            raise WalletRejected(message, code=code, status=response.status_code, details=details)
        return payload, response.status_code

    # -- holds --

    def place_hold(self, *, key: str, owner: str, asset: str, amount: Decimal, up_to: bool = False) -> HoldResult:
        """Hold `amount` (with up_to: as much of it as is available). Idempotent on key."""
        data, status = self._request(
            "POST", "/v1/holds", {"key": key, "owner": owner, "asset": asset, "amount": amount, "up_to": up_to}
        )
        return HoldResult.from_json(data, created=status == 201)

    def get_hold(self, key: str) -> HoldResult | None:
        data, _ = self._request("GET", f"/v1/holds/{quote(key, safe='')}", missing_ok=True)
        return None if data is None else HoldResult.from_json(data, created=False)

    def open_holds(self, *, prefix: str, older_than_seconds: float, limit: int = 500) -> list[HoldResult]:
        """Holds with something left whose key starts with `prefix` (oldest first)."""
        query = urlencode({"prefix": prefix, "older_than": older_than_seconds, "limit": limit})
        data, _ = self._request("GET", f"/v1/holds?{query}")
        return [HoldResult.from_json(item, created=False) for item in data["holds"]]

    # -- transfers and releases --

    def apply(self, operations: list[dict]) -> list[OperationResult]:
        """Apply transfers/releases (see `transfer`, `release`); one result per operation, in order."""
        data, _ = self._request("POST", "/v1/operations", {"operations": operations})
        return [
            OperationResult(key=r["key"], status=r["status"], code=r.get("code"), message=r.get("message"))
            for r in data["results"]
        ]

    def operation(self, key: str) -> dict | None:
        """The applied operation `{key, kind, applied, payload, created_at}`, or None if never applied."""
        data, _ = self._request("GET", f"/v1/operations/{quote(key, safe='')}", missing_ok=True)
        return data

    # -- money in and out --

    def deposit(self, *, key: str, owner: str, asset: str, amount: Decimal) -> ExternalResult:
        return self._external("/v1/deposits", key=key, owner=owner, asset=asset, amount=amount)

    def withdraw(self, *, key: str, owner: str, asset: str, amount: Decimal) -> ExternalResult:
        return self._external("/v1/withdrawals", key=key, owner=owner, asset=asset, amount=amount)

    def _external(self, path: str, **body) -> ExternalResult:
        data, _ = self._request("POST", path, body)
        payload = data["payload"]
        return ExternalResult(
            key=data["key"],
            kind=data["kind"],
            status=data["status"],
            owner=payload["owner"],
            asset=payload["asset"],
            amount=Decimal(payload["amount"]),
        )

    # -- reads --

    def balances(self, owner: str) -> list[Balance]:
        data, _ = self._request("GET", f"/v1/balances/{quote(owner, safe='')}")
        return [
            Balance(row["asset"], Decimal(row["available"]), Decimal(row["held"]), Decimal(row["total"]))
            for row in data["balances"]
        ]

    def totals(self) -> dict[str, AssetTotals]:
        data, _ = self._request("GET", "/v1/totals")
        return {
            row["asset"]: AssetTotals(
                asset=row["asset"],
                available=Decimal(row["available"]),
                held=Decimal(row["held"]),
                deposits=Decimal(row["deposits"]),
                withdrawals=Decimal(row["withdrawals"]),
                adjustments=Decimal(row.get("adjustments", "0")),
            )
            for row in data["totals"]
        }


@functools.lru_cache(maxsize=8)
def _client_for(pid: int, base_url: str, token: str, timeout: float) -> WalletClient:
    return WalletClient(base_url, token, timeout)


def wallet_client() -> WalletClient:
    """This process's client for the configured wallet (a forked child builds its own pool)."""
    return _client_for(os.getpid(), settings.WALLET_URL, settings.WALLET_TOKEN, float(settings.WALLET_TIMEOUT_SECONDS))


def _cache_clear() -> None:
    _client_for.cache_clear()


wallet_client.cache_clear = _cache_clear  # type: ignore[attr-defined]
