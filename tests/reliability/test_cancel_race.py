"""Cancel/fill race: a maker cancels its resting order at the very instant a taker's
crossing order arrives. Whichever wins, the order is filled or cancelled, never both;
every hold is captured or released exactly (none stuck once settlement has run)."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.reliability import harness
from tests.reliability.harness import Journal, Outcome, scale

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.timeout(scale(240, 3600))
def test_cancel_fill_race(btc_market, engines, web, worker, traders, figures, seed):
    from orders.models import Order

    rng = random.Random(seed)
    engines.spawn()
    engines.wait_live()
    makers, takers = traders(4), traders(4)
    races = scale(100, 1000)
    journal = Journal()
    outcomes: Counter = Counter()
    problems: list[str] = []
    lock = threading.Lock()
    plans = [
        (n, makers[n % 4], takers[n % 4], rng.randint(1, 20), rng.randint(1, 30), rng.choice(("ioc", "gtc")), rng.randint(0, 20))
        for n in range(races)
    ]

    def race(plan) -> None:
        n, maker, taker, maker_lots, taker_lots, tif, price_ticks = plan
        price = f"{100 + price_ticks / 100:.2f}"
        coid = f"race-m{n}"
        status, body = maker.place(symbol="BTC-USDT", side="sell", type="limit", price=price,
                                   quantity=f"{maker_lots / 1000:.3f}", client_order_id=coid)  # fmt: skip
        journal.add(Outcome("place", maker.user.pk, status, body, client_order_id=coid))
        order = ((body or {}).get("data") or {}).get("order") or {}
        if status != 201 or order.get("status") not in ("open", "partially_filled"):
            with lock:
                outcomes["maker not resting (crossed a leftover bid)"] += 1
            return
        taker_coid = f"race-t{n}"
        taker_fields = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": price,
                        "quantity": f"{taker_lots / 1000:.3f}", "time_in_force": tif, "client_order_id": taker_coid}  # fmt: skip
        cancel, take = harness.burst([lambda: maker.cancel(order["id"]), lambda: taker.place(**taker_fields)])
        journal.add(Outcome("cancel", maker.user.pk, *(cancel if isinstance(cancel, tuple) else (None, None)), order_id=order["id"]))
        journal.add(Outcome("place", taker.user.pk, *(take if isinstance(take, tuple) else (None, None)), client_order_id=taker_coid))
        cancel_status = cancel[0] if isinstance(cancel, tuple) else None
        with lock:
            outcomes[f"cancel answered {cancel_status}"] += 1

    with ThreadPoolExecutor(max_workers=6) as pool:
        for future in [pool.submit(race, plan) for plan in plans]:
            future.result()

    harness.wait_engine_quiet(timeout=60)
    harness.wait_outbox_drained(timeout=120)
    # Classify each raced maker order by how it ended.
    makers_rows = Order.objects.filter(client_order_id__startswith="race-m")
    ended = Counter()
    for row in makers_rows:
        if row.status == "filled":
            ended["filled (fill won)"] += 1
        elif row.status == "cancelled" and row.filled_quantity:
            ended["partly filled, then cancelled"] += 1
        elif row.status == "cancelled":
            ended["cancelled (cancel won)"] += 1
        elif row.status in ("open", "partially_filled"):
            ended[f"still {row.status} (cancel refused)"] += 1
            problems.append(f"order {row.pk} still {row.status} after a cancel")
        else:
            ended[row.status] += 1
        if row.status == "cancelled" and row.quantity is not None and row.filled_quantity >= row.quantity:
            problems.append(f"order {row.pk} both filled and cancelled")
    verdict = harness.check_outcomes(journal)
    harness.check_invariants(quiescent=True, verdict=verdict)
    verdict.add("filled_and_cancelled", problems)
    verdict.add("unexpected_server_errors", harness.unexpected_server_errors(web))
    figures.update(
        {
            "known bugs met (open, pinned)": verdict.figures.get("known_bugs_met", {}),
            "races (cancel vs crossing order)": races,
            "answers to the cancels": dict(outcomes),
            "raced orders ended": dict(ended),
            "orders both filled and cancelled": len(problems) + verdict.count("invariant.statuses_match_fills"),
            "stuck holds": verdict.count("invariant.holds_match_orders"),
            "cancel answers contradicting the DB": verdict.count("cancel_mismatch"),
            "invariant violations": sum(len(v) for key, v in verdict.problems.items() if key.startswith("invariant.")),
        }
    )
    assert verdict.ok, verdict.describe()
