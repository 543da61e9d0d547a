"""A cursor for the fixed statements every API request or order placement runs."""

import weakref

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.postgresql.base import ServerBindingCursor

# Connections already told to keep generic plans (see `prepared_cursor`).
_generic_plans: weakref.WeakSet = weakref.WeakSet()


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

    The connection is set to always use a statement's generic plan: left to choose,
    PostgreSQL plans the id reservation again on every call whenever a user has few
    orders (its custom plan then looks cheaper), which was most of that query's cost.
    Only prepared statements are affected; Django's own queries are planned per call.
    Each statement given here must have a good generic plan (key lookups, inserts).
    """
    db = connections[DEFAULT_DB_ALIAS]  # once: each attribute of the `connection` proxy is a lookup
    db.ensure_connection()
    raw = db.connection
    if raw not in _generic_plans and not db.in_atomic_block:  # SET would roll back with it
        with db.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_generic_plan")
        _generic_plans.add(raw)
    return db._prepare_cursor(_PreparingCursor(raw))
