"""Ledger rules, through the services (real PostgreSQL)."""

from decimal import Decimal

import pytest
from django.db import connection

from exchange.errors import InsufficientFunds, ValidationFailed
from wallet import selectors, services
from wallet.models import Account, Entry, Hold, Operation
from wallet.services import OperationRejected, hold_place, operations_apply
from wallet.validation import Leg, ReleaseSpec, TransferSpec, parse_operation

pytestmark = pytest.mark.django_db

D = Decimal
ZERO = Decimal(0)


def transfer(key, *legs):
    return TransferSpec(key=key, legs=tuple(Leg(*leg) for leg in legs))


def trade_legs(buyer, seller, *, quote_amount, base_amount, buyer_hold, seller_hold, fee_quote=ZERO, fee_base=ZERO):
    """The settlement of one trade: buyer pays quote from its hold, seller delivers base from its."""
    legs = [
        (buyer, "USDT", quote_amount, buyer_hold),
        (seller, "USDT", quote_amount - fee_quote, None),
        (seller, "BTC", base_amount, seller_hold),
        (buyer, "BTC", base_amount - fee_base, None),
    ]
    if fee_quote:
        legs.append(("exchange-fees", "USDT", fee_quote, None))
    if fee_base:
        legs.append(("exchange-fees", "BTC", fee_base, None))
    return legs


# --- deposits and withdrawals -------------------------------------------------


def test_deposit_credits_available_once_per_key(new_owner, balance, ledger_ok):
    owner = new_owner()
    record, applied = services.deposit(key="dep:1", owner=owner, asset="USDT", amount=D("100.5"))
    assert applied and record.kind == "deposit" and record.payload == {"owner": owner, "asset": "USDT", "amount": "100.5"}
    again, applied_again = services.deposit(key="dep:1", owner=owner, asset="USDT", amount=D("100.5"))
    assert not applied_again and again.key == "dep:1"
    assert balance(owner, "USDT") == (D("100.5"), 0)
    ledger_ok()


def test_deposit_key_reused_for_something_else_is_a_conflict(new_owner):
    owner = new_owner()
    services.deposit(key="dep:x", owner=owner, asset="USDT", amount=D("1"))
    with pytest.raises(services.KeyConflict):
        services.deposit(key="dep:x", owner=owner, asset="USDT", amount=D("2"))


def test_withdrawal_needs_available_funds(funded, balance, ledger_ok):
    owner = funded("BTC", "1")
    with pytest.raises(InsufficientFunds):
        services.withdraw(key="wd:1", owner=owner, asset="BTC", amount=D("1.1"))
    assert not Operation.objects.filter(key="wd:1").exists()  # refused: the key stays free
    services.withdraw(key="wd:1", owner=owner, asset="BTC", amount=D("0.4"))
    services.withdraw(key="wd:1", owner=owner, asset="BTC", amount=D("0.4"))
    assert balance(owner, "BTC") == (D("0.6"), 0)
    totals = {row.asset: row for row in selectors.totals()}
    assert totals["BTC"].deposits == 1 and totals["BTC"].withdrawals == D("0.4")
    ledger_ok()


def test_withdrawal_from_unknown_account_is_insufficient(new_owner):
    with pytest.raises(InsufficientFunds):
        services.withdraw(key="wd:2", owner=new_owner(), asset="BTC", amount=D("1"))


@pytest.mark.parametrize("amount", ["0", "-1", "NaN", "Infinity", "1e-19", "0.0000000000000000001", "1" * 21, "abc", ""])
def test_amounts_are_validated(new_owner, amount):
    with pytest.raises(ValidationFailed):
        services.deposit(key="dep:bad", owner=new_owner(), asset="USDT", amount=amount)


@pytest.mark.parametrize("asset", ["usdt", "U", "TOOLONGASSET", "US-D", ""])
def test_assets_are_validated(new_owner, asset):
    with pytest.raises(ValidationFailed):
        services.deposit(key="dep:bad", owner=new_owner(), asset=asset, amount="1")


def test_largest_amounts_stay_exact(new_owner, balance, ledger_ok):
    owner = new_owner()
    big = D("99999999999999999999.999999999999999999")  # 38 digits, 18 places
    services.deposit(key="dep:big", owner=owner, asset="USDT", amount=D("99999999999999999999.999999999999999998"))
    services.deposit(key="dep:tiny", owner=owner, asset="USDT", amount=D("0.000000000000000001"))
    assert balance(owner, "USDT") == (big, 0)
    with pytest.raises(ValidationFailed):  # one more unit no longer fits numeric(38, 18)
        services.deposit(key="dep:over", owner=owner, asset="USDT", amount=D("0.000000000000000001"))
    hold, _ = hold_place(key="order:big", owner=owner, asset="USDT", amount=big)
    assert hold.amount == big
    assert balance(owner, "USDT") == (0, big)
    ledger_ok()


# --- holds ------------------------------------------------------------------------


def test_hold_moves_available_to_held(funded, balance, ledger_ok):
    owner = funded("USDT", "100")
    hold, created = hold_place(key="order:1", owner=owner, asset="USDT", amount=D("30.25"))
    assert created
    assert (hold.amount, hold.captured, hold.released, hold.remaining) == (D("30.25"), 0, 0, D("30.25"))
    assert balance(owner, "USDT") == (D("69.75"), D("30.25"))
    ledger_ok()


def test_hold_is_idempotent_on_its_key(funded, balance):
    owner = funded("USDT", "100")
    first, _ = hold_place(key="order:2", owner=owner, asset="USDT", amount=D("60"))
    again, created = hold_place(key="order:2", owner=owner, asset="USDT", amount=D("60"))
    assert not created and again == first
    # Even when the balance could no longer cover it, the retry answers with the first hold.
    still, created = hold_place(key="order:2", owner=owner, asset="USDT", amount=D("60"))
    assert not created and still.amount == D("60")
    assert balance(owner, "USDT") == (D("40"), D("60"))
    assert Hold.objects.filter(key="order:2").count() == 1


def test_hold_refused_without_funds_creates_nothing(funded, new_owner, balance):
    owner = funded("USDT", "10")
    with pytest.raises(InsufficientFunds):
        hold_place(key="order:3", owner=owner, asset="USDT", amount=D("10.000000000000000001"))
    with pytest.raises(InsufficientFunds):
        hold_place(key="order:4", owner=new_owner(), asset="USDT", amount=D("1"))
    assert not Hold.objects.filter(key__in=["order:3", "order:4"]).exists()
    assert balance(owner, "USDT") == (D("10"), 0)
    # The refused key can be used again once there are funds.
    hold, created = hold_place(key="order:3", owner=owner, asset="USDT", amount=D("10"))
    assert created and hold.amount == 10


def test_hold_up_to_takes_what_is_there(funded, balance, ledger_ok):
    owner = funded("USDT", "25")
    hold, created = hold_place(key="order:5", owner=owner, asset="USDT", amount=D("40"), up_to=True)
    assert created and hold.amount == D("25") and hold.requested == D("40")
    assert balance(owner, "USDT") == (0, D("25"))
    with pytest.raises(InsufficientFunds):  # nothing left: refused
        hold_place(key="order:6", owner=owner, asset="USDT", amount=D("1"), up_to=True)
    again, created = hold_place(key="order:5", owner=owner, asset="USDT", amount=D("40"), up_to=True)
    assert not created and again.amount == D("25")
    small, _ = hold_place(key="order:7", owner=funded("USDT", "100"), asset="USDT", amount=D("40"), up_to=True)
    assert small.amount == D("40")
    ledger_ok()


def test_hold_key_of_another_account_is_a_conflict(funded):
    owner = funded("USDT", "100")
    hold_place(key="order:8", owner=owner, asset="USDT", amount=D("1"))
    with pytest.raises(services.KeyConflict):
        hold_place(key="order:8", owner=funded("USDT", "100"), asset="USDT", amount=D("1"))


def test_hold_placement_is_one_statement(funded, django_assert_max_num_queries):
    owner = funded("USDT", "100")
    with django_assert_max_num_queries(3):  # the statement (plus savepoint in this test's transaction)
        hold_place(key="order:9", owner=owner, asset="USDT", amount=D("1"))


# --- transfers ------------------------------------------------------------------------


def test_settlement_transfer_moves_money_once(funded, balance, ledger_ok):
    buyer = funded("USDT", "1000")
    seller = funded("BTC", "2")
    hold_place(key="order:b", owner=buyer, asset="USDT", amount=D("600"))
    hold_place(key="order:s", owner=seller, asset="BTC", amount=D("2"))
    legs = trade_legs(
        buyer, seller, quote_amount=D("300"), base_amount=D("0.01"), buyer_hold="order:b",
        seller_hold="order:s", fee_quote=D("0.3"), fee_base=D("0.00001"),
    )  # fmt: skip
    spec = transfer("trade:1", *legs)
    assert [r.status for r in operations_apply(operations=[spec])] == ["applied"]
    assert [r.status for r in operations_apply(operations=[spec])] == ["duplicate"]
    assert balance(buyer, "USDT") == (D("400"), D("300"))
    assert balance(buyer, "BTC") == (D("0.00999"), 0)
    assert balance(seller, "BTC") == (0, D("1.99"))
    assert balance(seller, "USDT") == (D("299.7"), 0)
    assert balance("exchange-fees", "USDT") == (D("0.3"), 0)
    assert balance("exchange-fees", "BTC") == (D("0.00001"), 0)
    assert selectors.hold_get(key="order:b").captured == D("300")
    assert Operation.objects.get(key="trade:1").payload["legs"][0] == {
        "owner": buyer, "asset": "USDT", "amount": "300", "from_hold": "order:b",
    }  # fmt: skip
    ledger_ok()


def test_transfer_entries_sum_to_zero_per_asset(funded):
    buyer, seller = funded("USDT", "100"), funded("BTC", "1")
    hold_place(key="order:b2", owner=buyer, asset="USDT", amount=D("100"))
    hold_place(key="order:s2", owner=seller, asset="BTC", amount=D("1"))
    legs = trade_legs(buyer, seller, quote_amount=D("50"), base_amount=D("0.5"), buyer_hold="order:b2", seller_hold="order:s2", fee_quote=D("0.05"))
    operations_apply(operations=[transfer("trade:2", *legs)])
    entries = Entry.objects.filter(operation__key="trade:2").select_related("account")
    sums = {}
    for entry in entries:
        sums[entry.account.asset] = sums.get(entry.account.asset, 0) + entry.amount
    assert sums == {"USDT": 0, "BTC": 0}
    assert len(entries) == 5


def test_capture_beyond_the_hold_is_rejected(funded, balance):
    buyer, seller = funded("USDT", "100"), funded("BTC", "1")
    hold_place(key="order:b3", owner=buyer, asset="USDT", amount=D("10"))
    hold_place(key="order:s3", owner=seller, asset="BTC", amount=D("1"))
    legs = trade_legs(buyer, seller, quote_amount=D("10.5"), base_amount=D("0.1"), buyer_hold="order:b3", seller_hold="order:s3")
    (result,) = operations_apply(operations=[transfer("trade:3", *legs)])
    assert (result.status, result.code) == ("rejected", "hold_exceeded")
    assert balance(buyer, "USDT") == (D("90"), D("10"))
    assert balance(seller, "BTC") == (0, D("1"))
    assert not Operation.objects.filter(key="trade:3").exists()


def test_transfer_rules(funded, new_owner):
    owner = funded("USDT", "100")
    other = funded("USDT", "100")
    hold_place(key="order:r1", owner=owner, asset="USDT", amount=D("10"))
    cases = {
        "unknown hold": ([(owner, "USDT", D("1"), "order:nope"), (other, "USDT", D("1"), None)], "hold_not_found"),
        "hold of someone else": ([(other, "USDT", D("1"), "order:r1"), (owner, "USDT", D("1"), None)], "hold_mismatch"),
        "hold of another asset": ([(owner, "BTC", D("1"), "order:r1"), (other, "BTC", D("1"), None)], "hold_mismatch"),
        "two legs over the hold": (
            [(owner, "USDT", D("6"), "order:r1"), (owner, "USDT", D("6"), "order:r1"), (other, "USDT", D("12"), None)],
            "hold_exceeded",
        ),
    }
    specs = [transfer(f"t:{name}".replace(" ", "-"), *legs) for name, (legs, _) in cases.items()]
    results = operations_apply(operations=specs)
    assert [(r.status, r.code) for r in results] == [("rejected", code) for _, code in cases.values()]
    with pytest.raises(OperationRejected) as info:
        services.transfer_apply(key="t:x", legs=[Leg(owner, "USDT", D("11"), "order:r1"), Leg(other, "USDT", D("11"))])
    assert info.value.code == "hold_exceeded"


@pytest.mark.parametrize(
    "legs",
    [
        [{"owner": "a", "asset": "USDT", "amount": "1", "from_hold": "h"}, {"owner": "b", "asset": "USDT", "amount": "2"}],
        [{"owner": "a", "asset": "USDT", "amount": "1", "from_hold": "h"}, {"owner": "b", "asset": "BTC", "amount": "1"}],
        [{"owner": "b", "asset": "USDT", "amount": "1"}],
        [{"owner": "a", "asset": "USDT", "amount": "1", "from_hold": "h"}],
        [],
        [{"owner": "a", "asset": "USDT", "amount": "-1", "from_hold": "h"}, {"owner": "b", "asset": "USDT", "amount": "-1"}],
        [{"owner": "a", "asset": "USDT", "amount": "1", "from_holds": "h"}, {"owner": "b", "asset": "USDT", "amount": "1"}],
    ],
    ids=["unbalanced", "assets-differ", "no-debit", "no-credit", "empty", "negative", "unknown-field"],
)
def test_malformed_transfers_are_validation_errors(legs):
    with pytest.raises(ValidationFailed):
        services.transfer_apply(key="t:bad", legs=legs)
    spec = parse_operation({"key": "t:bad", "type": "transfer", "legs": legs})
    (result,) = operations_apply(operations=[spec])
    assert (result.status, result.code) == ("rejected", "validation_error")


# --- releases ----------------------------------------------------------------------------


def test_release_exact_amount_once(funded, balance, ledger_ok):
    owner = funded("USDT", "100")
    hold_place(key="order:rl", owner=owner, asset="USDT", amount=D("40"))
    services.hold_release(key="release:order:rl", hold="order:rl", amount=D("15"))
    services.hold_release(key="release:order:rl", hold="order:rl", amount=D("15"))  # duplicate
    assert balance(owner, "USDT") == (D("75"), D("25"))
    hold = selectors.hold_get(key="order:rl")
    assert (hold.released, hold.remaining) == (D("15"), D("25"))
    with pytest.raises(OperationRejected) as info:
        services.hold_release(key="release:2", hold="order:rl", amount=D("25.1"))
    assert info.value.code == "hold_exceeded"
    with pytest.raises(OperationRejected) as info:
        services.hold_release(key="release:3", hold="order:none", amount=D("1"))
    assert info.value.code == "hold_not_found"
    ledger_ok()


def test_captures_and_releases_never_exceed_the_hold(funded, balance, ledger_ok):
    buyer, seller = funded("USDT", "100"), funded("BTC", "10")
    hold_place(key="order:cb", owner=buyer, asset="USDT", amount=D("100"))
    hold_place(key="order:cs", owner=seller, asset="BTC", amount=D("10"))
    ops = [
        transfer("trade:c1", *trade_legs(buyer, seller, quote_amount=D("30"), base_amount=D("1"), buyer_hold="order:cb", seller_hold="order:cs")),
        ReleaseSpec(key="release:cb", hold="order:cb", amount=D("60")),
        transfer("trade:c2", *trade_legs(buyer, seller, quote_amount=D("10.000000000000000001"), base_amount=D("1"), buyer_hold="order:cb", seller_hold="order:cs")),
        transfer("trade:c3", *trade_legs(buyer, seller, quote_amount=D("10"), base_amount=D("1"), buyer_hold="order:cb", seller_hold="order:cs")),
        ReleaseSpec(key="release:cb2", hold="order:cb", amount=D("0.000000000000000001")),
    ]
    results = operations_apply(operations=ops)
    assert [(r.status, r.code) for r in results] == [
        ("applied", None), ("applied", None), ("rejected", "hold_exceeded"), ("applied", None), ("rejected", "hold_exceeded"),
    ]  # fmt: skip
    hold = selectors.hold_get(key="order:cb")
    assert (hold.captured, hold.released, hold.remaining) == (D("40"), D("60"), 0)
    assert balance(buyer, "USDT") == (D("60"), 0)
    ledger_ok()


# --- batches ------------------------------------------------------------------------------


def test_batch_mixes_valid_invalid_and_duplicate_operations(funded, balance, ledger_ok):
    buyer, seller = funded("USDT", "1000"), funded("BTC", "10")
    hold_place(key="order:mb", owner=buyer, asset="USDT", amount=D("1000"))
    hold_place(key="order:ms", owner=seller, asset="BTC", amount=D("10"))

    def trade(n, quote="100", base="1"):
        legs = trade_legs(buyer, seller, quote_amount=D(quote), base_amount=D(base), buyer_hold="order:mb", seller_hold="order:ms")
        return transfer(f"trade:m{n}", *legs)

    first = operations_apply(operations=[trade(1)])
    assert first[0].status == "applied"
    batch = [
        trade(2),
        trade(1),  # applied in an earlier batch
        parse_operation({"key": "trade:bad", "type": "transfer", "legs": [{"owner": buyer, "asset": "USDT", "amount": "1"}]}),
        trade(3, quote="5000"),  # more than the hold
        trade(2),  # repeated within the batch
        parse_operation({"key": "x:1", "type": "swap"}),
        trade(4),
        ReleaseSpec(key="release:mb", hold="order:mb", amount=D("700")),
        ReleaseSpec(key="release:mb-too-much", hold="order:mb", amount=D("1")),
        trade(3, quote="5000"),  # repeated after a rejection: rejected the same way
    ]
    results = operations_apply(operations=batch)
    assert [(r.key, r.status, r.code) for r in results] == [
        ("trade:m2", "applied", None),
        ("trade:m1", "duplicate", None),
        ("trade:bad", "rejected", "validation_error"),
        ("trade:m3", "rejected", "hold_exceeded"),
        ("trade:m2", "duplicate", None),
        ("x:1", "rejected", "validation_error"),
        ("trade:m4", "applied", None),
        ("release:mb", "applied", None),
        ("release:mb-too-much", "rejected", "hold_exceeded"),
        ("trade:m3", "rejected", "hold_exceeded"),
    ]
    assert balance(buyer, "USDT") == (D("700"), 0)
    assert balance(buyer, "BTC") == (D("3"), 0)
    assert balance(seller, "USDT") == (D("300"), 0)
    assert balance(seller, "BTC") == (0, D("7"))
    assert Operation.objects.filter(kind="transfer", key__startswith="trade:m").count() == 3
    assert not Operation.objects.filter(key__in=["trade:m3", "trade:bad", "x:1", "release:mb-too-much"]).exists()
    ledger_ok()


def test_credit_creates_the_account(funded, new_owner, balance):
    owner = funded("USDT", "5")
    newcomer = new_owner()
    hold_place(key="order:n", owner=owner, asset="USDT", amount=D("5"))
    services.transfer_apply(key="t:n", legs=[Leg(owner, "USDT", D("5"), "order:n"), Leg(newcomer, "USDT", D("5"))])
    assert balance(newcomer, "USDT") == (D("5"), 0)
    assert Account.objects.filter(owner=newcomer).count() == 1


def test_batch_of_fifty_is_a_few_statements(funded, django_assert_max_num_queries):
    buyer, seller = funded("USDT", "100000"), funded("BTC", "100")
    hold_place(key="order:fb", owner=buyer, asset="USDT", amount=D("100000"))
    hold_place(key="order:fs", owner=seller, asset="BTC", amount=D("100"))
    batch = [
        transfer(f"trade:f{n}", *trade_legs(buyer, seller, quote_amount=D("100"), base_amount=D("0.1"), buyer_hold="order:fb", seller_hold="order:fs", fee_quote=D("0.1")))
        for n in range(50)
    ]
    with django_assert_max_num_queries(10):
        results = operations_apply(operations=batch)
    assert {r.status for r in results} == {"applied"}
    assert selectors.hold_get(key="order:fb").captured == D("5000")


def test_ledger_audit_finds_a_tampered_balance(funded, ledger_ok):
    owner = funded("USDT", "5")
    ledger_ok()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE wallet_account SET available = available + 1 WHERE owner = %s", [owner])
    problems = selectors.ledger_problems()
    assert len(problems) == 1 and owner in problems[0]
