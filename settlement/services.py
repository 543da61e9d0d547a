"""Settlement services: carry the engine's outbox (trades, hold releases) to the wallet."""

from __future__ import annotations


def outbox_dispatch(*, trade_ids: list[int], released_order_ids: list[int]) -> None:
    """Hand freshly committed outbox rows to the workers (after the engine's commit).

    A lost message is harmless: beat re-enqueues rows left pending past a deadline.
    """
    from settlement import tasks

    if trade_ids:
        tasks.settle_trades.delay(trade_ids)
    if released_order_ids:
        tasks.release_holds.delay(released_order_ids)
