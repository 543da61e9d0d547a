"""The beat sweeper gives back holds whose order row never appeared."""

from decimal import Decimal

import pytest

from orders.models import Order
from orders.services import holds_release_orphans
from settlement.clients.wallet import owner_for_user, wallet_client
from tests.orders.conftest import balance

pytestmark = pytest.mark.django_db(transaction=True)


def test_orphan_hold_is_released_and_a_real_orders_hold_is_kept(wallet_server, market, make_user, fund):
    btc = market("BTC-USDT", tick_size="0.01", lot_size="0.0001", min_notional="1")
    user = make_user()
    fund(user, "USDT", "1000")
    owner = owner_for_user(user.pk)
    real = Order.objects.create(
        user=user, market=btc, side="buy", type="limit", time_in_force="gtc", price=Decimal("100"),
        quantity=Decimal("1"), hold_asset="USDT", hold_amount=Decimal("100"), status="open", sequence=1,
    )  # fmt: skip
    wallet_client().place_hold(key=real.hold_key, owner=owner, asset="USDT", amount=Decimal("100"))
    wallet_client().place_hold(key=f"order:{real.pk + 1000}", owner=owner, asset="USDT", amount=Decimal("250"))
    assert balance(user, "USDT") == (Decimal("650"), Decimal("350"))

    assert holds_release_orphans(older_than_seconds=0) == 1
    assert balance(user, "USDT") == (Decimal("900"), Decimal("100"))
    assert holds_release_orphans(older_than_seconds=0) == 0  # nothing left to give back
