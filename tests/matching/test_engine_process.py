"""The engine as a real process: one owner per symbol, takeover after kill -9, nothing lost or doubled."""

import sys
import time

import pytest

from exchange import invariants
from matching import feed
from orders.models import Order, Trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_redis", "no_dispatch")]


def _engine_argv():
    return [sys.executable, "manage.py", "run_matching_engine", "--symbols", "BTC-USDT", "--metrics-port", "0"]


def _owner_pid(redis) -> int | None:
    beat = redis.get(feed.heartbeat_key("BTC-USDT"))
    return feed.loads(beat)["pid"] if beat else None


def _wait(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_second_engine_waits_then_takes_over_without_losing_or_doubling(
    market, make_user, pending_order, project_processes, clean_redis
):
    from tests.support.processes import process_env

    btc = market("BTC-USDT", tick_size="0.01", lot_size="0.001", min_notional="0")
    env = process_env(ENGINE_METRICS_PORT="0")
    first = project_processes.start("engine-a", _engine_argv(), env=env)
    _wait(lambda: _owner_pid(clean_redis) == first.pid, "the first engine to own BTC-USDT")
    second = project_processes.start("engine-b", _engine_argv(), env=env)
    time.sleep(3)  # two ownership rounds: the second must stand by
    assert second.alive() and _owner_pid(clean_redis) == first.pid

    users = [make_user() for _ in range(4)]
    orders = []
    for i in range(200):
        side = "buy" if i % 2 else "sell"
        order = pending_order(users[i % 4], btc, side, f"{100 + (i % 5) - 2}.00", "1.000")
        clean_redis.xadd(feed.stream_key("BTC-USDT"), feed.encode_command(feed.PLACE, order.pk, None))
        orders.append(order)
        if i == 100:
            first.kill()  # kill -9 mid-stream
    _wait(lambda: _owner_pid(clean_redis) == second.pid, "the second engine to take over", timeout=30)
    _wait(lambda: not Order.objects.filter(status="pending").exists(), "every order to be applied", timeout=60)

    assert Order.objects.count() == 200
    assert invariants.no_duplicate_trade() == []
    assert invariants.fills_match_trades() == []
    assert invariants.no_self_trade() == []
    assert Trade.objects.exists()
    time.sleep(1.5)  # the last snapshot is published after the last commit
    assert invariants.books_consistent() == []
