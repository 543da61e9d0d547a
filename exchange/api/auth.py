"""JWT endpoints (simplejwt), with their own throttle scope against password guessing."""

from rest_framework_simplejwt import views as jwt_views

from exchange.api.throttling import AnonIpThrottle


class TokenObtainView(jwt_views.TokenObtainPairView):
    throttle_classes = [AnonIpThrottle]


class TokenRefreshView(jwt_views.TokenRefreshView):
    throttle_classes = [AnonIpThrottle]
