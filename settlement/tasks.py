"""Celery tasks: thin (take ids, call a service); retries and backoff live here.

Delivery is at-least-once (`acks_late`, `reject_on_worker_lost`): a task may run
twice, and that is fine, because the services only touch rows that are still
pending and due, and the wallet applies each idempotency key once.

Retries: the service puts each transiently failed row back to `pending` with its
next attempt time on the row; the task re-sends itself for those ids with a
countdown up to that time (capped well below the Redis visibility timeout, or
the broker would deliver the delayed message twice). If that message is lost,
the beat sweep finds the rows by their `next_attempt_at`.
"""

from celery import shared_task
from celery.signals import worker_ready


@shared_task(
    bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None, ignore_result=True
)
def settle_trades(self, trade_ids: list[int]) -> dict:
    from settlement import services

    report = services.settlements_process(trade_ids=trade_ids)
    if report.retry:
        raise self.retry(
            args=(report.retry_ids,), countdown=report.retry_countdown(), max_retries=None
        )
    return {"settled": len(report.done), "failed": len(report.failed)}


@shared_task(
    bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None, ignore_result=True
)
def release_holds(self, order_ids: list[int]) -> dict:
    from settlement import services

    report = services.releases_process(order_ids=order_ids)
    if report.retry:
        raise self.retry(
            args=(report.retry_ids,), countdown=report.retry_countdown(), max_retries=None
        )
    return {"done": len(report.done), "failed": len(report.failed)}


@shared_task(acks_late=True, ignore_result=True)
def sweep_outbox() -> dict:
    """Beat: re-enqueue outbox rows left pending past their deadline."""
    from settlement import services

    return services.outbox_sweep()


@worker_ready.connect
def _serve_metrics(sender=None, **kwargs) -> None:
    from settlement.metrics import start_metrics_server, warn_if_counters_hidden

    controller = getattr(sender, "controller", None)
    warn_if_counters_hidden(getattr(controller, "pool_cls", None))
    start_metrics_server()
