"""How the API talks to the engine: one command in, one reply back (bounded wait)."""

from __future__ import annotations

import time
import uuid

import redis
from django.conf import settings

from exchange.infra import redis_client
from matching import feed


def engine_is_live(symbol: str) -> bool:
    """A live engine owns the symbol: its heartbeat (TTL 10 s) is present (and Redis answers)."""
    try:
        return bool(redis_client().exists(feed.heartbeat_key(symbol)))
    except redis.RedisError:
        return False


def engine_submit(*, symbol: str, kind: str, order_id: int, timeout: float | None = None) -> dict | None:
    """Ring the engine for `order_id` and wait for its reply; None when it did not come in time.

    The command is already durable in PostgreSQL (a pending order, or a cancel
    recorded on the row): if Redis loses this entry, the engine's reconciliation
    still applies it.
    """
    timeout = settings.ENGINE_REPLY_TIMEOUT_SECONDS if timeout is None else timeout
    reply = feed.reply_key(uuid.uuid4().hex)
    pipe = redis_client().pipeline(transaction=False)
    pipe.xadd(feed.stream_key(symbol), feed.encode_command(kind, order_id, reply))
    pipe.blpop([reply], timeout=timeout)
    _, popped = pipe.execute()
    if popped is None:
        return None
    return feed.loads(popped[1])


def engine_ring(*, symbol: str, kind: str, order_id: int) -> None:
    """Ring without waiting (the reply, if any, expires unread)."""
    redis_client().xadd(feed.stream_key(symbol), feed.encode_command(kind, order_id, None))


def wait_until_live(symbol: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine_is_live(symbol):
            return True
        time.sleep(0.1)
    return False
