"""Cursor pagination: `data` stays a plain array, the next page's URL goes to `meta.next`."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response


class EnvelopeCursorPagination(CursorPagination):
    page_size = 100
    max_page_size = 500
    page_size_query_param = "limit"
    ordering = "-id"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise ValidationError({"limit": [f"Must be an integer from 1 to {self.max_page_size}."]})
        return size

    def get_paginated_response(self, data):
        response = Response(data)
        response.envelope_meta = {"next": self.get_next_link()}
        return response

    def get_paginated_response_schema(self, schema):
        return schema
