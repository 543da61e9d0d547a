"""The wallet's HTTP API (JSON, bearer token). Each view: parse, call one service or selector, render.

Errors are `{"error": {"code", "message", "details"}}` with the DomainError's status.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from exchange.errors import DomainError, ValidationFailed
from wallet import selectors, services
from wallet.validation import (
    fmt,
    parse_amount,
    parse_asset,
    parse_key,
    parse_operation,
    parse_owner,
    require_object,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 500


def error_response(status: int, code: str, message: str, details: dict | None = None) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "details": details or {}}}, status=status)


def _authorized(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    expected = settings.WALLET_TOKEN or ""
    return scheme.lower() == "bearer" and bool(expected) and hmac.compare_digest(token.strip().encode(), expected.encode())


def endpoint(*methods: str):
    """Bearer auth, allowed methods and DomainError rendering for one wallet view."""

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            if not _authorized(request):
                return error_response(401, "not_authenticated", "A valid wallet bearer token is required.")
            if request.method not in methods:
                response = error_response(405, "method_not_allowed", f"Method {request.method} not allowed.")
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return view(request, *args, **kwargs)
            except DomainError as exc:
                return error_response(exc.http_status, exc.code, exc.message, exc.details)

        return wrapper

    return decorate


def _body(request: HttpRequest, allowed: set[str]) -> dict:
    try:
        data = json.loads(request.body or b"null", parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed.field("body", "must be JSON") from None
    data = require_object(data)
    unknown = set(data) - allowed
    if unknown:
        raise ValidationFailed.field("body", f"unknown fields: {', '.join(sorted(unknown))}")
    return data


def _time(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


def hold_json(hold: services.HoldState) -> dict:
    return {
        "key": hold.key,
        "owner": hold.owner,
        "asset": hold.asset,
        "amount": fmt(hold.amount),
        "requested": fmt(hold.requested),
        "captured": fmt(hold.captured),
        "released": fmt(hold.released),
        "remaining": fmt(hold.remaining),
        "created_at": _time(hold.created_at),
    }


def result_json(result: services.OperationResult) -> dict:
    data = {"key": result.key, "status": result.status}
    if result.code is not None:
        data["code"] = result.code
        data["message"] = result.message
    return data


def operation_json(record: services.OperationRecord) -> dict:
    return {
        "key": record.key,
        "kind": record.kind,
        "applied": True,
        "payload": record.payload,
        "created_at": _time(record.created_at),
    }


@endpoint("POST", "GET")
def holds(request):
    if request.method == "GET":
        return _open_holds(request)
    data = _body(request, {"key", "owner", "asset", "amount", "up_to"})
    hold, created = services.hold_place(  # it parses every field itself
        key=data.get("key"),
        owner=data.get("owner"),
        asset=data.get("asset"),
        amount=data.get("amount"),
        up_to=data.get("up_to", False),
    )
    return JsonResponse(hold_json(hold), status=201 if created else 200)


def _open_holds(request) -> JsonResponse:
    """GET /v1/holds?prefix=order:&older_than=60&limit=500: holds with something left (for sweepers)."""
    try:
        older_than = float(request.GET.get("older_than", "60"))
        limit = min(max(int(request.GET.get("limit", "500")), 1), 5000)
    except ValueError:
        raise ValidationFailed.field("query", "older_than and limit must be numbers") from None
    found = selectors.holds_open(prefix=request.GET.get("prefix", ""), older_than_seconds=older_than, limit=limit)
    return JsonResponse({"holds": [hold_json(hold) for hold in found]})


@endpoint("GET")
def hold_detail(request, key: str):
    return JsonResponse(hold_json(selectors.hold_get(key=key)))


@endpoint("POST")
def operations(request):
    data = _body(request, {"operations"})
    raw = data.get("operations")
    limit = getattr(settings, "WALLET_MAX_BATCH", DEFAULT_MAX_BATCH)
    if not isinstance(raw, list) or not raw:
        raise ValidationFailed.field("operations", "must be a non-empty list")
    if len(raw) > limit:
        raise ValidationFailed.field("operations", f"at most {limit} per call")
    specs = [parse_operation(item) for item in raw]
    results = services.operations_apply(operations=specs)
    return JsonResponse({"results": [result_json(result) for result in results]})


@endpoint("GET")
def operation_detail(request, key: str):
    return JsonResponse(operation_json(selectors.operation_get(key=key)))


def _external(request, service) -> JsonResponse:
    data = _body(request, {"key", "owner", "asset", "amount"})
    record, applied = service(
        key=parse_key(data.get("key")),
        owner=parse_owner(data.get("owner")),
        asset=parse_asset(data.get("asset")),
        amount=parse_amount(data.get("amount")),
    )
    body = {**operation_json(record), "status": "applied" if applied else "duplicate"}
    return JsonResponse(body, status=201 if applied else 200)


@endpoint("POST")
def deposits(request):
    return _external(request, services.deposit)


@endpoint("POST")
def withdrawals(request):
    return _external(request, services.withdraw)


@endpoint("GET")
def balances(request, owner: str):
    owner = parse_owner(owner)
    rows = selectors.balances_of(owner=owner)
    return JsonResponse(
        {
            "owner": owner,
            "balances": [
                {"asset": row.asset, "available": fmt(row.available), "held": fmt(row.held), "total": fmt(row.total)}
                for row in rows
            ],
        }
    )


@endpoint("GET")
def totals(request):
    return JsonResponse(
        {
            "totals": [
                {
                    "asset": row.asset,
                    "available": fmt(row.available),
                    "held": fmt(row.held),
                    "deposits": fmt(row.deposits),
                    "withdrawals": fmt(row.withdrawals),
                    "adjustments": fmt(row.adjustments),
                    "balanced": row.balanced,
                }
                for row in selectors.totals()
            ]
        }
    )


def healthz(request):
    """Liveness and database reachability; no token needed (it reveals nothing)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure means "not healthy"; say which
        return JsonResponse({"status": "down", "database": exc.__class__.__name__}, status=503)
    return JsonResponse({"status": "ok"})


def not_found(request, exception=None):
    return error_response(404, "not_found", "No such endpoint.")


def server_error(request):
    return error_response(500, "internal_error", "An internal error occurred.")

