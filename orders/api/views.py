from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from exchange.api.fields import plain
from exchange.api.pagination import EnvelopeCursorPagination
from exchange.api.throttling import OrderPlacementThrottle
from orders import selectors, services
from orders.api import schemas
from orders.api.serializers import (
    OrderInput,
    OrderListFilter,
    OrderOutput,
    TradeOutput,
    order_data,
    trade_data,
)


def _order_with_trades(outcome, user) -> dict:
    return {
        "order": order_data(outcome.order),
        "trades": [trade_data(trade, user_id=user.pk) for trade in outcome.trades],
    }


class OrderViewSet(viewsets.ViewSet):
    permission_classes = [IsAuthenticated]
    lookup_value_regex = r"\d+"

    def get_throttles(self):
        if self.action == "create":
            return [OrderPlacementThrottle()]  # placement has its own rate instead of the general one
        return super().get_throttles()

    @extend_schema(
        request=OrderInput,
        responses={
            201: schemas.OrderWithTradesSchema,
            200: schemas.OrderWithTradesSchema,
            202: schemas.OrderWithTradesSchema,
            422: schemas.error("insufficient_funds or too_many_open_orders; nothing was created"),
            503: schemas.error("engine_unavailable or wallet_unavailable; nothing was created or held"),
        },
        summary="Place an order",
    )
    def create(self, request):
        data = OrderInput(data=request.data)
        data.is_valid(raise_exception=True)
        outcome = services.order_place(user=request.user, **data.validated_data)
        if not outcome.created:
            code = status.HTTP_200_OK
        elif outcome.pending:
            code = status.HTTP_202_ACCEPTED
        else:
            code = status.HTTP_201_CREATED
        return Response(_order_with_trades(outcome, request.user), status=code)

    @extend_schema(
        parameters=[
            OpenApiParameter("symbol", str),
            OpenApiParameter("status", str, many=True, description="repeatable or comma list"),
            OpenApiParameter("side", str, enum=["buy", "sell"]),
            OpenApiParameter("limit", int, description="1..500, default 100"),
            OpenApiParameter("cursor", str),
        ],
        responses=schemas.OrderSchema(many=True),
        summary="My orders, newest first",
    )
    def list(self, request):
        filters = OrderListFilter(data=request.query_params)
        filters.is_valid(raise_exception=True)
        orders = selectors.orders_of_user(user=request.user, **filters.validated_data)
        paginator = EnvelopeCursorPagination()
        page = paginator.paginate_queryset(orders, request, view=self)
        return paginator.get_paginated_response(OrderOutput(page, many=True).data)

    @extend_schema(responses=schemas.OrderDetailSchema, summary="My order, with its fills")
    def retrieve(self, request, pk=None):
        order = selectors.order_of_user(user=request.user, order_id=int(pk))
        trades = selectors.order_fills(order=order)
        body = OrderOutput(order).data
        body["trades"] = TradeOutput(trades, many=True, context={"user": request.user}).data
        return Response(body)

    @extend_schema(
        responses={
            200: schemas.OrderSchema,
            202: schemas.OrderSchema,
            409: schemas.error("order_not_cancellable"),
            503: schemas.error("engine_unavailable"),
        },
        summary="Cancel my order",
    )
    def destroy(self, request, pk=None):
        outcome = services.order_cancel(user=request.user, order_id=int(pk))
        code = status.HTTP_202_ACCEPTED if outcome.pending else status.HTTP_200_OK
        return Response(OrderOutput(outcome.order).data, status=code)


class BalanceView(viewsets.ViewSet):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=schemas.BalanceSchema(many=True), summary="My balances")
    def list(self, request):
        balances = selectors.balances_of_user(user=request.user)
        return Response(
            [
                {"asset": b.asset, "available": plain(b.available), "held": plain(b.held), "total": plain(b.available + b.held)}
                for b in balances
            ]
        )
