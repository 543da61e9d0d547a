from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from exchange import health
from exchange.api import views as api_views

api_v1 = [
    path("auth/", include("exchange.api.auth_urls")),
    path("", include("marketdata.api.urls")),
    path("", include("orders.api.urls")),
    re_path(r"^.*$", api_views.api_not_found),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("", include("django_prometheus.urls")),
]

handler404 = "exchange.api.views.not_found_handler"
handler500 = "exchange.api.views.server_error_handler"
