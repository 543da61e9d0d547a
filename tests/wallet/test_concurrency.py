"""No balance or hold goes negative and no key moves money twice, under concurrent requests.

Threads each use their own database connection, so these tests commit for real
(`transactional_db`).
"""

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection

from exchange.errors import InsufficientFunds
from wallet import selectors, services
from wallet.models import Hold, Operation
from wallet.validation import Leg, ReleaseSpec, TransferSpec

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal
THREADS = 20


def run_together(fn, count: int = THREADS) -> list:
    """Run fn(i) in `count` threads released at the same instant; return results or exceptions."""
    barrier = threading.Barrier(count)

    def call(i):
        barrier.wait()
        try:
            return fn(i)
        except Exception as exc:  # collected for the assertions
            return exc
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(call, range(count)))


def test_exactly_k_holds_succeed(funded, balance, ledger_ok):
    owner = funded("USDT", "70")  # covers exactly 7 holds of 10

    def place(i):
        return services.hold_place(key=f"order:c{i}", owner=owner, asset="USDT", amount=D("10"))

    results = run_together(place)
    assert sum(isinstance(r, tuple) for r in results) == 7
    assert all(isinstance(r, tuple | InsufficientFunds) for r in results), results
    assert balance(owner, "USDT") == (0, D("70"))
    assert Hold.objects.filter(account__owner=owner).count() == 7
    ledger_ok()


def test_up_to_holds_share_the_balance_exactly(funded, balance, ledger_ok):
    owner = funded("USDT", "75")

    def place(i):
        return services.hold_place(key=f"order:u{i}", owner=owner, asset="USDT", amount=D("10"), up_to=True)

    results = run_together(place)
    amounts = sorted(r[0].amount for r in results if isinstance(r, tuple))
    assert amounts == [D("5")] + [D("10")] * 7
    assert sum(isinstance(r, InsufficientFunds) for r in results) == THREADS - 8
    assert balance(owner, "USDT") == (0, D("75"))
    ledger_ok()


def test_one_key_placed_concurrently_holds_once(funded, balance):
    owner = funded("USDT", "100")

    def place(i):
        return services.hold_place(key="order:same", owner=owner, asset="USDT", amount=D("30"))

    results = run_together(place)
    assert all(isinstance(r, tuple) for r in results), results
    assert sum(created for _, created in results) == 1
    assert balance(owner, "USDT") == (D("70"), D("30"))


def test_concurrent_captures_never_overdraw_a_hold(funded, new_owner, balance, ledger_ok):
    owner = funded("USDT", "100")
    services.hold_place(key="order:cap", owner=owner, asset="USDT", amount=D("55"))
    payees = [new_owner() for _ in range(THREADS)]

    def capture(i):
        spec = TransferSpec(key=f"trade:cap{i}", legs=(Leg(owner, "USDT", D("10"), "order:cap"), Leg(payees[i], "USDT", D("10"))))
        return services.operations_apply(operations=[spec])[0]

    results = run_together(capture)
    assert sorted((r.status, r.code) for r in results) == sorted(
        [("applied", None)] * 5 + [("rejected", "hold_exceeded")] * (THREADS - 5)
    )
    hold = selectors.hold_get(key="order:cap")
    assert (hold.captured, hold.remaining) == (D("50"), D("5"))
    assert balance(owner, "USDT") == (D("45"), D("5"))
    ledger_ok()


def test_one_transfer_key_sent_concurrently_moves_money_once(funded, new_owner, balance, ledger_ok):
    owner, payee = funded("USDT", "100"), new_owner()
    services.hold_place(key="order:once", owner=owner, asset="USDT", amount=D("100"))
    spec = TransferSpec(key="trade:once", legs=(Leg(owner, "USDT", D("10"), "order:once"), Leg(payee, "USDT", D("10"))))

    results = run_together(lambda i: services.operations_apply(operations=[spec])[0])
    assert sorted(r.status for r in results) == ["applied"] + ["duplicate"] * (THREADS - 1)
    assert balance(payee, "USDT") == (D("10"), 0)
    ledger_ok()


def test_overlapping_batches_in_any_order_apply_each_key_once(funded, new_owner, balance, ledger_ok):
    """Batches sharing keys and accounts, in shuffled orders: no deadlock, no double move."""
    buyers = [funded("USDT", "1000") for _ in range(4)]
    sellers = [funded("BTC", "10") for _ in range(4)]
    for n, (buyer, seller) in enumerate(zip(buyers, sellers, strict=True)):
        services.hold_place(key=f"order:ob{n}", owner=buyer, asset="USDT", amount=D("1000"))
        services.hold_place(key=f"order:os{n}", owner=seller, asset="BTC", amount=D("10"))
    trades = []
    for t in range(40):
        b, s = t % 4, (t * 3 + 1) % 4
        legs = (
            Leg(buyers[b], "USDT", D("10"), f"order:ob{b}"),
            Leg(sellers[s], "USDT", D("9.99"), None),
            Leg("exchange-fees", "USDT", D("0.01"), None),
            Leg(sellers[s], "BTC", D("0.1"), f"order:os{s}"),
            Leg(buyers[b], "BTC", D("0.1"), None),
        )
        trades.append(TransferSpec(key=f"trade:ov{t}", legs=legs))
    releases = [ReleaseSpec(key=f"release:ov{n}", hold=f"order:ob{n}", amount=D("1")) for n in range(4)]

    def send(i):
        rng = random.Random(i)
        batch = rng.sample(trades, 25) + rng.sample(releases, 2)
        rng.shuffle(batch)
        return services.operations_apply(operations=batch)

    results = run_together(send, count=12)
    for result in results:
        assert isinstance(result, list), result
        assert {r.status for r in result} <= {"applied", "duplicate"}
    applied = [r.key for result in results for r in result if r.status == "applied"]
    assert len(applied) == len(set(applied))
    sent = {op.key for i in range(12) for op in random.Random(i).sample(trades, 25)}
    assert Operation.objects.filter(kind="transfer", key__startswith="trade:ov").count() == len(sent)
    ledger_ok()


def test_withdrawals_holds_and_captures_racing_on_one_account(funded, new_owner, balance, ledger_ok):
    owner, payee = funded("USDT", "100"), new_owner()
    services.hold_place(key="order:mix", owner=owner, asset="USDT", amount=D("50"))

    def act(i):
        kind = i % 3
        if kind == 0:
            return services.withdraw(key=f"wd:mix{i}", owner=owner, asset="USDT", amount=D("15"))
        if kind == 1:
            return services.hold_place(key=f"order:mix{i}", owner=owner, asset="USDT", amount=D("15"))
        spec = TransferSpec(key=f"trade:mix{i}", legs=(Leg(owner, "USDT", D("15"), "order:mix"), Leg(payee, "USDT", D("15"))))
        return services.operations_apply(operations=[spec])[0]

    results = run_together(act, count=21)
    available, held = balance(owner, "USDT")
    assert available >= 0 and held >= 0
    # 50 available after the first hold: at most three more holds/withdrawals of 15.
    took = sum(isinstance(r, tuple) for r in results)
    assert took == 3 and available == D("5")
    captured = sum(getattr(r, "status", None) == "applied" for r in results)
    assert captured == 3
    assert held == D("50") - 3 * D("15") + sum(
        1 for r in results if isinstance(r, tuple) and hasattr(r[0], "captured")
    ) * D("15")
    ledger_ok()
