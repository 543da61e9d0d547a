"""Concurrency through the real API (gunicorn, sync workers) and the real wallet and engine:
double spend (a burst of orders from one user whose funds cover exactly k of them) and
replay (one `client_order_id` sent ten times at once)."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

import pytest

from tests.reliability import harness
from tests.reliability.harness import Journal, Outcome, scale

pytestmark = pytest.mark.django_db(transaction=True)


def _balance(user, asset: str) -> tuple[Decimal, Decimal]:
    from settlement.clients.wallet import owner_for_user, wallet_client

    for row in wallet_client().balances(owner_for_user(user.pk)):
        if row.asset == asset:
            return row.available, row.held
    return Decimal(0), Decimal(0)


@pytest.mark.timeout(scale(180, 1800))
def test_double_spend(btc_market, engines, web, make_user, figures, seed):
    rng = random.Random(seed)
    engines.spawn()
    engines.wait_live()
    journal = Journal()
    burst_size = 200
    rounds = scale(2, 10)
    accepted_total = expected_total = negative = 0
    problems: list[str] = []
    statuses: Counter = Counter()
    for r in range(rounds):
        k = rng.randint(1, 25)
        user = make_user()
        trader = harness.Trader(web.url, user)
        if r % 2 == 0:  # buys hold quote: 100 USDT each
            side, price, asset, each = "buy", "100.00", "USDT", Decimal("100")
        else:  # sells hold base: 1 BTC each (asks far above the bids: nothing crosses)
            side, price, asset, each = "sell", "200.00", "BTC", Decimal("1")
        harness.fund(user, asset, each * k)
        fields = [
            {"symbol": "BTC-USDT", "side": side, "type": "limit", "price": price, "quantity": "1.000",
             "client_order_id": f"ds{r}-{n}"}
            for n in range(burst_size)
        ]  # fmt: skip
        answers = harness.burst([lambda f=f, t=trader: t.place(**f) for f in fields])
        round_statuses = Counter()
        for f, answer in zip(fields, answers, strict=True):
            status, body = answer if isinstance(answer, tuple) else (None, None)
            round_statuses[status] += 1
            journal.add(Outcome("place", user.pk, status, body, client_order_id=f["client_order_id"], fields=f))
        statuses.update(round_statuses)
        accepted = sum(round_statuses[s] for s in harness.ACCEPTED)
        accepted_total += accepted
        expected_total += k
        available, held = _balance(user, asset)
        negative += available < 0 or held < 0
        if accepted != k:
            problems.append(f"round {r}: funds for {k}, accepted {accepted} ({dict(round_statuses)})")
        if round_statuses[422] != burst_size - k:
            problems.append(f"round {r}: {round_statuses[422]} refused for funds, expected {burst_size - k}")
        if (available, held) != (0, each * k):
            problems.append(f"round {r}: balance available {available}, held {held}; expected 0 and {each * k}")
    harness.wait_engine_quiet(timeout=60)
    verdict = harness.check_outcomes(journal)
    harness.check_invariants(quiescent=True, verdict=verdict)
    verdict.add("double_spend", problems)
    verdict.add("unexpected_server_errors", harness.unexpected_server_errors(web))
    figures.update(
        {
            "known bugs met (open, pinned)": verdict.figures.get("known_bugs_met", {}),
            "bursts x concurrent POSTs": f"{rounds} x {burst_size}",
            "accepted (expected = sum of k)": f"{accepted_total} ({expected_total})",
            "answers": dict(sorted(statuses.items(), key=lambda item: str(item[0]))),
            "negative balances": negative + verdict.count("invariant.no_negative_balance"),
            "phantom orders (refused yet created)": verdict.count("phantom_orders"),
            "invariant violations": sum(len(v) for key, v in verdict.problems.items() if key.startswith("invariant.")),
        }
    )
    assert verdict.ok, verdict.describe()


@pytest.mark.timeout(scale(180, 1800))
def test_replay(btc_market, engines, web, make_user, figures, seed):
    from orders.models import Order

    rng = random.Random(seed)
    engines.spawn()
    engines.wait_live()
    rich = make_user()
    harness.fund(rich, "USDT", "1000000")
    rounds = scale(20, 200)
    journal = Journal()
    problems: list[str] = []
    answers_seen: Counter = Counter()
    for r in range(rounds):
        coid = f"replay-{r}-{rng.randrange(10**9)}"
        # Half the rounds from a user whose funds cover about one such order: the racers
        # must not be refused for the funds the original holds.
        if rng.random() < 0.5:
            user = make_user()
            harness.fund(user, "USDT", "1.00")  # one order holds 0.50 to 0.99
        else:
            user = rich
        trader = harness.Trader(web.url, user)
        # The same id ten times at once, the other fields different each time: one order,
        # and every answer is that order.
        fields = [
            {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": f"{rng.randint(50, 99)}.00",
             "quantity": "0.010", "client_order_id": coid}
            for _ in range(10)
        ]  # fmt: skip
        answers = harness.burst([lambda f=f, t=trader: t.place(**f) for f in fields])
        ids = set()
        for f, answer in zip(fields, answers, strict=True):
            status, body = answer if isinstance(answer, tuple) else (None, None)
            answers_seen[status] += 1
            journal.add(Outcome("place", user.pk, status, body, client_order_id=coid, fields=f))
            if status in harness.ACCEPTED:
                ids.add(((body or {}).get("data") or {}).get("order", {}).get("id"))
            elif not ("BUG-11" in harness.OPEN_BUGS and status == 422):  # counted by check_outcomes
                problems.append(f"{coid}: answered {status} {body}")
        created = Order.objects.filter(user=user, client_order_id=coid).count()
        if created != 1 or len(ids) != 1:
            problems.append(f"{coid}: {created} orders created, answers name {ids}")
    harness.wait_engine_quiet(timeout=60)
    verdict = harness.check_outcomes(journal)
    harness.check_invariants(quiescent=True, verdict=verdict)  # also: no orphan hold of a losing racer
    verdict.add("replay", problems)
    verdict.add("unexpected_server_errors", harness.unexpected_server_errors(web))
    figures.update(
        {
            "known bugs met (open, pinned)": verdict.figures.get("known_bugs_met", {}),
            "ids x concurrent POSTs": f"{rounds} x 10",
            "orders created": Order.objects.filter(client_order_id__startswith="replay-").count(),
            "answers": dict(sorted(answers_seen.items(), key=lambda item: str(item[0]))),
            "problems": len(problems),
            "invariant violations": sum(len(v) for key, v in verdict.problems.items() if key.startswith("invariant.")),
        }
    )
    assert verdict.ok, verdict.describe()
