"""A cursor for the fixed statements every API request or order placement runs."""

from django.db import connection
from django.db.backends.postgresql.base import ServerBindingCursor


class _PreparingCursor(ServerBindingCursor):
    """Prepares each statement on the connection the first time it runs (server-side binding)."""

    def execute(self, query, params=None, **kwargs):
        kwargs["prepare"] = True
        return super().execute(query, params, **kwargs)


def prepared_cursor():
    """A cursor for fixed hot statements: PostgreSQL parses and plans each once per connection
    instead of on every call. Wrapped like `connection.cursor()` (error translation, query
    logging when enabled). Only for a handful of statement texts: each stays prepared on
    its connection.
    """
    connection.ensure_connection()
    return connection._prepare_cursor(_PreparingCursor(connection.connection))
