"""The engine loop: Redis stream doorbells in, core matching, one PostgreSQL commit per batch.

Order of effects per batch (crash-safe at every step):
  read commands -> load their order rows -> apply to the in-memory books ->
  render the rows to write and the replies to send ->
  commit (orders, trades, settlements, hold releases, market sequence) ->
  reply to waiting requests, publish book snapshots, ack -> hand the outbox to Celery.
Nothing is replied or published before it is committed. A crash anywhere
re-delivers un-acked commands; they are idempotent because the DB says what
was already applied.

When the stream is deep (full batches), a batch's commit runs on a committer
thread while the next batch is read and matched; batches still commit one at a
time and in order, and each is answered only after its commit.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)

from exchange.crashpoints import crash_point
from exchange.infra import redis_client
from marketdata.models import Market
from matching import core, feed, metrics, services
from matching.services import Batch, LeaseLost, MarketBook
from orders.models import Order
from settlement.relay import OutboxRelay

logger = logging.getLogger("matching.engine")

LOCK_NAMESPACE = 7001  # pg advisory lock (namespace, market id): one owner per symbol
MAX_DELIVERIES = 5  # a command delivered this often without being acked is dead-lettered
SNAPSHOT_DEPTH = 1000


class Engine:
    def __init__(
        self,
        symbols: list[str] | None = None,
        *,
        batch_size: int = 500,
        block_ms: int = 50,
        reconcile_seconds: float = 1.0,
        ownership_seconds: float = 2.0,
    ):
        self.only_symbols = set(symbols) if symbols else None
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.reconcile_seconds = reconcile_seconds
        self.ownership_seconds = ownership_seconds
        self.books: dict[str, MarketBook] = {}  # symbol -> owned book
        self.by_market_id: dict[int, MarketBook] = {}
        self.cursors: dict[str, str] = {}  # stream -> "0" (re-read our pending) or ">"
        self.consumer = "engine"
        self.stopping = False
        self._next_ownership = 0.0
        self._next_reconcile = 0.0
        self._next_forced_reconcile = 0.0
        self._next_heartbeat = 0.0
        self.redis = redis_client()
        self._push_replies = self.redis.register_script(feed.REPLY_SCRIPT)
        # Commits of a deep stream run here (on this thread's own DB connection), one at a time, in order.
        self.committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-commit")
        self.inflight: Prepared | None = None  # the batch committing on it, not yet answered
        self.outbox = OutboxRelay()  # committed settlements and releases, to Celery once per interval

    # ------------------------------------------------------------------ lifecycle

    def stop(self, *_):
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        backoff = 0.1
        while not self.stopping:
            try:
                self.step()
                backoff = 0.1
            except redis.RedisError as exc:
                logger.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._reread_pending()
            except (OperationalError, InterfaceError) as exc:
                logger.warning("database unavailable (%s); rebuilding after %.1fs", exc, backoff)
                self._drop_all_books()
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                # A bug must not take the exchange down: nothing uncommitted was replied or
                # acked, so rebuild from the DB and go on (a command that keeps failing is
                # dead-lettered after MAX_DELIVERIES).
                logger.exception("engine step failed; rebuilding the books after %.1fs", backoff)
                self._drop_all_books()
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        try:
            self._drain()
            self.outbox.flush(force=True)
        except Exception:
            logger.exception("could not answer the last batch; its commands are re-delivered")
        self.close()
        logger.info("engine stopped")

    def close(self) -> None:
        """Drop the books and locks, and end the committer thread with its connection."""
        self._drop_all_books()
        self.committer.submit(_close_thread_connection)
        self.committer.shutdown(wait=True)

    def step(self) -> None:
        now = time.monotonic()
        if now >= self._next_ownership:
            self._refresh_ownership()
            self._next_ownership = now + self.ownership_seconds
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + 1.0
        if not self.books:
            time.sleep(0.2)
            return
        commands = self._read_stream()
        # Reconcile when the stream is idle (nothing lost can hide behind a backlog
        # that is still being delivered), and now and then regardless.
        if now >= self._next_reconcile and (not commands or now >= self._next_forced_reconcile):
            commands += self._reconcile()
            self._next_reconcile = now + self.reconcile_seconds
            self._next_forced_reconcile = now + 30 * self.reconcile_seconds
        try:
            if commands:
                self._process(commands)
            else:
                self._drain()
        except _Skip:
            pass  # ownership lost: the books are dropped and re-taken (or left to the new owner)
        self.outbox.flush()  # what earlier batches committed, once the interval is over

    # ------------------------------------------------------------------ ownership

    def _refresh_ownership(self) -> None:
        close_old_connections()
        markets = Market.objects.all()
        if self.only_symbols is not None:
            markets = markets.filter(symbol__in=self.only_symbols)
        for market in markets:
            if market.symbol in self.books:
                continue
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, market.id])
                if not cursor.fetchone()[0]:
                    continue  # another engine owns it; we stand by
            self._own(market)

    def _own(self, market: Market) -> None:
        started = time.monotonic()
        market_book = services.book_rebuild(market)
        self.books[market.symbol] = market_book
        self.by_market_id[market.id] = market_book
        stream = feed.stream_key(market.symbol)
        self._ensure_group(stream)
        self.cursors[stream] = "0"  # first our own un-acked entries, then new ones
        elapsed = time.monotonic() - started
        metrics.REBUILD_SECONDS.labels(market.symbol).set(elapsed)
        metrics.OWNED.labels(market.symbol).set(1)
        self._publish_snapshots([market_book])
        self._heartbeat()
        logger.info("owning %s: %d orders rebuilt in %.3fs", market.symbol, len(market_book.book), elapsed)

    def _drop_all_books(self) -> None:
        """Forget the in-memory books and locks; ownership is re-taken and books rebuilt."""
        inflight, self.inflight = self.inflight, None
        if inflight is not None:  # let it land (or fail) first; it is answered by re-delivery
            try:
                inflight.future.result()
            except Exception:
                pass
        for symbol in self.books:
            metrics.OWNED.labels(symbol).set(0)
        self.books.clear()
        self.by_market_id.clear()
        self.cursors.clear()
        try:
            connection.close()  # releases the advisory locks with the session
        except DatabaseError:
            pass
        self._next_ownership = 0.0

    def _ensure_group(self, stream: str) -> None:
        try:
            self.redis.xgroup_create(stream, feed.GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _reread_pending(self) -> None:
        for stream in self.cursors:
            self.cursors[stream] = "0"

    def _heartbeat(self) -> None:
        """Beat for every owned symbol; republish a book snapshot Redis has lost (a restart, a flush)."""
        if not self.books:
            return
        pipe = self.redis.pipeline(transaction=False)
        beat = feed.dumps({"pid": os.getpid(), "at": time.time()})
        symbols = list(self.books)
        for symbol in symbols:
            pipe.set(feed.heartbeat_key(symbol), beat, ex=feed.HEARTBEAT_TTL_SECONDS)
            pipe.exists(feed.book_key(symbol))
        replies = pipe.execute()
        lost = [self.books[symbol] for symbol, present in zip(symbols, replies[1::2], strict=True) if not present]
        if lost and self.inflight is None:  # else the books are ahead of the DB; the batch republishes
            self._publish_snapshots(lost)

    # ------------------------------------------------------------------ input

    def _read_stream(self) -> list[feed.Command]:
        streams = dict(self.cursors)
        # Do not wait for more while a batch is committing: if the stream is empty, answer it.
        rereading = any(cursor == "0" for cursor in streams.values())
        try:
            response = self.redis.xreadgroup(
                feed.GROUP,
                self.consumer,
                streams,
                count=self.batch_size,
                block=None if rereading or self.inflight is not None else self.block_ms,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for stream in streams:  # Redis restarted empty: the DB journal still has everything
                self._ensure_group(stream)
            return []
        commands: list[feed.Command] = []
        malformed: dict[str, list[bytes]] = {}
        seen_streams = set()
        for stream_raw, entries in response or []:
            stream = stream_raw.decode()
            seen_streams.add(stream)
            symbol = stream.removeprefix("engine:cmd:")
            if streams[stream] == "0":
                if not entries:
                    self.cursors[stream] = ">"
                    continue
                entries = self._drop_poison(stream, symbol, entries)
            for entry_id, fields in entries:
                command = feed.decode_command(symbol, entry_id, fields) if fields else None
                if command is None:
                    malformed.setdefault(stream, []).append(entry_id)
                    metrics.MALFORMED.labels(symbol).inc()
                    logger.warning("malformed command %r on %s: acked and dropped", fields, stream)
                    continue
                commands.append(command)
        for stream in streams:
            if streams[stream] == "0" and stream not in seen_streams:
                self.cursors[stream] = ">"
        if malformed:
            pipe = self.redis.pipeline(transaction=False)
            for stream, ids in malformed.items():
                pipe.xack(stream, feed.GROUP, *ids)
                pipe.xdel(stream, *ids)
            pipe.execute()
        return commands

    def _drop_poison(self, stream: str, symbol: str, entries: list) -> list:
        """Entries delivered too often (they keep killing the batch) go to the dead-letter stream."""
        first, last = entries[0][0], entries[-1][0]
        pending = self.redis.xpending_range(stream, feed.GROUP, min=first, max=last, count=len(entries))
        deliveries = {item["message_id"]: item["times_delivered"] for item in pending}
        kept = []
        for entry_id, fields in entries:
            if deliveries.get(entry_id, 0) > MAX_DELIVERIES:
                self.redis.xadd(feed.dead_letter_key(symbol), {**(fields or {}), b"entry": entry_id})
                self.redis.xack(stream, feed.GROUP, entry_id)
                metrics.DEAD_LETTERS.labels(symbol).inc()
                logger.error("dead-lettered %s on %s after %d deliveries", entry_id, stream, deliveries[entry_id])
            else:
                kept.append((entry_id, fields))
        return kept

    def _reconcile(self) -> list[feed.Command]:
        """Commands present in the DB but never applied (whatever Redis lost)."""
        found = services.reconcile_candidates(
            list(self.by_market_id), min_age_seconds=2 * self.reconcile_seconds, limit=self.batch_size
        )
        commands = []
        for kind, market_id, order_id in found:
            market_book = self.by_market_id.get(market_id)
            if market_book is not None:
                commands.append(feed.Command(market_book.symbol, kind, order_id, None, None))
        return commands

    # ------------------------------------------------------------------ apply + commit

    def _process(self, commands: list[feed.Command]) -> None:
        """Apply a batch and commit it; batches commit (and then reply) strictly in order.

        A full batch means the stream is deep: its commit runs on the committer
        thread while the next batch is read and matched, and its replies, acks and
        settlements go out once the commit is known. A partial batch (the stream is
        drained) is committed and answered at once.
        """
        prepared = self._prepare(commands)
        if len(commands) >= self.batch_size:
            previous = self._wait_inflight()  # raises (books dropped) if it failed
            prepared.future = self.committer.submit(self._write, prepared)
            self.inflight = prepared
            if previous is not None:
                self._after_commit(previous)
            return
        self._drain()  # the stream is drained: answer the batch still committing first
        try:
            self._write(prepared)
        except Exception as exc:
            self._finish(prepared, exc)  # raises
        else:
            self._finish(prepared, None)
            self._after_commit(prepared)

    def _prepare(self, commands: list[feed.Command]) -> Prepared:
        rows = services.orders_fetch({command.order_id for command in commands})
        if self.inflight is not None:
            # Read while the previous batch may still be committing: its orders are
            # no longer pending whatever the row still says.
            statuses = self.inflight.statuses
            for order_id, row in rows.items():
                status = statuses.get(order_id)
                if status is not None:
                    row.status = status
        batch = Batch()
        for command in commands:
            market_book = self.books.get(command.symbol)
            row = rows.get(command.order_id)
            if market_book is None or row is None or row.market_id != market_book.market_id:
                continue  # unknown order, or not this market's: replied as unknown
            batch.markets[market_book.market_id] = market_book
            if command.kind == feed.PLACE:
                self._apply_place(market_book, row, batch)
            else:
                self._apply_cancel(market_book, row, batch)
        crash_point("engine.mid_batch")
        try:
            commit = services.batch_prepare(batch) if batch.markets else None
            return self._render(commands, rows, batch, commit)
        except Exception:
            self._drop_all_books()  # the books are ahead of anything that will be written
            raise

    def _write(self, prepared: Prepared) -> None:
        """The batch's transaction (on the committer thread for a deep stream: its own connection)."""
        if prepared.commit is None:
            return
        started = time.perf_counter()
        try:
            services.batch_write(prepared.commit)
        except Exception:
            if threading.current_thread() is not threading.main_thread():
                connection.close()  # this thread's connection may be broken; the next batch reconnects
            raise
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)

    def _wait_inflight(self) -> Prepared | None:
        """The batch committing in the background, once committed (None if there is none)."""
        prepared, self.inflight = self.inflight, None
        if prepared is None:
            return None
        try:
            prepared.future.result()
        except BaseException as exc:
            self._finish(prepared, exc)  # raises
        self._finish(prepared, None)
        return prepared

    def _finish(self, prepared: Prepared, error: BaseException | None) -> None:
        if error is None:
            if prepared.commit is not None:
                services.batch_committed(prepared.commit)
            return
        # The in-memory books are ahead of the DB now: rebuild them, re-read the batch.
        self._drop_all_books()
        if isinstance(error, LeaseLost):
            logger.error("lost ownership of %s: another engine advanced it; dropping books", error)
            raise _Skip from error
        raise error

    def _drain(self) -> None:
        """Answer the batch still committing in the background (the stream went quiet, or we stop)."""
        previous = self._wait_inflight()
        if previous is not None:
            self._after_commit(previous)
            self.committer.submit(_close_thread_connection)  # reconnects with the next deep stream

    def _apply_place(self, market_book: MarketBook, row: services.OrderRow, batch: Batch) -> None:
        if row.status != Order.Status.PENDING or row.id in batch.touched:
            return  # applied before (a redelivery or a reconciled duplicate)
        order = services.core_order(row, market_book.units)
        market_book.holds[row.id] = row.hold_amount
        if row.cancel_requested:
            # A cancel of a pending order is applied first: it never enters the book.
            order.status, order.reason = core.CANCELLED, core.CANCELLED_BY_USER
            batch.touched[row.id] = (market_book, order)
            return
        try:
            events = market_book.book.place(order)
        except (ValueError, TypeError) as exc:  # the core refused it and is unchanged
            logger.error("order %s refused by the matching core: %s", row.id, exc)
            order.status, order.reason = core.REJECTED, "invalid_order"
            events = []
        self._collect(market_book, events, batch)
        batch.touched.setdefault(row.id, (market_book, order))

    def _apply_cancel(self, market_book: MarketBook, row: services.OrderRow, batch: Batch) -> None:
        if row.status == Order.Status.PENDING and row.id not in batch.touched:
            self._apply_place(market_book, row, batch)  # sees cancel_requested: ends cancelled
            return
        self._collect(market_book, market_book.book.cancel(row.id), batch)

    @staticmethod
    def _collect(market_book: MarketBook, events: list, batch: Batch) -> None:
        touched = batch.touched
        for event in events:
            if event[0] is core.TRADE:
                batch.trades.append((market_book, event))
                maker, taker = event[2], event[3]
                touched[maker.id] = (market_book, maker)
                touched[taker.id] = (market_book, taker)
            else:
                order = event[2]
                touched[order.id] = (market_book, order)

    # ------------------------------------------------------------------ after commit

    def _render(self, commands, rows, batch: Batch, commit: services.Commit | None) -> Prepared:
        """Replies, market data and acks as they will be sent once the batch is committed.

        Rendered now: the order objects and the books move on with the next batch.
        """
        prepared = Prepared(commands, commit)
        prepared.statuses = {order_id: order.status for order_id, (_book, order) in batch.touched.items()}
        trade_rows = commit.trade_rows if commit is not None else []
        at = commit.at if commit is not None else datetime.now(UTC).isoformat()
        public_trades = [(row, _trade_reply(row, at)) for row in trade_rows]
        fills: dict[int, list[dict]] = {}
        for row, public in public_trades:
            fills.setdefault(row.maker_order_id, []).append(public)
            fills.setdefault(row.taker_order_id, []).append(public)
        touched = batch.touched
        keys, payloads = prepared.reply_keys, prepared.replies
        for command in commands:
            if not command.reply_to:
                continue
            entry = touched.get(command.order_id)
            if entry is None:
                row = rows.get(command.order_id)
                payload = {"order": None if row is None else {"id": row.id, "unchanged": True}}
            else:
                market_book, order = entry
                payload = {"order": _order_reply(market_book, order, at), "trades": fills.get(order.id, [])}
            keys.append(command.reply_to)
            payloads.append(feed.dumpb(payload))
        for market_book in batch.markets.values():
            if market_book.book.take_touched() or trade_rows:
                prepared.market_data.extend(_snapshot(market_book))
        # One trades event per market and batch (not one per trade): consumers get the list.
        trades_by_market: dict[int, list[dict]] = {}
        for row, public in public_trades:
            trades_by_market.setdefault(row.market_id, []).append(public)
        for market_id, trades in trades_by_market.items():
            channel = feed.events_channel(self.by_market_id[market_id].symbol)
            prepared.market_data.append(("publish", channel, feed.dumpb({"type": "trades", "trades": trades})))
        for command in commands:
            if command.entry_id is not None:
                prepared.acks.setdefault(feed.stream_key(command.symbol), []).append(command.entry_id)
        return prepared

    def _after_commit(self, prepared: Prepared) -> None:
        """Only now that the batch is committed: reply, publish, ack, hand the outbox to Celery."""
        commands, commit = prepared.commands, prepared.commit
        metrics.BATCH_SIZE.observe(len(commands))
        _count_commands(commands)
        crash_point("engine.after_commit_before_reply")
        if prepared.replies:
            self._push_replies(keys=prepared.reply_keys, args=[feed.REPLY_TTL_SECONDS, *prepared.replies])
        crash_point("engine.after_reply_before_ack")
        pipe = self.redis.pipeline(transaction=False)
        _queue_market_data(pipe, prepared.market_data)
        for stream, ids in prepared.acks.items():
            pipe.xack(stream, feed.GROUP, *ids)
            pipe.xdel(stream, *ids)  # acked entries are done: the DB is the journal
        if len(pipe):
            pipe.execute()
        crash_point("engine.between_commit_and_enqueue")
        if commit is None:
            return
        self.outbox.add(trade_ids=commit.trade_ids, released_order_ids=commit.released_order_ids)
        trades_per_market = Counter(row.market_id for row in commit.trade_rows)
        for market_id, count in trades_per_market.items():
            metrics.TRADES.labels(self.by_market_id[market_id].symbol).inc(count)

    # ------------------------------------------------------------------ market data

    def _publish_snapshots(self, market_books) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for market_book in market_books:
            market_book.book.take_touched()
            _queue_market_data(pipe, _snapshot(market_book))
        pipe.execute()


@dataclass(slots=True)
class Prepared:
    """A matched batch: what to write, and what to send once it is written."""

    commands: list[feed.Command]
    commit: services.Commit | None  # None: nothing to write (unknown orders only)
    statuses: dict[int, str] = field(default_factory=dict)  # order id -> status after the batch
    reply_keys: list[str] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)
    market_data: list[tuple[str, str, bytes]] = field(default_factory=list)  # ("set" | "publish", key, value)
    acks: dict[str, list[bytes]] = field(default_factory=dict)  # stream -> entry ids
    future: Future | None = None  # the commit on the committer thread


class _Skip(Exception):
    """The batch was abandoned (ownership lost): nothing to answer, the books are dropped."""


def _close_thread_connection() -> None:
    connection.close()


def _count_commands(commands) -> None:
    for (symbol, kind), count in Counter((c.symbol, c.kind) for c in commands).items():
        metrics.COMMANDS.labels(symbol, kind).inc(count)


def _snapshot(market_book: MarketBook) -> list[tuple[str, str, bytes]]:
    """The book as integers (ticks, lots); readers convert only the depth they serve."""
    book = market_book.book
    bids, asks = book.depth(SNAPSHOT_DEPTH)
    snapshot = {
        "sequence": book.seq,
        "bids": bids,
        "asks": asks,
        "last_price": book.last_price,
        "at": datetime.now(UTC).isoformat(),
    }
    return [
        ("set", feed.book_key(market_book.symbol), feed.dumpb(snapshot)),
        ("publish", feed.events_channel(market_book.symbol), feed.dumpb({"type": "book", "sequence": book.seq})),
    ]


def _queue_market_data(pipe, market_data) -> None:
    for action, key, value in market_data:
        if action == "set":
            pipe.set(key, value)
        else:
            pipe.publish(key, value)


def _order_reply(market_book: MarketBook, order: core.Order, updated_at: str) -> dict:
    text = market_book.text
    return {
        "id": order.id,
        "status": order.status,
        "reject_reason": order.reason if order.status in (core.EXPIRED, core.REJECTED, core.CANCELLED) else None,
        "filled_quantity": text.qty(order.filled),
        "filled_quote": text.quote(order.filled_quote),
        "fee_total": text.base_fee(order.fee) if order.side == core.BUY else text.quote_fee(order.fee),
        "sequence": order.seq or None,
        "updated_at": updated_at,
    }


def _trade_reply(row: services.TradeRow, created_at: str) -> dict:
    return {
        "id": row.id,
        "sequence": row.sequence,
        "price": row.price,
        "quantity": row.quantity,
        "quote_quantity": row.quote_quantity,
        "taker_side": row.taker_side,
        "maker_order_id": row.maker_order_id,
        "taker_order_id": row.taker_order_id,
        "buyer_fee": row.buyer_fee,
        "seller_fee": row.seller_fee,
        "created_at": created_at,
    }
