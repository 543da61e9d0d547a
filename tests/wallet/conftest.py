import itertools
from decimal import Decimal

import pytest

_owners = itertools.count(1)
_keys = itertools.count(1)


@pytest.fixture
def new_owner():
    """A fresh wallet owner name (`user:<n>`) per call."""
    return lambda: f"user:{900000 + next(_owners)}"


@pytest.fixture
def new_key():
    return lambda prefix="k": f"{prefix}:{next(_keys)}"


@pytest.fixture
def funded(new_owner, new_key):
    """funded("USDT", "100") -> a new owner with that much available (a deposit)."""
    from wallet.services import deposit

    def make(asset: str, amount: str, owner: str | None = None) -> str:
        owner = owner or new_owner()
        deposit(key=new_key("dep"), owner=owner, asset=asset, amount=Decimal(amount))
        return owner

    return make


@pytest.fixture
def balance():
    """balance(owner, asset) -> (available, held) as Decimals (zeros when there is no account)."""
    from wallet.selectors import balances_of

    def read(owner: str, asset: str) -> tuple[Decimal, Decimal]:
        for row in balances_of(owner=owner):
            if row.asset == asset:
                return row.available, row.held
        return Decimal(0), Decimal(0)

    return read


@pytest.fixture
def ledger_ok():
    """Call at the end of a test: the double entry and conservation hold."""
    from wallet.selectors import ledger_problems, totals

    def check() -> None:
        assert ledger_problems() == []
        assert all(row.balanced for row in totals()), totals()

    return check
