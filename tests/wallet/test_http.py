"""The wallet's HTTP API, through Django's test client on the wallet's URLconf."""

import json
from decimal import Decimal

import pytest
from django.conf import settings

pytestmark = [pytest.mark.django_db, pytest.mark.urls("wallet.urls")]

D = Decimal


@pytest.fixture
def wallet(client):
    """wallet.post(path, body) / wallet.get(path) with the bearer token."""

    class Api:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {settings.WALLET_TOKEN}"}

        def post(self, path, body, **extra):
            data = body if isinstance(body, str | bytes) else json.dumps(body)
            return client.post(path, data, content_type="application/json", **{**self.headers, **extra})

        def get(self, path, **extra):
            return client.get(path, **{**self.headers, **extra})

    return Api()


@pytest.fixture
def deposited(wallet, new_owner, new_key):
    def make(asset, amount, owner=None):
        owner = owner or new_owner()
        response = wallet.post("/v1/deposits", {"key": new_key("dep"), "owner": owner, "asset": asset, "amount": amount})
        assert response.status_code == 201, response.content
        return owner

    return make


def error_code(response):
    return response.json()["error"]["code"]


# --- auth and plumbing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path, method",
    [
        ("/v1/holds", "post"), ("/v1/holds/order:1", "get"), ("/v1/operations", "post"),
        ("/v1/operations/trade:1", "get"), ("/v1/deposits", "post"), ("/v1/withdrawals", "post"),
        ("/v1/balances/user:1", "get"), ("/v1/totals", "get"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Token {'x'}", "Bearer "])
def test_every_endpoint_requires_the_token(client, path, method, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = getattr(client, method)(path, **({"data": "{}", "content_type": "application/json"} if method == "post" else {}), **extra)
    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"


def test_healthz_is_open(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_unknown_path_and_wrong_method(wallet):
    response = wallet.get("/v1/nothing")
    assert response.status_code == 404 and error_code(response) == "not_found"
    response = wallet.post("/v1/totals", "{}")
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"
    assert response["Allow"] == "GET"


@pytest.mark.parametrize("body", ["not json", "[1, 2]", "null", '{"key": "k:1", "owner": "user:1", "asset": "USDT", "amount": "1", "extra": 1}'])
def test_malformed_bodies_are_validation_errors(wallet, body):
    response = wallet.post("/v1/deposits", body)
    assert response.status_code == 400 and error_code(response) == "validation_error"


# --- deposits, withdrawals, balances, totals --------------------------------------------


def test_deposit_and_withdrawal(wallet, new_owner):
    owner = new_owner()
    body = {"key": "dep:h1", "owner": owner, "asset": "USDT", "amount": "100.10"}
    first = wallet.post("/v1/deposits", body)
    assert first.status_code == 201
    assert first.json() == {
        "key": "dep:h1", "kind": "deposit", "applied": True, "status": "applied",
        "payload": {"owner": owner, "asset": "USDT", "amount": "100.1"}, "created_at": first.json()["created_at"],
    }  # fmt: skip
    again = wallet.post("/v1/deposits", body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    conflict = wallet.post("/v1/deposits", {**body, "amount": "5"})
    assert conflict.status_code == 409 and error_code(conflict) == "key_conflict"

    too_much = wallet.post("/v1/withdrawals", {"key": "wd:h1", "owner": owner, "asset": "USDT", "amount": "100.11"})
    assert too_much.status_code == 422 and error_code(too_much) == "insufficient_funds"
    done = wallet.post("/v1/withdrawals", {"key": "wd:h1", "owner": owner, "asset": "USDT", "amount": "0.1"})
    assert done.status_code == 201 and done.json()["kind"] == "withdrawal"

    balances = wallet.get(f"/v1/balances/{owner}").json()
    assert balances == {"owner": owner, "balances": [{"asset": "USDT", "available": "100", "held": "0", "total": "100"}]}


@pytest.mark.parametrize(
    "field, value",
    [
        ("amount", "0"), ("amount", "-5"), ("amount", "1E-19"), ("amount", "NaN"), ("amount", "Infinity"),
        ("amount", "1" * 21), ("amount", True), ("amount", None), ("amount", [1]),
        ("asset", "usdt"), ("asset", "A"), ("asset", "ABCDEFGHIJK"), ("asset", 5),
        ("owner", ""), ("owner", "a b"), ("owner", "x" * 65), ("key", ""), ("key", "k/1"), ("key", None),
    ],
)  # fmt: skip
def test_fields_are_validated(wallet, field, value):
    body = {"key": "dep:v", "owner": "user:1", "asset": "USDT", "amount": "1", field: value}
    response = wallet.post("/v1/deposits", body)
    assert response.status_code == 400, response.content
    assert error_code(response) == "validation_error"
    assert field in response.json()["error"]["details"]


def test_json_numbers_are_read_exactly(wallet, new_owner):
    owner = new_owner()
    body = '{"key": "dep:n", "owner": "OWNER", "asset": "BTC", "amount": AMOUNT}'.replace("OWNER", owner)
    response = wallet.post("/v1/deposits", body.replace("AMOUNT", "0.1000000000000000001"))
    assert response.status_code == 400  # 19 places: refused rather than rounded
    response = wallet.post("/v1/deposits", body.replace("AMOUNT", "0.000000000000000001"))
    assert response.status_code == 201
    assert wallet.get(f"/v1/balances/{owner}").json()["balances"][0]["available"] == "0.000000000000000001"


def test_balances_of_unknown_owner_is_empty(wallet):
    assert wallet.get("/v1/balances/user:404404").json() == {"owner": "user:404404", "balances": []}


def test_totals_add_up(wallet, deposited):
    a = deposited("USDT", "100")
    deposited("USDT", "50.5")
    deposited("BTC", "2")
    wallet.post("/v1/withdrawals", {"key": "wd:t", "owner": a, "asset": "USDT", "amount": "10"})
    wallet.post("/v1/holds", {"key": "order:t", "owner": a, "asset": "USDT", "amount": "20"})
    totals = {row["asset"]: row for row in wallet.get("/v1/totals").json()["totals"]}
    assert totals["USDT"] == {
        "asset": "USDT", "available": "120.5", "held": "20", "deposits": "150.5", "withdrawals": "10",
        "adjustments": "0", "balanced": True,
    }  # fmt: skip
    assert totals["BTC"]["deposits"] == "2" and totals["BTC"]["balanced"]


# --- holds -----------------------------------------------------------------------------------


def test_place_and_get_a_hold(wallet, deposited):
    owner = deposited("USDT", "100")
    body = {"key": "order:h1", "owner": owner, "asset": "USDT", "amount": "25.5"}
    created = wallet.post("/v1/holds", body)
    assert created.status_code == 201
    data = created.json()
    assert {k: data[k] for k in ("key", "owner", "asset", "amount", "captured", "released", "remaining")} == {
        "key": "order:h1", "owner": owner, "asset": "USDT", "amount": "25.5", "captured": "0", "released": "0",
        "remaining": "25.5",
    }  # fmt: skip
    again = wallet.post("/v1/holds", body)
    assert again.status_code == 200 and again.json() == data
    assert wallet.get("/v1/holds/order:h1").json() == data
    missing = wallet.get("/v1/holds/order:none")
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    balances = wallet.get(f"/v1/balances/{owner}").json()["balances"]
    assert balances == [{"asset": "USDT", "available": "74.5", "held": "25.5", "total": "100"}]


def test_hold_insufficient_and_up_to(wallet, deposited):
    owner = deposited("USDT", "10")
    refused = wallet.post("/v1/holds", {"key": "order:h2", "owner": owner, "asset": "USDT", "amount": "10.5"})
    assert refused.status_code == 422 and error_code(refused) == "insufficient_funds"
    partial = wallet.post("/v1/holds", {"key": "order:h2", "owner": owner, "asset": "USDT", "amount": "10.5", "up_to": True})
    assert partial.status_code == 201
    assert (partial.json()["amount"], partial.json()["requested"]) == ("10", "10.5")
    nothing = wallet.post("/v1/holds", {"key": "order:h3", "owner": owner, "asset": "USDT", "amount": "1", "up_to": True})
    assert nothing.status_code == 422
    bad = wallet.post("/v1/holds", {"key": "order:h4", "owner": owner, "asset": "USDT", "amount": "1", "up_to": "yes"})
    assert bad.status_code == 400 and "up_to" in bad.json()["error"]["details"]


# --- operations --------------------------------------------------------------------------------


def test_operations_batch(wallet, deposited):
    buyer, seller = deposited("USDT", "1000"), deposited("BTC", "1")
    assert wallet.post("/v1/holds", {"key": "order:ob", "owner": buyer, "asset": "USDT", "amount": "500"}).status_code == 201
    assert wallet.post("/v1/holds", {"key": "order:os", "owner": seller, "asset": "BTC", "amount": "1"}).status_code == 201
    trade = {
        "key": "trade:h1",
        "type": "transfer",
        "legs": [
            {"owner": buyer, "asset": "USDT", "amount": "300", "from_hold": "order:ob"},
            {"owner": seller, "asset": "USDT", "amount": "299.7"},
            {"owner": "exchange-fees", "asset": "USDT", "amount": "0.3"},
            {"owner": seller, "asset": "BTC", "amount": "0.01", "from_hold": "order:os"},
            {"owner": buyer, "asset": "BTC", "amount": "0.01"},
        ],
    }
    unbalanced = {"key": "trade:h2", "type": "transfer", "legs": trade["legs"][:2]}
    release = {"key": "release:order:ob", "type": "release", "hold": "order:ob", "amount": "200"}
    overdraw = {"key": "release:x", "type": "release", "hold": "order:ob", "amount": "0.1"}
    response = wallet.post("/v1/operations", {"operations": [trade, unbalanced, release, trade, overdraw]})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["key"], r["status"], r.get("code")) for r in results] == [
        ("trade:h1", "applied", None),
        ("trade:h2", "rejected", "validation_error"),
        ("release:order:ob", "applied", None),
        ("trade:h1", "duplicate", None),
        ("release:x", "rejected", "hold_exceeded"),
    ]
    assert "message" in results[1] and "code" not in results[0]
    again = wallet.post("/v1/operations", {"operations": [trade]}).json()["results"]
    assert again == [{"key": "trade:h1", "status": "duplicate"}]

    applied = wallet.get("/v1/operations/trade:h1")
    assert applied.status_code == 200
    body = applied.json()
    assert (body["key"], body["kind"], body["applied"]) == ("trade:h1", "transfer", True)
    assert body["payload"]["legs"][0] == {"owner": buyer, "asset": "USDT", "amount": "300", "from_hold": "order:ob"}
    for key in ("trade:h2", "release:x", "trade:never"):
        missing = wallet.get(f"/v1/operations/{key}")
        assert missing.status_code == 404 and error_code(missing) == "not_found"
    hold = wallet.get("/v1/holds/order:ob").json()
    assert (hold["captured"], hold["released"], hold["remaining"]) == ("300", "200", "0")


@pytest.mark.parametrize(
    "body",
    [
        {}, {"operations": []}, {"operations": "x"}, {"operations": [1]}, {"operations": [{"type": "transfer"}]},
        {"operations": [{"key": "bad key", "type": "release"}]}, {"operations": [], "more": 1},
    ],
)  # fmt: skip
def test_malformed_batches_are_refused_whole(wallet, body):
    response = wallet.post("/v1/operations", body)
    assert response.status_code == 400 and error_code(response) == "validation_error"


def test_batch_size_is_limited(wallet, settings):
    settings.WALLET_MAX_BATCH = 3
    ops = [{"key": f"r:{n}", "type": "release", "hold": "order:x", "amount": "1"} for n in range(4)]
    response = wallet.post("/v1/operations", {"operations": ops})
    assert response.status_code == 400
    response = wallet.post("/v1/operations", {"operations": ops[:3]})
    assert [r["code"] for r in response.json()["results"]] == ["hold_not_found"] * 3


def test_decimals_are_fixed_point(wallet, deposited):
    owner = deposited("BTC", "0.00000001")
    deposited("BTC", "100000000", owner=owner)
    row = wallet.get(f"/v1/balances/{owner}").json()["balances"][0]
    assert row["available"] == "100000000.00000001"
    other = deposited("BTC", "0.00000001")
    assert wallet.get(f"/v1/balances/{other}").json()["balances"][0]["available"] == "0.00000001"
    big = deposited("BTC", "1E+5")
    assert wallet.get(f"/v1/balances/{big}").json()["balances"][0]["available"] == "100000"
    assert D("100000") == D(wallet.get(f"/v1/balances/{big}").json()["balances"][0]["total"])
