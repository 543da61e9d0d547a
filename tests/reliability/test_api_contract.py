"""API contract: schemathesis (v3) generates requests for every operation of `/api/schema/`
and checks each response against it (no 5xx; status codes, content types, headers and
bodies as documented), on the in-process app with a live engine and wallet, sending the
tokens of two funded users (and sometimes none)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.reliability import harness
from tests.reliability.harness import scale

pytestmark = pytest.mark.django_db(transaction=True)


def _many_more(self) -> bool:
    """`many.more()` of older Hypothesis, on top of the iterator protocol of newer ones."""
    iterator = getattr(self, "_compat_iterator", None)
    if iterator is None:
        self.__enter__()
        iterator = self._compat_iterator = iter(self)
    try:
        next(iterator)
        return True
    except StopIteration:
        self.__exit__(None, None, None)
        return False


@pytest.fixture
def hypothesis_jsonschema_compat(monkeypatch):
    """hypothesis-jsonschema 0.23 (under schemathesis 3) calls `many(...).more()`, which
    Hypothesis 6.16x removed for `with many(...) as elements: for _ in elements:`; give it
    back for this test only (a no-op where `more` still exists)."""
    from hypothesis.internal.conjecture import utils

    if not hasattr(utils.many, "more"):
        monkeypatch.setattr(utils.many, "more", _many_more, raising=False)


@pytest.mark.timeout(scale(200, 3600))
def test_api_contract(hypothesis_jsonschema_compat, wallet_server, btc_market, engines, make_user, figures, seed):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from schemathesis.exceptions import CheckFailed
    from schemathesis.specs.openapi.checks import ignored_auth

    from exchange.wsgi import application

    engines.spawn()
    engines.wait_live()
    users = [make_user(), make_user()]
    for user in users:
        harness.fund(user, "USDT", "1000000")
        harness.fund(user, "BTC", "10000")
    tokens = [harness.access_token(user) for user in users]
    # Something real to read and cancel: orders of both users, one trade between them.
    from rest_framework.test import APIClient

    known_ids: list[int] = []
    for token, side, price in ((tokens[0], "sell", "100.00"), (tokens[1], "buy", "101.00"), (tokens[0], "buy", "90.00")):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        body = {"symbol": "BTC-USDT", "side": side, "type": "limit", "price": price, "quantity": "0.010"}
        response = client.post("/api/v1/orders", body, format="json")
        assert response.status_code in (201, 202), response.content
        known_ids.append(response.json()["data"]["order"]["id"])

    schema = schemathesis.from_wsgi("/api/schema/", application)
    rng = random.Random(seed)
    statuses: Counter = Counter()
    server_errors: list[str] = []
    violations: list[str] = []
    calls = Counter()
    known: Counter = Counter()

    def exercise(operation):
        @settings(max_examples=scale(12, 200), deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            who = rng.randrange(3)  # user A, user B, or anonymous
            headers = dict(case.headers or {})
            headers.pop("Authorization", None)
            if who < 2:
                headers["Authorization"] = f"Bearer {tokens[who]}"
            case.headers = headers
            # Half the time, aim at what exists: the real market, real order and trade ids.
            if rng.random() < 0.5:
                if isinstance(case.body, dict) and "symbol" in case.body:
                    case.body["symbol"] = "BTC-USDT"
                if case.path_parameters and "symbol" in case.path_parameters:
                    case.path_parameters["symbol"] = "BTC-USDT"
                for name in ("id", "trade_id"):
                    if case.path_parameters and name in case.path_parameters:
                        case.path_parameters[name] = rng.choice(known_ids) if name == "id" else 1
                if case.query and "symbol" in case.query:
                    case.query["symbol"] = "BTC-USDT"
            response = case.call_wsgi()
            calls[operation.verbose_name] += 1
            statuses[response.status_code] += 1
            if response.status_code >= 500 and response.status_code != 503:
                nul_in_path = any(nul in str(value) for value in (case.path_parameters or {}).values() for nul in ("\x00", "%00"))
                if "BUG-10" in harness.OPEN_BUGS and nul_in_path and response.status_code == 500:
                    known["BUG-10 (NUL byte in a path symbol)"] += 1  # pinned in test_regressions.py
                    return
                server_errors.append(f"{operation.verbose_name} -> {response.status_code}: {case.as_curl_command()}")
            try:
                # Schemathesis 3 reads `security: [{jwtAuth: []}, {}]` (auth optional, as on the
                # public endpoints) as "auth required" and flags every anonymous 200: not a
                # contract breach; who may see what is the access loop's business.
                optional_auth = {} in (operation.definition.raw.get("security") or [])
                case.validate_response(response, excluded_checks=(ignored_auth,) if optional_auth else ())
            except CheckFailed as exc:
                violations.append(f"{operation.verbose_name} -> {response.status_code}: {str(exc).strip().splitlines()[0]}")

        hypothesis_seed(seed)(check)()

    for result in schema.get_all_operations():
        operation = result.ok()
        exercise(operation)
    engines.stop()
    distinct = sorted(set(violations))
    figures.update(
        {
            "operations": len(calls),
            "requests": sum(calls.values()),
            "statuses": dict(sorted(statuses.items())),
            "5xx": len(server_errors),
            "5xx of known bugs": dict(known),
            "schema violations": len(violations),
            "distinct violations": distinct[:10],
        }
    )
    assert not server_errors, "\n".join(server_errors[:10])
    assert not violations, "\n".join(distinct[:30])
