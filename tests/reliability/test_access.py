"""Access: user B goes after user A's orders, trades and balances, and forged, expired,
reused and orphaned tokens are tried on A's account. Nothing of that may be accepted."""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import pytest

from tests.reliability import harness
from tests.reliability.harness import scale

pytestmark = pytest.mark.django_db(transaction=True)


def _client(token: str | None = None, raw_header: str | None = None):
    from rest_framework.test import APIClient

    client = APIClient()
    if raw_header is not None:
        client.credentials(HTTP_AUTHORIZATION=raw_header)
    elif token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _forge(claims: dict, *, key: str, algorithm: str = "HS256") -> str:
    import jwt

    return jwt.encode(claims, key, algorithm=algorithm)


def _unsigned(claims: dict) -> str:
    """alg=none: a header and payload with an empty signature."""
    import base64
    import json

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _no_party_fields(response) -> bool:
    if response.status_code != 200:
        return True
    data = response.json().get("data") or {}
    return all(data.get(name) in (None, "") for name in ("side", "role", "fee", "fee_asset", "order_id"))


@pytest.mark.timeout(scale(120, 1200))
def test_access(wallet_server, btc_market, engines, make_user, figures, seed):
    import jwt
    from django.conf import settings
    from rest_framework_simplejwt.tokens import RefreshToken

    from orders.models import Order, Trade

    engines.spawn()
    engines.wait_live()
    alice, bob, carol = make_user(), make_user(), make_user()
    for user in (alice, bob, carol):
        harness.fund(user, "USDT", "100000")
        harness.fund(user, "BTC", "100")
    a_token, b_token = harness.access_token(alice), harness.access_token(bob)
    alice_client, carol_client = _client(a_token), _client(harness.access_token(carol))
    resting, traded = [], []
    for n in range(scale(3, 30)):
        body = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": f"{90 + n % 5}.00", "quantity": "0.010"}
        response = alice_client.post("/api/v1/orders", body, format="json")
        assert response.status_code == 201, response.content
        resting.append(response.json()["data"]["order"]["id"])
        sell = {"symbol": "BTC-USDT", "side": "sell", "type": "limit", "price": "110.00", "quantity": "0.010"}
        response = alice_client.post("/api/v1/orders", sell, format="json")
        traded.append(response.json()["data"]["order"]["id"])
        take = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "110.00", "quantity": "0.010"}
        assert carol_client.post("/api/v1/orders", take, format="json").status_code == 201
    alice_trades = list(Trade.objects.filter(seller=alice).values_list("id", flat=True))
    assert alice_trades

    attempts: Counter = Counter()
    accepted: list[str] = []

    def expect(name: str, response, *, refused=(401, 403, 404), check=None) -> None:
        attempts[name] += 1
        ok = response.status_code in refused
        if ok and check is not None:
            ok = check(response)
        if not ok:
            accepted.append(f"{name}: {response.status_code} {response.content[:200]!r}")

    # --- user B against user A's resources -------------------------------------------------------
    bob_client = _client(b_token)
    for order_id in resting + traded:
        expect("B reads A's order", bob_client.get(f"/api/v1/orders/{order_id}"), refused=(404,))
        expect("B cancels A's order", bob_client.delete(f"/api/v1/orders/{order_id}"), refused=(404,))
    mine_ids = lambda response: {o["id"] for o in response.json()["data"]}.isdisjoint(resting + traded)  # noqa: E731
    for query in ("", "?status=open", "?status=filled,open,cancelled", "?symbol=BTC-USDT&side=buy", "?limit=500"):
        expect("B lists orders", bob_client.get(f"/api/v1/orders{query}"), refused=(200,), check=mine_ids)
    expect("B lists its fills", bob_client.get("/api/v1/trades?mine=true"), refused=(200,),
           check=lambda r: not {t["id"] for t in r.json()["data"]} & set(alice_trades))  # fmt: skip
    for trade_id in alice_trades:
        # A trade is public; the party's side, role and fee are not B's to see.
        expect("B reads A's fill", bob_client.get(f"/api/v1/trades/{trade_id}"), refused=(200, 404), check=_no_party_fields)
    expect("B reads balances", bob_client.get("/api/v1/balances"), refused=(200,),
           check=lambda r: {(b["asset"], Decimal(b["total"])) for b in r.json()["data"]} == {("USDT", Decimal("100000")), ("BTC", Decimal("100"))})  # fmt: skip
    assert Order.objects.filter(pk__in=resting, status="open").count() == len(resting), "B's cancels touched A's orders"

    # --- tokens that must not open A's account ------------------------------------------------------
    good = jwt.decode(a_token, settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])
    now = int(time.time())
    forged = {
        "alg=none": _unsigned(good),
        "wrong key": _forge(good, key="not-the-signing-key-" + "x" * 32),
        "expired": _forge({**good, "exp": now - 60, "iat": now - 1000}, key=settings.SIMPLE_JWT["SIGNING_KEY"]),
        "tampered user id": a_token.rsplit(".", 2)[0] + "." + _forge({**good, "user_id": str(bob.pk)}, key="k" * 32).split(".")[1] + "." + a_token.rsplit(".", 1)[1],
        "refresh token as access": str(RefreshToken.for_user(alice)),
        "garbage": "not.a.jwt",
    }
    for name, token in forged.items():
        client = _client(token)
        expect(f"token {name}: orders", client.get("/api/v1/orders"), refused=(401,))
        expect(f"token {name}: balances", client.get("/api/v1/balances"), refused=(401,))
        expect(f"token {name}: cancel", client.delete(f"/api/v1/orders/{resting[0]}"), refused=(401,))
        body = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "90.00", "quantity": "0.010"}
        expect(f"token {name}: place", client.post("/api/v1/orders", body, format="json"), refused=(401,))
    for header in ("Bearer", f"Token {a_token}", f"Bearer {a_token} extra", f"bearer{a_token}"):
        expect("malformed Authorization header", _client(raw_header=header).get("/api/v1/orders"), refused=(401,))

    # Rotated refresh tokens: the old one is refused once used.
    anon = _client()
    login = anon.post("/api/v1/auth/token", {"username": alice.username, "password": "pass-word-123"}, format="json")
    assert login.status_code == 200, login.content
    first_refresh = login.json()["data"]["refresh"]
    rotated = anon.post("/api/v1/auth/token/refresh", {"refresh": first_refresh}, format="json")
    assert rotated.status_code == 200, rotated.content
    expect("reused rotated refresh token", anon.post("/api/v1/auth/token/refresh", {"refresh": first_refresh}, format="json"), refused=(401,))
    second_refresh = rotated.json()["data"]["refresh"]

    # Inactive user: valid tokens and the password stop working.
    type(alice).objects.filter(pk=alice.pk).update(is_active=False)
    expect("inactive user: access token", _client(a_token).get("/api/v1/orders"), refused=(401,))
    expect("inactive user: refresh", anon.post("/api/v1/auth/token/refresh", {"refresh": second_refresh}, format="json"), refused=(401,))
    expect("inactive user: login", anon.post("/api/v1/auth/token", {"username": alice.username, "password": "pass-word-123"}, format="json"), refused=(401,))
    body = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "90.00", "quantity": "0.010"}
    expect("inactive user: place", _client(a_token).post("/api/v1/orders", body, format="json"), refused=(401,))
    engines.stop()

    verdict = harness.check_invariants(quiescent=True, settled=False)
    figures.update(
        {
            "attempts": sum(attempts.values()),
            "attack kinds": len(attempts),
            "accepted": len(accepted),
            "invariant violations": sum(len(v) for v in verdict.problems.values()),
        }
    )
    assert not accepted, "\n".join(accepted)
    assert verdict.ok, verdict.describe()
