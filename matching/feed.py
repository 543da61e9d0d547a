"""Redis keys and the wire format between the API, the engine and market-data readers.

Serialisation only: no business rule lives here. PostgreSQL is the journal; a
stream entry is just a doorbell naming an order id.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import orjson

GROUP = "engine"
PLACE = "place"
CANCEL = "cancel"
REPLY_TTL_SECONDS = 30
HEARTBEAT_TTL_SECONDS = 10


def stream_key(symbol: str) -> str:
    return f"engine:cmd:{symbol}"


def dead_letter_key(symbol: str) -> str:
    return f"engine:dead:{symbol}"


def book_key(symbol: str) -> str:
    return f"md:book:{symbol}"


def events_channel(symbol: str) -> str:
    return f"md:events:{symbol}"


def heartbeat_key(symbol: str) -> str:
    return f"engine:hb:{symbol}"


def reply_key(token: str) -> str:
    return f"engine:reply:{token}"


class Command(NamedTuple):  # a tuple: built once per stream entry, cheaply
    symbol: str
    kind: str  # PLACE | CANCEL
    order_id: int
    reply_to: str | None  # reply key, None for commands found by reconciliation
    entry_id: bytes | None = None  # stream entry id, None for reconciled commands


def encode_command(kind: str, order_id: int, reply_to: str | None) -> dict:
    fields = {"k": kind, "o": order_id}
    if reply_to:
        fields["r"] = reply_to
    return fields


def decode_command(symbol: str, entry_id: bytes, fields: dict) -> Command | None:
    """A stream entry as a Command; None when it is malformed (the caller acks and counts it)."""
    try:
        kind = fields[b"k"].decode()
        order_id = int(fields[b"o"])
        reply_to = fields[b"r"].decode() if b"r" in fields else None
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    if kind not in (PLACE, CANCEL) or order_id <= 0:
        return None
    return Command(symbol, kind, order_id, reply_to, entry_id)


def dumps(value) -> str:
    return dumpb(value).decode()


def dumpb(value) -> bytes:
    """Compact JSON as bytes (what Redis stores anyway)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits (ticks on a fine tick): the stdlib writes it exactly
        return json.dumps(value, separators=(",", ":")).encode()


def loads(raw: bytes | str):
    return json.loads(raw)  # not orjson: it reads integers beyond 64 bits as floats


# Replies go to per-request lists the API BLPOPs; each list expires if nobody
# reads it. One script call per batch instead of an RPUSH and an EXPIRE per reply.
# KEYS: reply lists; ARGV[1]: TTL seconds; ARGV[i + 1]: the reply for KEYS[i].
REPLY_SCRIPT = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
    redis.call('RPUSH', key, ARGV[i + 1])
    redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""
