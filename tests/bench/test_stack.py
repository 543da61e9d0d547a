"""The bench's DATABASE_URL builder: django-environ must parse back what it was given."""

import environ
import pytest

from exchange.processes import database_url


@pytest.mark.parametrize(
    "settings_dict",
    [
        {"NAME": "bench_1", "USER": "postgres", "HOST": "/work/var/postgres"},  # unix socket (embedded)
        {"NAME": "bench_2", "USER": "u", "PASSWORD": "p@ss:/", "HOST": "db.example", "PORT": 5433},
        {"NAME": "bench_3", "USER": "u", "HOST": "::1", "PORT": 5432, "OPTIONS": {"sslmode": "require"}},
    ],
)
def test_database_url_round_trips_through_django_environ(settings_dict):
    parsed = environ.Env.db_url_config(database_url(settings_dict))
    for key in ("NAME", "USER", "PASSWORD", "HOST"):
        assert (parsed.get(key) or "") == (settings_dict.get(key) or ""), key
    assert str(parsed.get("PORT") or "") == str(settings_dict.get("PORT") or "")
    assert parsed.get("OPTIONS", {}) == settings_dict.get("OPTIONS", {})
