"""The engine loop: Redis stream doorbells in, core matching, one PostgreSQL commit per batch.

Order of effects per batch (crash-safe at every step):
  read commands -> load their order rows -> apply to the in-memory books ->
  commit (orders, trades, settlements, hold releases, market sequence) ->
  reply to waiting requests, publish book snapshots, ack -> hand the outbox to Celery.
Nothing is replied or published before it is committed. A crash anywhere
re-delivers un-acked commands; they are idempotent because the DB says what
was already applied.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
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
        self._drop_all_books()
        logger.info("engine stopped")

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
        if commands:
            self._process(commands)

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
        if lost:
            self._publish_snapshots(lost)

    # ------------------------------------------------------------------ input

    def _read_stream(self) -> list[feed.Command]:
        streams = dict(self.cursors)
        rereading = any(cursor == "0" for cursor in streams.values())
        try:
            response = self.redis.xreadgroup(
                feed.GROUP, self.consumer, streams, count=self.batch_size, block=None if rereading else self.block_ms
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
        rows = services.orders_fetch({command.order_id for command in commands})
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
        if batch.markets:
            started = time.perf_counter()
            try:
                services.batch_commit(batch)
            except LeaseLost as exc:
                logger.error("lost ownership of %s: another engine advanced it; dropping books", exc)
                self._drop_all_books()
                return
            except Exception:
                # The in-memory books are ahead of the DB now: rebuild them, re-read the batch.
                self._drop_all_books()
                raise
            metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(commands))
        _count_commands(commands)
        crash_point("engine.after_commit_before_reply")
        self._after_commit(commands, rows, batch)

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
            if type(event) is core.Trade:
                batch.trades.append((market_book, event))
                touched[event.maker.id] = (market_book, event.maker)
                touched[event.taker.id] = (market_book, event.taker)
            else:
                touched[event.order.id] = (market_book, event.order)

    def _after_commit(self, commands: list[feed.Command], rows: dict, batch: Batch) -> None:
        created_at = batch.trade_rows[0].created_at.isoformat() if batch.trade_rows else None
        public_trades = [(row, _trade_reply(row, created_at)) for row in batch.trade_rows]
        replies = self._replies(commands, rows, batch, public_trades)
        pipe = self.redis.pipeline(transaction=False)
        for key, payload in replies:
            pipe.rpush(key, payload)
            pipe.expire(key, feed.REPLY_TTL_SECONDS)
        self._queue_snapshots(pipe, batch, public_trades)
        pipe.execute()
        crash_point("engine.after_reply_before_ack")
        acks: dict[str, list[bytes]] = {}
        for command in commands:
            if command.entry_id is not None:
                acks.setdefault(feed.stream_key(command.symbol), []).append(command.entry_id)
        if acks:
            pipe = self.redis.pipeline(transaction=False)
            for stream, ids in acks.items():
                pipe.xack(stream, feed.GROUP, *ids)
                pipe.xdel(stream, *ids)  # acked entries are done: the DB is the journal
            pipe.execute()
        crash_point("engine.between_commit_and_enqueue")
        if batch.trade_ids or batch.released_order_ids:
            from settlement.services import outbox_dispatch

            outbox_dispatch(trade_ids=batch.trade_ids, released_order_ids=batch.released_order_ids)
        trades_per_symbol = Counter(market_book.symbol for market_book, _trade in batch.trades)
        for symbol, count in trades_per_symbol.items():
            metrics.TRADES.labels(symbol).inc(count)

    def _replies(self, commands, rows, batch: Batch, public_trades) -> list[tuple[str, str]]:
        """Each waiting request gets its order's committed state and the batch's fills of it."""
        fills: dict[int, list[dict]] = {}
        for row, public in public_trades:
            fills.setdefault(row.maker_order_id, []).append(public)
            fills.setdefault(row.taker_order_id, []).append(public)
        out = []
        updated_at = datetime.now(UTC).isoformat()
        for command in commands:
            if not command.reply_to:
                continue
            touched = batch.touched.get(command.order_id)
            if touched is None:
                row = rows.get(command.order_id)
                payload = {"order": None if row is None else {"id": row.id, "unchanged": True}}
            else:
                market_book, order = touched
                payload = {"order": _order_reply(market_book, order, updated_at), "trades": fills.get(order.id, [])}
            out.append((command.reply_to, feed.dumps(payload)))
        return out

    # ------------------------------------------------------------------ market data

    def _queue_snapshots(self, pipe, batch: Batch, public_trades) -> None:
        for market_book in batch.markets.values():
            if market_book.book.take_touched() or batch.trade_rows:
                _queue_snapshot(pipe, market_book)
        # One trades event per market and batch (not one per trade): consumers get the list.
        trades_by_market: dict[int, list[dict]] = {}
        for row, public in public_trades:
            trades_by_market.setdefault(row.market_id, []).append(public)
        for market_id, trades in trades_by_market.items():
            symbol = self.by_market_id[market_id].symbol
            pipe.publish(feed.events_channel(symbol), feed.dumps({"type": "trades", "trades": trades}))

    def _publish_snapshots(self, market_books) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for market_book in market_books:
            market_book.book.take_touched()
            _queue_snapshot(pipe, market_book)
        pipe.execute()


def _count_commands(commands) -> None:
    for (symbol, kind), count in Counter((c.symbol, c.kind) for c in commands).items():
        metrics.COMMANDS.labels(symbol, kind).inc(count)


def _queue_snapshot(pipe, market_book: MarketBook) -> None:
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
    pipe.set(feed.book_key(market_book.symbol), feed.dumps(snapshot))
    pipe.publish(feed.events_channel(market_book.symbol), feed.dumps({"type": "book", "sequence": book.seq}))


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
