"""The envelope every /api/v1/ response wears: {success, data | error, meta}."""

from datetime import UTC, datetime

from rest_framework.renderers import JSONRenderer

from exchange.api.middleware import current_request_id


def envelope_meta(request=None, **extra) -> dict:
    request_id = getattr(request, "request_id", None) or current_request_id()
    now = datetime.now(UTC)
    meta = {
        "request_id": request_id,
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
    }
    meta.update(extra)
    return meta


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"success": False, "error": {"code": code, "message": message, "details": details or {}}}


class EnvelopeRenderer(JSONRenderer):
    """Wraps view data as {"success": true, "data": ..., "meta": ...}.

    Errors arrive already shaped by the exception handler; pagination adds
    `meta.next` through `response.envelope_meta`.
    """

    def render(self, data, accepted_media_type=None, renderer_context=None):
        renderer_context = renderer_context or {}
        response = renderer_context.get("response")
        request = renderer_context.get("request")
        extra = getattr(response, "envelope_meta", {}) if response is not None else {}
        if isinstance(data, dict) and data.get("success") is False and "error" in data:
            body = {**data, "meta": envelope_meta(request, **extra)}
        else:
            body = {"success": True, "data": data, "meta": envelope_meta(request, **extra)}
        return super().render(body, accepted_media_type, renderer_context)
