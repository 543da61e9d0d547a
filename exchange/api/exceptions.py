"""The one exception handler: domain, DRF, Django and simplejwt errors -> envelope codes."""

import logging

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from exchange.api.renderers import error_body
from exchange.errors import DomainError

logger = logging.getLogger(__name__)

# DRF exception class -> (code, HTTP status); first match wins.
_DRF_CODES = [
    (exceptions.ValidationError, "validation_error", 400),
    (exceptions.ParseError, "validation_error", 400),
    (exceptions.NotAuthenticated, "not_authenticated", 401),
    (exceptions.AuthenticationFailed, "not_authenticated", 401),
    (exceptions.PermissionDenied, "permission_denied", 403),
    (exceptions.NotFound, "not_found", 404),
    (exceptions.MethodNotAllowed, "method_not_allowed", 405),
    (exceptions.NotAcceptable, "not_acceptable", 406),
    (exceptions.UnsupportedMediaType, "unsupported_media_type", 415),
    (exceptions.Throttled, "throttled", 429),
]


def envelope_exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.http_status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, (InvalidToken, TokenError)):
        exc = exceptions.AuthenticationFailed(str(getattr(exc, "detail", exc)))

    if isinstance(exc, exceptions.APIException):
        code, http_status = "error", exc.status_code
        for exc_class, mapped_code, mapped_status in _DRF_CODES:
            if isinstance(exc, exc_class):
                code, http_status = mapped_code, mapped_status
                break
        if code == "validation_error":
            details = _as_details(exc.detail)
            message = "Invalid input: " + ", ".join(f"{k}: {' '.join(v)}" for k, v in details.items())
        else:
            details = {}
            message = _as_text(exc.detail)
        response = Response(error_body(code, message, details), status=http_status)
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            response["Retry-After"] = str(int(exc.wait) + 1)
        if getattr(exc, "auth_header", None):
            response["WWW-Authenticate"] = exc.auth_header
        if code == "not_authenticated":
            response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response

    logger.exception("Unhandled error in %s", context.get("view").__class__.__name__)
    return Response(
        error_body("internal_error", "An internal error occurred."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def _as_details(detail) -> dict:
    if isinstance(detail, dict):
        return {str(k): _as_list(v) for k, v in detail.items()}
    return {"non_field_errors": _as_list(detail)}


def _as_list(detail) -> list[str]:
    if isinstance(detail, list):
        out = []
        for item in detail:
            out.extend(_as_list(item))
        return out
    if isinstance(detail, dict):
        return [f"{k}: {' '.join(_as_list(v))}" for k, v in detail.items()]
    return [str(detail)]


def _as_text(detail) -> str:
    if isinstance(detail, dict):
        return " ".join(" ".join(_as_list(v)) for v in detail.values())
    if isinstance(detail, list):
        return " ".join(_as_list(detail))
    return str(detail)
