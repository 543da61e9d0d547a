"""The exchange's wallet client against a real wallet process (gunicorn, EXCHANGE_ROLE=wallet)."""

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import requests

from exchange.errors import InsufficientFunds, WalletUnavailable
from settlement.clients import wallet as client_module
from settlement.clients.wallet import (
    HoldResult,
    WalletClient,
    WalletRejected,
    leg,
    owner_for_user,
    release,
    transfer,
    wallet_client,
)
from tests.support.processes import database_url

D = Decimal


@pytest.fixture
def wc(wallet_server):
    return wallet_client()


def test_database_url_round_trips_through_django_environ():
    import environ

    parse = environ.Env.db_url_config
    socket = {"NAME": "test_exchange", "USER": "postgres", "PASSWORD": "", "HOST": "/work/main/var/postgres", "PORT": ""}
    assert database_url(socket) == "postgres://postgres@/%2Fwork%2Fmain%2Fvar%2Fpostgres/test_exchange"
    assert {k: parse(database_url(socket))[k] for k in socket} == socket
    tcp = {"NAME": "test_x", "USER": "u", "PASSWORD": "p@ss:w/rd", "HOST": "127.0.0.1", "PORT": 5432}
    assert {k: parse(database_url(tcp))[k] for k in tcp} == tcp


def test_owner_names():
    assert owner_for_user(42) == "user:42"


def test_client_is_cached_per_process_and_settings(wallet_server, settings):
    first = wallet_client()
    assert wallet_client() is first
    settings.WALLET_URL = "http://127.0.0.1:9"
    assert wallet_client() is not first and wallet_client().base_url == "http://127.0.0.1:9"


def test_round_trip_through_the_real_wallet(wc):
    buyer, seller = owner_for_user(1), owner_for_user(2)
    deposit = wc.deposit(key="dep:c1", owner=buyer, asset="USDT", amount=D("1000"))
    assert (deposit.status, deposit.amount) == ("applied", D("1000"))
    assert wc.deposit(key="dep:c1", owner=buyer, asset="USDT", amount=D("1000")).status == "duplicate"
    wc.deposit(key="dep:c2", owner=seller, asset="BTC", amount=D("1"))

    hold = wc.place_hold(key="order:1", owner=buyer, asset="USDT", amount=D("300.5"))
    assert hold == HoldResult("order:1", buyer, "USDT", D("300.5"), D("300.5"), D(0), D(0), created=True)
    again = wc.place_hold(key="order:1", owner=buyer, asset="USDT", amount=D("300.5"))
    assert not again.created and again.amount == D("300.5")
    sell_hold = wc.place_hold(key="order:2", owner=seller, asset="BTC", amount=D("5"), up_to=True)
    assert (sell_hold.amount, sell_hold.requested) == (D("1"), D("5"))

    results = wc.apply(
        [
            transfer(
                "trade:1",
                [
                    leg(buyer, "USDT", D("300"), from_hold="order:1"),
                    leg(seller, "USDT", D("299.7")),
                    leg("exchange-fees", "USDT", D("0.3")),
                    leg(seller, "BTC", D("0.01"), from_hold="order:2"),
                    leg(buyer, "BTC", D("0.01")),
                ],
            ),
            release("release:order:1", "order:1", D("0.5")),
            release("release:order:1:again", "order:1", D("0.5")),
        ]
    )
    assert [(r.key, r.status, r.code) for r in results] == [
        ("trade:1", "applied", None),
        ("release:order:1", "applied", None),
        ("release:order:1:again", "rejected", "hold_exceeded"),
    ]
    assert results[0].ok and not results[2].ok
    assert [r.status for r in wc.apply([release("release:order:1", "order:1", D("0.5"))])] == ["duplicate"]

    assert wc.get_hold("order:1").remaining == 0
    assert wc.get_hold("order:none") is None
    applied = wc.operation("trade:1")
    assert applied["kind"] == "transfer" and applied["applied"] is True
    assert wc.operation("trade:never") is None

    balances = {b.asset: b for b in wc.balances(buyer)}
    assert (balances["USDT"].available, balances["USDT"].held, balances["USDT"].total) == (D("700"), 0, D("700"))
    assert balances["BTC"].available == D("0.01")

    withdrawal = wc.withdraw(key="wd:c1", owner=buyer, asset="USDT", amount=D("100"))
    assert withdrawal.kind == "withdrawal"
    totals = wc.totals()
    assert totals["USDT"].deposits == D("1000") and totals["USDT"].withdrawals == D("100")
    assert all(t.balanced for t in totals.values())
    assert totals["USDT"].available + totals["USDT"].held == D("900")


def test_errors_map_to_domain_errors(wc):
    owner = owner_for_user(3)
    with pytest.raises(InsufficientFunds):
        wc.place_hold(key="order:x", owner=owner, asset="USDT", amount=D("1"))
    with pytest.raises(InsufficientFunds):
        wc.withdraw(key="wd:x", owner=owner, asset="USDT", amount=D("1"))
    with pytest.raises(WalletRejected) as info:
        wc.place_hold(key="order:x", owner=owner, asset="usdt", amount=D("1"))
    assert (info.value.code, info.value.status) == ("validation_error", 400)
    assert "asset" in info.value.details
    with pytest.raises(WalletRejected) as info:
        wc.apply([])
    assert info.value.code == "validation_error"


def test_bad_token_is_rejected(wallet_server):
    client = WalletClient(wallet_server.url, "not-the-token", 5.0)
    with pytest.raises(WalletRejected) as info:
        client.totals()
    assert (info.value.code, info.value.status) == ("not_authenticated", 401)


def test_unreachable_wallet_is_unavailable(settings):
    from tests.support.processes import free_port

    settings.WALLET_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    wallet_client.cache_clear()
    with pytest.raises(WalletUnavailable):
        wallet_client().place_hold(key="order:u", owner="user:1", asset="USDT", amount=D("1"))
    wallet_client.cache_clear()


def test_timeouts_and_5xx_are_unavailable(monkeypatch):
    client = WalletClient("http://127.0.0.1:1", "t", 0.5)

    def timeout(*args, **kwargs):
        raise requests.ReadTimeout("slow")

    monkeypatch.setattr(client.adapter, "send", timeout)
    with pytest.raises(WalletUnavailable):
        client.totals()

    class Failing:
        status_code = 502
        content = b"<html>bad gateway</html>"

        def json(self):
            raise ValueError

    monkeypatch.setattr(client.adapter, "send", lambda *a, **k: Failing())
    with pytest.raises(WalletUnavailable):
        client.apply([])


def test_transport_is_pooled_and_retries_connect_errors_only():
    client = WalletClient("http://wallet.invalid", "t", 3.0)
    adapter = client.adapter
    assert adapter._pool_maxsize == client_module.POOL_SIZE
    retry = adapter.max_retries
    assert (retry.connect, retry.read, retry.status) == (client_module.CONNECT_RETRIES, 0, 0)
    assert client.timeout == (2.0, 3.0)
    assert client.headers["Authorization"] == "Bearer t"


def test_concurrent_holds_over_http_never_overdraw(wc):
    owner = owner_for_user(4)
    wc.deposit(key="dep:cc", owner=owner, asset="USDT", amount=D("70"))
    barrier = threading.Barrier(20)

    def place(i):
        barrier.wait()
        try:
            return wc.place_hold(key=f"order:cc{i}", owner=owner, asset="USDT", amount=D("10"))
        except InsufficientFunds as exc:
            return exc

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(place, range(20)))
    assert sum(isinstance(r, HoldResult) for r in results) == 7
    (usdt,) = wc.balances(owner)
    assert (usdt.available, usdt.held) == (0, D("70"))


def test_bench_runs_against_a_wallet(wc):
    from wallet.bench import run

    figures = run(wc, holds=20, batches=4, batch_size=5, concurrency=2)
    assert figures["holds"]["holds"] == 20 and figures["transfers"]["transfers"] == 20
    assert figures["conserved"] is True
