"""A cheap HTTP/1.1 load generator: asyncio protocols, raw pre-built requests, no client library.

The cost per request on the client side is one connect (gunicorn's sync workers
close every connection; a server that keeps it alive gets it reused), one write
of bytes built before the run, and a header scan. JSON is parsed only where the
bench needs an answer (order ids, error codes).

Two ways to drive a target:

- `open_loop(source, rate, duration)`: a fixed arrival rate. Request i is due at
  start + i/rate whatever happened to the others, and its latency is measured
  from that intended instant (no coordinated omission: a stall of the server, or
  of this generator, shows in the percentiles).
- `closed_loop(source, concurrency, duration)`: N clients back to back, to
  measure capacity (requests completed per second at saturation).
"""

from __future__ import annotations

import asyncio
import json
import math
from array import array
from collections import Counter
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 10.0  # what a trading client would wait


class HttpError(Exception):
    pass


class _Conn(asyncio.Protocol):
    """One connection, one request at a time."""

    __slots__ = ("transport", "waiter", "buf", "head", "body_at", "reusable", "got_bytes")

    def __init__(self) -> None:
        self.transport = None
        self.waiter: asyncio.Future | None = None
        self.buf = bytearray()
        self.head = None
        self.body_at = 0
        self.reusable = False
        self.got_bytes = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, raw: bytes, waiter: asyncio.Future) -> None:
        self.waiter = waiter
        self.buf.clear()
        self.head = None
        self.got_bytes = False
        self.reusable = False
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            self._parse(waiter)
        except Exception as exc:  # noqa: BLE001 - a malformed answer fails this request only
            waiter.set_exception(HttpError(f"bad response: {exc}"))

    def _parse(self, waiter: asyncio.Future) -> None:
        buf = self.buf
        if self.head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            version, _, rest = lines[0].partition(b" ")
            status = int(rest[:3])
            length, chunked, close = None, False, version == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    value = value.strip().lower()
                    close = value == b"close" or (close and value != b"keep-alive")
            self.head = (status, length, chunked, close)
            self.body_at = end + 4
        status, length, chunked, close = self.head
        if length is not None:
            if len(buf) - self.body_at < length:
                return
            body = bytes(buf[self.body_at : self.body_at + length])
        elif chunked:
            body = _dechunk(buf, self.body_at)
            if body is None:
                return
        else:
            return  # the body ends when the server closes (connection_lost)
        self.reusable = not close
        if close:
            # Now, not when the awaiting task next runs: gunicorn's sync worker lingers
            # (up to 2 s) for our FIN before it takes the next request.
            self.transport.close()
        waiter.set_result((status, body))

    def connection_lost(self, exc) -> None:
        self.reusable = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.head is not None and self.head[1] is None and not self.head[2]:
            waiter.set_result((self.head[0], bytes(self.buf[self.body_at :])))
        else:
            waiter.set_exception(ConnectionResetError("connection closed before the response ended"))


def _dechunk(buf: bytearray, at: int) -> bytes | None:
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", at)
        if eol < 0:
            return None
        size = int(bytes(buf[at:eol]).split(b";")[0], 16)
        at = eol + 2
        if size == 0:
            return bytes(out) if buf.find(b"\r\n", at) >= 0 else None
        if len(buf) < at + size + 2:
            return None
        out += buf[at : at + size]
        at += size + 2


class HttpClient:
    """Requests to one host:port; idle kept-alive connections are reused."""

    def __init__(self, host: str, port: int, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.idle: list[_Conn] = []

    def request_prefix(self, method: str, path: str, headers: str = "") -> str:
        return f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{headers}"

    def get(self, path: str, headers: str = "") -> bytes:
        return (self.request_prefix("GET", path, headers) + "\r\n").encode()

    def send_json(self, method: str, path: str, body: str, headers: str = "") -> bytes:
        data = body.encode()
        prefix = self.request_prefix(method, path, headers)
        return (prefix + f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data

    async def request(self, raw: bytes, timeout: float | None = None) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        timeout = self.timeout if timeout is None else timeout
        for attempt in (0, 1):
            reused = bool(self.idle)
            if reused:
                conn = self.idle.pop()
            else:
                _, conn = await loop.create_connection(_Conn, self.host, self.port)
            waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                conn.send(raw, waiter)
                status, body = await waiter
            except (ConnectionError, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and not waiter.cancelled():
                    conn.transport.close()
                    raise
                if waiter.cancelled():
                    # The request may still run: a sync server reads what was sent even
                    # from a connection its client has closed.
                    conn.transport.abort()
                    raise TimeoutError(f"no answer in {timeout:.0f}s") from None
                conn.transport.close()
                if reused and not conn.got_bytes and attempt == 0:
                    continue  # the server closed an idle connection: a fresh one
                raise
            finally:
                timer.cancel()
            if conn.reusable:
                self.idle.append(conn)
            else:
                conn.transport.close()
            return status, body
        raise ConnectionError("unreachable")

    def close(self) -> None:
        while self.idle:
            self.idle.pop().transport.close()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.cancel()


# --- recording -------------------------------------------------------------------------------


@dataclass
class Stats:
    n: int
    p50: float
    p95: float
    p99: float
    max: float

    def as_dict(self) -> dict:
        return {"n": self.n, "p50_ms": round(self.p50, 2), "p95_ms": round(self.p95, 2), "p99_ms": round(self.p99, 2), "max_ms": round(self.max, 2)}


def percentile(sorted_values, q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def stats_ms(latencies_s) -> Stats:
    values = sorted(latencies_s)
    return Stats(
        n=len(values),
        p50=percentile(values, 50) * 1000,
        p95=percentile(values, 95) * 1000,
        p99=percentile(values, 99) * 1000,
        max=(values[-1] * 1000) if values else math.nan,
    )


@dataclass
class Recorder:
    """What one phase saw: latencies per request kind, answers by (kind, status, code)."""

    latencies: dict[str, array] = field(default_factory=dict)
    answers: Counter = field(default_factory=Counter)
    started: float = 0.0
    ended: float = 0.0
    skipped: int = 0  # due while the in-flight cap was reached (the generator's own limit)
    max_lag: float = 0.0  # the most a request left after its intended instant
    accepted_orders: int = 0
    fills_seen: int = 0

    def add(self, kind: str, latency: float) -> None:
        values = self.latencies.get(kind)
        if values is None:
            values = self.latencies[kind] = array("d")
        values.append(latency)

    active: float = 0.0  # summed slice durations, when a recorder spans several slices

    @property
    def elapsed(self) -> float:
        return max(self.active or (self.ended - self.started), 1e-9)

    def count(self, kind: str) -> int:
        return len(self.latencies.get(kind, ()))

    def stats(self, kind: str) -> Stats:
        return stats_ms(self.latencies.get(kind, ()))

    def server_errors(self) -> int:
        return sum(n for (_, status, _), n in self.answers.items() if status >= 500)

    def failures(self) -> int:
        """Requests that got no HTTP answer at all (connect errors, timeouts)."""
        return sum(n for (_, status, _), n in self.answers.items() if status == 0)


# --- driving -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Op:
    kind: str
    raw: bytes
    on_answer: object = None  # callable(status, body, recorder) or None


class Driver:
    """Runs ops from a source against one client, open or closed loop, into a Recorder."""

    def __init__(self, client: HttpClient, *, max_inflight: int = 256) -> None:
        self.client = client
        self.max_inflight = max_inflight
        self.inflight = 0

    async def _one(self, op: Op, intended: float, rec: Recorder) -> None:
        loop = asyncio.get_running_loop()
        lag = loop.time() - intended
        if lag > rec.max_lag:
            rec.max_lag = lag
        self.inflight += 1
        try:
            status, body = await self.client.request(op.raw)
        except (OSError, TimeoutError, HttpError) as exc:
            rec.answers[(op.kind, 0, exc.__class__.__name__)] += 1
            if isinstance(exc, TimeoutError):  # it took at least this long: it counts in the percentiles
                rec.add(op.kind, loop.time() - intended)
            return
        finally:
            self.inflight -= 1
        now = loop.time()
        rec.add(op.kind, now - intended)
        if now > rec.ended:
            rec.ended = now
        code = ""
        if status >= 400:
            code = _error_code(body)
        rec.answers[(op.kind, status, code)] += 1
        if op.on_answer is not None:
            op.on_answer(status, body, rec)

    async def open_loop(self, next_op, rate: float, duration: float, rec: Recorder) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task] = set()
        start = loop.time() + 0.01
        rec.started = rec.ended = start
        end = start + duration
        interval = 1.0 / rate
        n = 0
        while True:
            now = loop.time()
            if now >= end:
                break
            due = min(int((now - start) * rate) + 1, int(duration * rate))
            while n < due:
                intended = start + n * interval
                n += 1
                if self.inflight >= self.max_inflight:
                    rec.skipped += 1
                    continue
                task = loop.create_task(self._one(next_op(), intended, rec))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, start + n * interval - loop.time()))
        if tasks:
            await asyncio.wait(tasks, timeout=self.client.timeout + 5)
        rec.ended = max(rec.ended, end)

    async def settle(self, raw: bytes, *, fast_ms: float = 30.0, timeout: float = 60.0) -> float:
        """Until a cheap request answers fast three times in a row (the server's queue is
        empty: nothing left from an overloaded phase); returns the seconds waited."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        streak = 0
        while streak < 3 and loop.time() - started < timeout:
            t = loop.time()
            try:
                await self.client.request(raw)
            except (OSError, TimeoutError, HttpError):
                streak = 0
                continue
            streak = streak + 1 if (loop.time() - t) * 1000 <= fast_ms else 0
            await asyncio.sleep(0.05)
        return loop.time() - started

    async def closed_loop(self, next_op, concurrency: int, duration: float, rec: Recorder, *, slice_of: bool = False) -> None:
        """`concurrency` clients back to back for `duration` seconds. With `slice_of`, this is
        one slice of a longer measurement: `rec.active` adds this slice's duration."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        if not slice_of:
            rec.started = rec.ended = start
        end = start + duration

        async def client() -> None:
            while loop.time() < end:
                await self._one(next_op(), loop.time(), rec)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        if slice_of:
            rec.active += loop.time() - start


def _error_code(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return "non_json"
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("code") or "")
    return ""
