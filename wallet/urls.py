"""URLs of the wallet process (`EXCHANGE_ROLE=wallet`): the v1 API, health and metrics."""

from django.urls import include, path

from wallet import views

urlpatterns = [
    path("v1/holds", views.holds),
    path("v1/holds/<str:key>", views.hold_detail),
    path("v1/operations", views.operations),
    path("v1/operations/<str:key>", views.operation_detail),
    path("v1/deposits", views.deposits),
    path("v1/withdrawals", views.withdrawals),
    path("v1/balances/<str:owner>", views.balances),
    path("v1/totals", views.totals),
    path("healthz", views.healthz),
    path("", include("django_prometheus.urls")),
]

handler404 = "wallet.views.not_found"
handler500 = "wallet.views.server_error"
