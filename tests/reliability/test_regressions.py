"""Bugs the reliability loops found, each pinned by a small deterministic test.

A new bug's test is `xfail(strict=True)` (with the bug and its fix in `reason`) until
the product is fixed: then it passes, strict xfail turns that into a failure, and
whoever fixed it removes the marker (and the bug's entry in
`harness.KNOWN_SERVER_ERRORS`, if it has one). The tests stay, as regressions.

BUG-1  202 answered as 500 (int defaults of a fresh Order)          fixed in daaff34
BUG-2  Redis unreachable: 500 instead of 503 engine_unavailable     fixed in daaff34
BUG-3  Redis fails at the ring after journaling: 500 instead of 202 fixed in daaff34
BUG-4  holds and releases computed in the 28-digit decimal context  fixed in daaff34
BUG-5  markets whose lot × fee rate needs > 18 decimals accepted    fixed in daaff34
BUG-6  engine SQL cast units to bigint: one order kills the engine  fixed in daaff34
BUG-7  throttling: every API request 500 while Redis is unreachable fixed in 3ab3254
BUG-8  no settlement outbox sweep in the production beat schedule   fixed in 3ab3254
BUG-9  book snapshot not republished after Redis loses it           fixed in 3ab3254
BUG-10 NUL byte in a path symbol: 500                               fixed in c02209e
BUG-11 concurrent repeats of a client_order_id answered 422         fixed in c02209e
BUG-12 DELETE answers 200 for an order filled while it waited       fixed in c02209e
BUG-13 wallet account lock dropped a concurrently updated row       fixed in e4a52fc
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.reliability import harness

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def quiet_btc(wallet_server, btc_market):
    """BTC-USDT with a heartbeat but no engine behind it: the engine "does not answer in time"."""
    from exchange.infra import redis_client
    from matching import feed

    redis_client().set(feed.heartbeat_key("BTC-USDT"), feed.dumps({"pid": 0, "at": 0}), ex=60)
    return btc_market


def test_placement_answers_202_when_the_engine_does_not_reply(quiet_btc, auth_client, settings):
    settings.ENGINE_REPLY_TIMEOUT_SECONDS = 0.2
    client = auth_client()
    harness.fund(client.user, "USDT", "1000")
    response = client.post(
        "/api/v1/orders",
        {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100.00", "quantity": "1.000"},
        format="json",
    )
    assert response.status_code == 202, response.content
    order = response.json()["data"]["order"]
    assert order["status"] == "pending"
    assert order["filled_quantity"] == "0.000" and order["filled_quote"] == "0.00000"
    assert Decimal(order["fee_total"]) == 0


@pytest.fixture
def redis_unreachable(settings):
    """This process's Redis client points at a port nobody listens on."""
    from exchange.infra import redis_client
    from tests.support.processes import free_port

    original = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client.cache_clear()
    yield
    settings.REDIS_URL = original  # before the market fixture's teardown flushes Redis
    redis_client.cache_clear()


def test_placement_with_redis_unreachable_is_503_and_creates_nothing(wallet_server, btc_market, auth_client, redis_unreachable):
    from orders.models import Order

    client = auth_client()
    harness.fund(client.user, "USDT", "1000")
    response = client.post(
        "/api/v1/orders",
        {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100.00", "quantity": "1.000"},
        format="json",
    )
    assert Order.objects.count() == 0
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "engine_unavailable"


def test_placement_when_redis_fails_at_the_ring_answers_202(quiet_btc, auth_client, monkeypatch):
    import redis

    from matching import client as engine_client
    from orders.models import Order

    def ring_fails(**kwargs):
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(engine_client, "engine_submit", ring_fails)
    client = auth_client()
    harness.fund(client.user, "USDT", "1000")
    response = client.post(
        "/api/v1/orders",
        {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100.00", "quantity": "1.000"},
        format="json",
    )
    [order] = Order.objects.all()  # journaled: the engine's reconciliation will apply it
    assert order.status == "pending"
    assert response.status_code == 202, response.content
    assert response.json()["data"]["order"]["id"] == order.pk


def test_cancel_when_redis_fails_at_the_ring_answers_202(quiet_btc, auth_client, monkeypatch):
    import redis

    from matching import client as engine_client
    from orders.models import Order

    client = auth_client()
    order = Order.objects.create(
        user=client.user, market=quiet_btc, side="buy", type="limit", time_in_force="gtc",
        price="100.00", quantity="1.000", hold_asset="USDT", hold_amount="100", status="open", sequence=1,
    )

    def ring_fails(**kwargs):
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(engine_client, "engine_submit", ring_fails)
    response = client.delete(f"/api/v1/orders/{order.pk}")
    order.refresh_from_db()
    assert order.cancel_requested_at is not None  # durable: reconciliation applies it
    assert response.status_code == 202, response.content


PRICE = Decimal("123456789012.34567891")  # 20 significant digits, on a 1e-8 tick
QUANTITY = Decimal("1234.5678901234")  # 14 significant digits, on a 1e-10 lot
EXACT_COST = Decimal("152415787532381.356526659656677494")  # price × quantity: 33 digits


@pytest.fixture
def fine_market(wallet_server, market):
    """PX-USDT, tick 1e-8 and lot 1e-10 (tick × lot = 1e-18: accepted), with a heartbeat and no engine."""
    from exchange.infra import redis_client
    from matching import feed

    redis_client().flushdb()
    made = market("PX-USDT", tick_size="0.00000001", lot_size="0.0000000001", min_notional="0", maker_fee="0", taker_fee="0")
    redis_client().set(feed.heartbeat_key("PX-USDT"), feed.dumps({"pid": 0, "at": 0}), ex=60)
    yield made
    redis_client().flushdb()


def test_hold_is_exactly_price_times_quantity(fine_market, auth_client, settings):
    from orders.models import Order
    from settlement.clients.wallet import wallet_client

    settings.ENGINE_REPLY_TIMEOUT_SECONDS = 0.1
    client = auth_client()
    harness.fund(client.user, "USDT", "1000000000000000")
    client.post(
        "/api/v1/orders",
        {"symbol": "PX-USDT", "side": "buy", "type": "limit", "price": str(PRICE), "quantity": str(QUANTITY)},
        format="json",
    )  # the answer is 500 while BUG-1 stands; the row and the hold are what matter here
    order = Order.objects.get()
    assert order.hold_amount == EXACT_COST
    assert wallet_client().get_hold(order.hold_key).amount == EXACT_COST


def test_release_is_exactly_the_unused_hold(fine_market, make_user, monkeypatch):
    import settlement.services
    from exchange.infra import redis_client
    from matching import feed
    from matching.engine import Engine
    from orders.models import Order
    from settlement.models import HoldRelease

    monkeypatch.setattr(settlement.services, "outbox_dispatch", lambda **kwargs: None)
    redis_client().delete(feed.heartbeat_key("PX-USDT"))
    engine = Engine(["PX-USDT"])
    engine.step()
    order = Order.objects.create(
        user=make_user(), market=fine_market, side="buy", type="limit", time_in_force="gtc", price=PRICE,
        quantity=QUANTITY, hold_asset="USDT", hold_amount=EXACT_COST, cancel_requested_at="2026-01-01T00:00:00Z",
    )  # fmt: skip
    engine.redis.xadd(feed.stream_key("PX-USDT"), feed.encode_command(feed.CANCEL, order.pk, None))
    engine.step()
    order.refresh_from_db()
    assert order.status == "cancelled"
    assert HoldRelease.objects.get(order=order).amount == EXACT_COST


def test_market_whose_base_fee_needs_19_decimals_is_refused(db):
    from exchange.errors import ValidationFailed
    from marketdata.services import market_create

    with pytest.raises(ValidationFailed):
        market_create(symbol="AB-CD", tick_size="10", lot_size="0.0000000001", maker_fee="0.000000001", taker_fee="0")


# BUG-6: matching.services._ORDER_SELECT cast amounts in units to bigint; on a market with
# tick 1e-8 and lot 1e-8 a 1,000-unit buy holds 1e19 quote units > 2**63: orders_fetch
# raised DataError, which Engine.run does not catch, so the engine process died, and again
# at every restart (reconciliation re-reads the pending row).
def test_engine_survives_an_order_beyond_bigint_units(wallet_server, market, make_user, monkeypatch):
    import settlement.services
    from exchange.infra import redis_client
    from matching import feed
    from matching.engine import Engine
    from orders.models import Order

    monkeypatch.setattr(settlement.services, "outbox_dispatch", lambda **kwargs: None)
    redis_client().flushdb()
    meme = market("MEME-USDT", tick_size="0.00000001", lot_size="0.00000001", min_notional="0", maker_fee="0", taker_fee="0")
    engine = Engine(["MEME-USDT"])
    engine.step()
    order = Order.objects.create(
        user=make_user(), market=meme, side="buy", type="limit", time_in_force="gtc", price=Decimal("1.00000000"),
        quantity=Decimal("1000.00000000"), hold_asset="USDT", hold_amount=Decimal("1000"),
    )  # fmt: skip
    engine.redis.xadd(feed.stream_key("MEME-USDT"), feed.encode_command(feed.PLACE, order.pk, None))
    try:
        engine.step()
    finally:
        redis_client().flushdb()
    order.refresh_from_db()
    assert order.status == "open"


@pytest.fixture
def cache_unreachable(settings):
    """Django's cache (DRF's throttle store) and this process's Redis client point at a dead port."""
    from exchange.infra import redis_client
    from tests.support.processes import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    original = settings.REDIS_URL
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": dead}}
    settings.REDIS_URL = dead
    redis_client.cache_clear()
    yield
    settings.REDIS_URL = original
    redis_client.cache_clear()


BUG_7 = (
    "BUG-7: with Redis unreachable every API request answers 500: DRF's throttles keep their history "
    "in Django's RedisCache, and check_throttles lets redis.ConnectionError escape before any view runs "
    "(reads that need only PostgreSQL fail, and placement cannot answer 503 engine_unavailable). Fix: "
    "throttle classes that fail open on cache errors (log, allow), e.g. in exchange/api/throttling.py"
)


def test_api_without_redis_still_serves_reads(btc_market, auth_client, cache_unreachable):
    client = auth_client()
    assert client.get("/api/v1/markets").status_code == 200
    assert client.get("/api/v1/orders").status_code == 200


def test_api_without_redis_placement_is_503(wallet_server, btc_market, auth_client, cache_unreachable):
    from orders.models import Order

    client = auth_client()
    response = client.post(
        "/api/v1/orders",
        {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100.00", "quantity": "1.000"},
        format="json",
    )
    assert Order.objects.count() == 0
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "engine_unavailable"


def test_production_beat_sweeps_the_settlement_outbox():
    from django.conf import settings

    scheduled = {entry["task"] for entry in getattr(settings, "CELERY_BEAT_SCHEDULE", {}).values()}
    assert "settlement.tasks.sweep_outbox" in scheduled


def test_book_snapshot_comes_back_after_redis_loses_it(wallet_server, btc_market, engines, auth_client):
    import time as _time

    from exchange.infra import redis_client

    engines.spawn()
    engines.wait_live()
    seller, buyer = auth_client(), auth_client()
    harness.fund(seller.user, "BTC", "1")
    harness.fund(buyer.user, "USDT", "1000")
    sell = {"symbol": "BTC-USDT", "side": "sell", "type": "limit", "price": "100.00", "quantity": "1.000"}
    assert seller.post("/api/v1/orders", sell, format="json").status_code == 201
    redis_client().flushdb()  # Redis restarted empty
    harness.wait_for(lambda: engines.owner_pid("BTC-USDT") == engines.current.pid, timeout=10, what="heartbeat back")
    _time.sleep(1.5)
    book = seller.get("/api/v1/orderbook/BTC-USDT").json()["data"]
    assert book["asks"] == [["100.00", "1.000"]]
    buy = {"symbol": "BTC-USDT", "side": "buy", "type": "market", "quantity": "0.500"}
    response = buyer.post("/api/v1/orders", buy, format="json")
    assert response.json()["data"]["order"]["status"] == "filled", response.content


@pytest.mark.parametrize("path", ["/api/v1/markets/%00/ticker", "/api/v1/orderbook/%00", "/api/v1/markets/AB%00-CD/ticker"])
def test_symbol_with_nul_byte_in_path_is_404(db, api_client, path):
    response = api_client.get(path)
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "not_found"


def test_cancel_of_an_order_filled_meanwhile_is_409(quiet_btc, auth_client, monkeypatch):
    from matching import client as engine_client
    from orders.models import Order

    client = auth_client()
    order = Order.objects.create(
        user=client.user, market=quiet_btc, side="buy", type="limit", time_in_force="gtc",
        price="100.00", quantity="1.000", hold_asset="USDT", hold_amount="100", status="open", sequence=1,
    )  # fmt: skip

    def filled_while_waiting(**kwargs):
        # The engine matched the order against a taker in the batch before the cancel, and
        # the cancel's own reply did not arrive within the wait.
        Order.objects.filter(pk=order.pk).update(status="filled", filled_quantity="1.000", filled_quote="100.00000")
        return None

    monkeypatch.setattr(engine_client, "engine_submit", filled_while_waiting)
    response = client.delete(f"/api/v1/orders/{order.pk}")
    assert response.status_code == 409, (response.status_code, response.json())
    assert response.json()["error"]["code"] == "order_not_cancellable"


def test_concurrent_repeats_of_one_client_order_id_all_get_the_original(wallet_server, btc_market, engines, make_user, project_processes, stack_env):
    from orders.models import Order

    engines.spawn()
    engines.wait_live()
    web = harness.start_web(project_processes, workers=4, env=stack_env)
    refused = []
    for attempt in range(5):
        user = make_user()
        harness.fund(user, "USDT", "100")  # exactly one order's hold
        trader = harness.Trader(web.url, user)
        body = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100.00", "quantity": "1.000",
                "client_order_id": f"once-{attempt}"}  # fmt: skip
        answers = harness.burst([lambda t=trader, b=body: t.place(**b) for _ in range(10)])
        assert Order.objects.filter(user=user).count() == 1
        refused += [(status, (answer or {}).get("error", {}).get("code")) for status, answer in answers if status not in (200, 201, 202)]
    assert not refused, refused


# BUG-13: the wallet's account lock (SELECT ... WHERE id IN (... self-join ...) FOR NO KEY
# UPDATE) could come back without a row another transaction had just updated (READ
# COMMITTED re-check); the ledger then rejected a valid settlement for good
# ("hold_mismatch"), a dead letter with stuck holds (engine crash loop, full runs). A
# stress of the lock itself; the crash loop is the end-to-end check.
def test_wallet_locks_every_account_asked_for_under_concurrent_updates(transactional_db):
    import threading
    import time as _time

    import psycopg
    from django.db import connection

    from wallet import services as wallet

    owners = [f"user:{880000 + n}" for n in range(4)]
    for owner in owners:
        for asset in ("BTC", "USDT"):
            wallet.deposit(key=f"lockrace-{owner}-{asset}", owner=owner, asset=asset, amount=Decimal("1000000"))
    pairs = [(owner, asset) for owner in owners for asset in ("BTC", "USDT")]
    database = connection.settings_dict

    def connect():  # plain connections: the product's query at full speed
        return psycopg.connect(
            host=database["HOST"], port=database.get("PORT") or None, user=database["USER"],
            password=database.get("PASSWORD") or None, dbname=database["NAME"], autocommit=True,
        )  # fmt: skip

    stop = threading.Event()
    missing: list = []
    locked = [0]

    def update(n: int) -> None:
        # Other wallet transactions writing the same accounts (holds placed, transfers and
        # releases written): held up and available down by the same amount, as they do.
        with connect() as conn:
            k = n
            while not stop.is_set():
                k += 1
                owner, asset = pairs[k % len(pairs)]
                with conn.transaction():  # a batch holds its row locks until it commits
                    conn.execute(
                        "UPDATE wallet_account SET available = available - 1, held = held + 1 WHERE owner = %s AND asset = %s",
                        [owner, asset],
                    )

    def lock(n: int) -> None:  # what every transfer batch does first
        with connect() as conn:
            k = n
            while not stop.is_set():
                k += 1
                asked = sorted({pairs[(k * 3 + i) % len(pairs)] for i in range(3)})
                with conn.transaction(), conn.cursor() as cursor:
                    got = wallet._lock_accounts(cursor, [], asked)
                locked[0] += 1
                missing.extend(pair for pair in asked if pair not in got)

    threads = [threading.Thread(target=update, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=lock, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    _time.sleep(8)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not missing, f"{len(missing)} of {locked[0]} lockings missed an account asked for, e.g. {missing[:3]}"
