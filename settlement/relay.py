"""The engine's hand-off of committed outbox rows to Celery, at most once per interval.

At a few orders a second every engine batch holds one or two trades, and a Celery
message per batch costs more than settling its trades: the send in the engine, the
task's start-up in the worker, a claim and a mark in PostgreSQL and a wallet call
each. The relay sends at once when it has been quiet (no added lag at low rates)
and otherwise gathers what the following batches commit into the next message,
`SETTLEMENT_DISPATCH_INTERVAL_SECONDS` later. The rows are committed before they
are added here, so nothing depends on the relay: ids it never sent (the engine
died) are found by the beat sweep, and a worker's claim tops up with other due rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from django.conf import settings


class OutboxRelay:
    def __init__(self, dispatch: Callable[..., None] | None = None, *, interval: float | None = None, clock=time.monotonic):
        self.dispatch = dispatch  # None: settlement.services.outbox_dispatch, looked up at each send
        self.interval = settings.SETTLEMENT_DISPATCH_INTERVAL_SECONDS if interval is None else interval
        self.clock = clock
        self.trade_ids: list[int] = []
        self.released_order_ids: list[int] = []
        self.next_at = 0.0

    def add(self, *, trade_ids: Iterable[int], released_order_ids: Iterable[int]) -> None:
        """Rows just committed; sent now if the last message is older than the interval."""
        self.trade_ids.extend(trade_ids)
        self.released_order_ids.extend(released_order_ids)
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Send what was gathered, once the interval since the last message is over (or now, with `force`)."""
        if not (self.trade_ids or self.released_order_ids):
            return
        now = self.clock()
        if not force and now < self.next_at:
            return
        trade_ids, self.trade_ids = self.trade_ids, []
        released_order_ids, self.released_order_ids = self.released_order_ids, []
        self.next_at = now + self.interval
        dispatch = self.dispatch
        if dispatch is None:
            from settlement import services

            dispatch = services.outbox_dispatch
        dispatch(trade_ids=trade_ids, released_order_ids=released_order_ids)
