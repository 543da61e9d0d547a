"""The outbox relay: dispatch after the engine's commit, the beat sweep, operator commands."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import redis
from django.core.management import call_command
from django.utils import timezone

from settlement import services
from settlement.models import HoldRelease, Settlement


def queued_ids(broker_url: str, queue: str) -> list[list[int]]:
    """The id lists of the task messages waiting in `queue` (oldest first)."""
    client = redis.Redis.from_url(broker_url)
    try:
        messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()
    bodies = []
    for message in reversed(messages):  # kombu LPUSHes: the list's tail is the oldest
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        bodies.append(args[0])
    return bodies


def test_dispatch_sends_one_message_per_batch(settings, settlement_broker, settlement_queue):
    settings.SETTLEMENT_BATCH_SIZE = 50
    services.outbox_dispatch(trade_ids=list(range(1, 121)), released_order_ids=[7, 8, 8])
    bodies = queued_ids(settlement_broker, settlement_queue)
    assert [len(body) for body in bodies] == [50, 50, 20, 2]
    assert bodies[-1] == [7, 8]  # releases, de-duplicated


def test_dispatch_survives_a_broker_outage(settings, caplog):
    from exchange.celery import app

    previous = app.conf.broker_url
    from tests.settlement.conftest import _set_broker
    from tests.support.processes import free_port

    _set_broker(f"redis://127.0.0.1:{free_port()}/0")
    app.conf.broker_transport_options = {
        **(app.conf.broker_transport_options or {}),
        "max_retries": 0,
    }
    app.conf.task_publish_retry = False
    try:
        services.outbox_dispatch(trade_ids=[1, 2], released_order_ids=[])  # must not raise
    finally:
        app.conf.task_publish_retry = True
        _set_broker(previous)
    assert "the outbox sweep will pick the rows up" in caplog.text


def test_sweep_resends_only_rows_stuck_past_the_grace(
    db_trade, settings, settlement_broker, settlement_queue
):
    now = timezone.now()
    stuck = db_trade(status="pending", age=timedelta(minutes=5))
    fresh = db_trade(status="pending")
    leased = db_trade(status="pending")
    Settlement.objects.filter(pk=leased.pk).update(next_attempt_at=now + timedelta(seconds=30))
    db_trade(status="failed")
    release = HoldRelease.objects.create(
        order=stuck.trade.taker_order,
        asset="USDT",
        amount="1",
        next_attempt_at=now - timedelta(minutes=1),
        created_at=now,
    )
    counts = services.outbox_sweep(grace_seconds=10)
    assert counts == {"settlements": 1, "releases": 1}
    assert queued_ids(settlement_broker, settlement_queue) == [[stuck.trade_id], [release.order_id]]
    assert fresh.trade_id not in sum(queued_ids(settlement_broker, settlement_queue), [])


def test_sweep_command_and_status_command(db_trade, capsys):
    db_trade(status="pending", age=timedelta(minutes=5))
    db_trade(status="failed")
    call_command("settlement_sweep", "--grace", "1")
    assert json.loads(capsys.readouterr().out) == {"settlements": 1, "releases": 0}
    call_command("settlement_status")
    status = json.loads(capsys.readouterr().out)
    assert status["counts"] == {"settlement:pending": 1, "settlement:failed": 1}
    assert status["resolved_without_transfer_holds"] == {}
