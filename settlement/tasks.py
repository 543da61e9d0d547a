"""Celery tasks: thin (take ids, call a service); retries and backoff live here."""

from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True)
def settle_trades(trade_ids: list[int]) -> None:
    from settlement import services

    services.settlements_process(trade_ids=trade_ids)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def release_holds(order_ids: list[int]) -> None:
    from settlement import services

    services.releases_process(order_ids=order_ids)
