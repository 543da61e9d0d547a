"""Beat tasks of the order path."""

from celery import shared_task


@shared_task(acks_late=True)
def sweep_orphan_holds() -> int:
    from orders import services

    return services.holds_release_orphans()
