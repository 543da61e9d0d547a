from django.urls import path
from rest_framework.routers import SimpleRouter

from orders.api.views import BalanceView, OrderViewSet

router = SimpleRouter(trailing_slash=False)
router.register("orders", OrderViewSet, basename="order")

urlpatterns = router.urls + [
    path("balances", BalanceView.as_view({"get": "list"}), name="balances"),
]
