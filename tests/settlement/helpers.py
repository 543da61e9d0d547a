"""Helpers of the settlement tests: waiting, scraping metrics, reading outcomes."""

from __future__ import annotations

import time
import urllib.request


def scrape(url: str) -> dict[str, float]:
    """The samples of a /metrics page: {'name{labels}': value}."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def wait_until(
    predicate, *, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def statuses(trade_ids) -> dict[str, int]:
    from django.db.models import Count

    from settlement.models import Settlement

    rows = (
        Settlement.objects.filter(trade_id__in=trade_ids).values("status").annotate(n=Count("pk"))
    )
    return {row["status"]: row["n"] for row in rows}


def all_settled(trade_ids) -> bool:
    return statuses(trade_ids) == {"settled": len(trade_ids)}
