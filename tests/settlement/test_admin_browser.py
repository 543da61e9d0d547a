"""Staff in a real browser (headless Chromium driven by Playwright) against a live server:
log in, filter the failed settlements, run the retry action, see them settle."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from settlement import services
from tests.settlement.helpers import all_settled, statuses, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser_page(monkeypatch):
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    # Playwright's sync API keeps an event loop running in this thread; the test's own
    # ORM calls are still plain synchronous code (the usual Django + Playwright setting).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            # ORM calls made while Playwright's loop runs use connections of their own
            # (asgiref keys them by context): close them, or the test DB cannot be dropped.
            from django.db import connections

            connections.close_all()
            browser.close()


def test_staff_filter_failed_settlements_and_retry_them(
    live_server, admin_user, scenario, workers, wallet_proxy, browser_page
):
    made = scenario(pairs=1, trades=3)
    wallet_proxy.mode = "503"
    workers.start(SETTLEMENT_MAX_ATTEMPTS=1)
    services.outbox_dispatch(trade_ids=made.trade_ids, released_order_ids=[])
    wait_until(
        lambda: statuses(made.trade_ids) == {"failed": 3}, timeout=30, message="dead letters"
    )
    wallet_proxy.mode = "pass"

    page = browser_page
    page.goto(f"{live_server.url}/admin/login/?next=/admin/settlement/settlement/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/settlement/settlement/")

    # filter: status = failed (the sidebar link), then the rows are the three dead letters
    page.click("#changelist-filter a[href*='status__exact=failed']")
    page.wait_for_url("**status__exact=failed**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 3
    assert "wallet_unavailable" in page.inner_text("#result_list")

    # select them all and run "retry"
    for checkbox in page.locator("input[name=_selected_action]").all():
        checkbox.check()
    page.select_option("select[name=action]", "retry_settlements")
    page.click("button[name=index]")
    page.wait_for_selector("ul.messagelist")
    assert "3 settlement(s) re-sent to the workers." in page.inner_text("ul.messagelist")

    wait_until(lambda: all_settled(made.trade_ids), timeout=30, message="settled after the retry")
    page.goto(f"{live_server.url}/admin/settlement/settlement/?status__exact=settled")
    assert page.locator("#result_list tbody tr").count() == 3

    # the detail page shows the legs and the history, retry included
    page.goto(f"{live_server.url}/admin/settlement/settlement/{made.trade_ids[0]}/change/")
    text = page.inner_text("#content")
    assert f"trade:{made.trade_ids[0]}" in text
    assert "retry_requested" in text and "gave_up" in text and "applied" in text
