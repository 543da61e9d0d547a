"""Liveness and readiness probes for ops (outside the /api/v1/ envelope)."""

from django.db import connection
from django.http import JsonResponse

from exchange import infra


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks = {"database": _check_database(), "redis": _check_redis()}
    checks.update(_check_engines())
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # any failure means "not ready"; say which
        return f"down: {exc.__class__.__name__}"


def _check_redis() -> str:
    try:
        infra.redis_client().ping()
        return "ok"
    except Exception as exc:
        return f"down: {exc.__class__.__name__}"


def _check_engines() -> dict:
    """One entry per enabled market: is a live engine heartbeating for it?"""
    try:
        from matching.selectors import engine_liveness
    except ImportError:  # the engine app has not been built yet
        return {}
    try:
        return {f"engine:{symbol}": state for symbol, state in engine_liveness().items()}
    except Exception as exc:
        return {"engine": f"unknown: {exc.__class__.__name__}"}
