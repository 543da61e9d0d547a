"""The project's URLs plus the bare anchor endpoint at /api/v1/bench/bare.

Listed before the project's `api/v1/` include, whose catch-all would answer 404.
"""

from django.urls import path

from exchange.bench.views import BareView
from exchange.urls import handler404, handler500  # noqa: F401 - same error pages
from exchange.urls import urlpatterns as project_urlpatterns

BARE_PATH = "/api/v1/bench/bare"

urlpatterns = [path(BARE_PATH.lstrip("/"), BareView.as_view(), name="bench-bare"), *project_urlpatterns]
