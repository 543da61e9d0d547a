"""JWT authentication whose user lookup is cached briefly in each process.

simplejwt loads the user row on every request to check that the account still
exists and is active: one query per API call, about an eighth of an order
placement's CPU. A few seconds of per-process memory keeps that check (a
deactivated or deleted account is refused within ``JWT_USER_CACHE_SECONDS``)
without paying for it on every request.
"""

from __future__ import annotations

from time import monotonic

from django.conf import settings
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.settings import api_settings

_MAX_ENTRIES = 10_000


class CachedUserJWTAuthentication(JWTAuthentication):
    _users: dict = {}  # user id -> (user, monotonic expiry); per process

    def get_user(self, validated_token):
        ttl = settings.JWT_USER_CACHE_SECONDS
        user_id = validated_token.get(api_settings.USER_ID_CLAIM)
        if ttl <= 0 or user_id is None:
            return super().get_user(validated_token)
        now = monotonic()
        cached = self._users.get(user_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        user = super().get_user(validated_token)  # raises for a missing or inactive user
        users = type(self)._users
        if len(users) >= _MAX_ENTRIES:
            users.clear()
        users[user_id] = (user, now + ttl)
        return user
