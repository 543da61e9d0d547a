"""The seed's flow end to end, like `make run`: web, wallet, engine, worker and beat as real
processes, a client speaking HTTP only: place -> match -> trades -> settlement -> balances."""

import sys
import time
from decimal import Decimal

import pytest
import requests

from exchange import invariants
from exchange.infra import redis_client
from settlement.clients.wallet import owner_for_user, wallet_client
from tests.support.processes import free_port, gunicorn_argv, process_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def stack(wallet_server, market, project_processes, tmp_path):
    redis_client().flushdb()
    market("BTC-USDT", tick_size="0.01", lot_size="0.0001", min_notional="1", maker_fee="0.001", taker_fee="0.002")
    env = process_env(WALLET_URL=wallet_server.url, WEB_WORKERS="2")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    project_processes.start("web", gunicorn_argv(port, workers=2), env=env, ready_url=f"{base}/healthz")
    project_processes.start("engine", [sys.executable, "manage.py", "run_matching_engine", "--metrics-port", "0"], env=env)
    project_processes.start(
        "worker",
        [sys.executable, "-m", "celery", "-A", "exchange", "worker", "--pool", "threads", "--concurrency", "2",
         "--without-gossip", "--without-mingle", "--beat", "--schedule", str(tmp_path / "beat"), "--loglevel", "INFO"],
        env=env,
    )  # fmt: skip
    _wait(lambda: requests.get(f"{base}/readyz", timeout=2).status_code == 200, "readyz")
    yield base
    redis_client().flushdb()


def _wait(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _login(base: str, user) -> requests.Session:
    session = requests.Session()
    response = session.post(f"{base}/api/v1/auth/token", json={"username": user.username, "password": "pass-word-123"})
    assert response.status_code == 200, response.text
    session.headers["Authorization"] = f"Bearer {response.json()['data']['access']}"
    return session


def _balances(session: requests.Session, base: str) -> dict:
    body = session.get(f"{base}/api/v1/balances").json()
    assert body["success"] is True
    return {row["asset"]: (Decimal(row["available"]), Decimal(row["held"])) for row in body["data"]}


def test_place_match_settle_and_balances(stack, make_user):
    base = stack
    alice, bob = make_user("alice"), make_user("bob")
    client = wallet_client()
    client.deposit(key="e2e-alice-btc", owner=owner_for_user(alice.pk), asset="BTC", amount=Decimal("2"))
    client.deposit(key="e2e-bob-usdt", owner=owner_for_user(bob.pk), asset="USDT", amount=Decimal("50000"))
    seller, buyer = _login(base, alice), _login(base, bob)

    sell = seller.post(f"{base}/api/v1/orders", json={
        "symbol": "BTC-USDT", "side": "sell", "type": "limit", "price": "30000.00", "quantity": "1.5000"})  # fmt: skip
    assert sell.status_code == 201, sell.text
    assert sell.json()["data"]["order"]["status"] == "open"

    buy = buyer.post(f"{base}/api/v1/orders", json={
        "symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "30100.00", "quantity": "1.0000"})  # fmt: skip
    assert buy.status_code == 201, buy.text
    data = buy.json()["data"]
    assert data["order"]["status"] == "filled"
    [fill] = data["trades"]
    assert fill["price"] == "30000.00" and fill["quantity"] == "1.0000" and fill["role"] == "taker"

    book = requests.get(f"{base}/api/v1/orderbook/BTC-USDT").json()["data"]
    assert book["asks"] == [["30000.00", "0.5000"]] and book["bids"] == []
    ticker = requests.get(f"{base}/api/v1/markets/BTC-USDT/ticker").json()["data"]
    assert ticker["last_price"] == "30000.00" and ticker["volume_24h"] == "1.0000"
    trades = requests.get(f"{base}/api/v1/trades", params={"symbol": "BTC-USDT"}).json()["data"]
    assert [t["id"] for t in trades] == [fill["id"]]

    # Settlement: the buyer gets 1 BTC less the 0.2% taker fee; the seller 30,000 USDT less 0.1%.
    _wait(lambda: _balances(buyer, base).get("BTC", (0, 0))[0] == Decimal("0.998"), "the buyer's BTC")
    _wait(lambda: _balances(buyer, base)["USDT"] == (Decimal("20000"), Decimal("0")), "the buyer's price improvement back")
    _wait(lambda: _balances(seller, base).get("USDT", (0, 0))[0] == Decimal("29970"), "the seller's USDT")
    assert _balances(seller, base)["BTC"] == (Decimal("0.5"), Decimal("0.5"))

    totals = client.totals()
    assert totals["BTC"].balanced and totals["USDT"].balanced
    fees = {b.asset: b.available for b in client.balances("exchange-fees")}
    assert fees == {"BTC": Decimal("0.002"), "USDT": Decimal("30")}
    report = invariants.check_all(quiescent=True)
    assert report.ok, report.violations

    cancel = seller.delete(f"{base}/api/v1/orders/{sell.json()['data']['order']['id']}")
    assert cancel.status_code == 200 and cancel.json()["data"]["status"] == "cancelled"
    _wait(lambda: _balances(seller, base)["BTC"] == (Decimal("1"), Decimal("0")), "the seller's unused hold back")
