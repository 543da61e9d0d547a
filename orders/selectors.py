"""Order reads: a user's orders (filters, newest first) and an order's fills."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from exchange.errors import NotFound, UnknownSymbol
from marketdata.models import Market
from orders.models import Order, Trade


def orders_of_user(*, user, symbol: str | None = None, status: list[str] | None = None, side: str | None = None) -> QuerySet:
    orders = Order.objects.filter(user=user).select_related("market")
    if symbol:
        market_id = Market.objects.filter(symbol=symbol).values_list("id", flat=True).first()
        if market_id is None:
            raise UnknownSymbol(f"No market {symbol}.", details={"symbol": [f"Unknown market {symbol}."]})
        orders = orders.filter(market_id=market_id)
    if status:
        orders = orders.filter(status__in=status)
    if side:
        orders = orders.filter(side=side)
    return orders


def order_of_user(*, user, order_id: int) -> Order:
    order = Order.objects.select_related("market").filter(pk=order_id, user=user).first()
    if order is None:
        raise NotFound("No such order.")
    return order


def order_fills(*, order: Order) -> list[Trade]:
    return list(
        Trade.objects.filter(Q(maker_order_id=order.pk) | Q(taker_order_id=order.pk))
        .select_related("market")
        .order_by("id")
    )


def balances_of_user(*, user) -> list:
    """The user's balances, as the wallet service keeps them."""
    from settlement.clients.wallet import owner_for_user, wallet_client

    return wallet_client().balances(owner_for_user(user.pk))
