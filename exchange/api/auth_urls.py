from django.urls import path

from exchange.api.auth import TokenObtainView, TokenRefreshView

urlpatterns = [
    path("token", TokenObtainView.as_view(), name="token-obtain"),
    path("token/refresh", TokenRefreshView.as_view(), name="token-refresh"),
]
