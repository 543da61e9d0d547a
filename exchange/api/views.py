"""Fallbacks so that nothing under /api/v1/ ever answers with an HTML page."""

from django.http import JsonResponse
from django.views.defaults import page_not_found, server_error
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.exceptions import NotFound

from exchange.api.renderers import envelope_meta, error_body


@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@authentication_classes([])
@permission_classes([])
def api_not_found(request, *args, **kwargs):
    raise NotFound("No such endpoint.")


def not_found_handler(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse({**error_body("not_found", "Not found."), "meta": envelope_meta(request)}, status=404)
    return page_not_found(request, exception)


def server_error_handler(request):
    if request.path.startswith("/api/"):
        body = {**error_body("internal_error", "An internal error occurred."), "meta": envelope_meta(request)}
        return JsonResponse(body, status=500)
    return server_error(request)
