from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.api.fields import at_scale
from exchange.api.pagination import EnvelopeCursorPagination
from exchange.errors import ValidationFailed
from marketdata import selectors
from marketdata.api.serializers import BookSchema, MarketOutput, TickerSchema
from orders.api.schemas import TradeSchema
from orders.api.serializers import TradeOutput


class MarketListView(APIView):
    @extend_schema(responses=MarketOutput(many=True), summary="Markets, their filters and fees")
    def get(self, request):
        return Response(MarketOutput(selectors.markets_list(), many=True).data)


class BookQuery(serializers.Serializer):
    depth = serializers.IntegerField(min_value=1, max_value=1000, default=50)


class OrderBookView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("depth", int, description="levels per side, 1..1000, default 50")],
        responses=BookSchema,
        summary="Order book snapshot",
    )
    def get(self, request, symbol):
        query = BookQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        book = selectors.order_book(symbol=symbol, depth=query.validated_data["depth"])
        market = book["market"]
        pp, qp = market.price_places, market.quantity_places
        return Response(
            {
                "symbol": market.symbol,
                "sequence": book["sequence"],
                "bids": [[at_scale(p, pp), at_scale(q, qp)] for p, q in book["bids"]],
                "asks": [[at_scale(p, pp), at_scale(q, qp)] for p, q in book["asks"]],
                "timestamp": book["timestamp"],
            }
        )


class TradeQuery(serializers.Serializer):
    symbol = serializers.CharField(required=False, max_length=21)
    mine = serializers.BooleanField(required=False, default=False)


class TradeListView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("symbol", str),
            OpenApiParameter("mine", bool, description="my fills (needs a token)"),
            OpenApiParameter("limit", int, description="1..500, default 100"),
            OpenApiParameter("cursor", str),
        ],
        responses=TradeSchema(many=True),
        summary="Recent market trades, or my fills",
    )
    def get(self, request):
        query = TradeQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        symbol, mine = query.validated_data.get("symbol"), query.validated_data["mine"]
        if mine:
            if not request.user.is_authenticated:
                raise NotAuthenticated()
            trades = selectors.trades_of_user(user=request.user, symbol=symbol)
        elif symbol:
            trades = selectors.trades_recent(symbol=symbol)
        else:
            raise ValidationFailed.field("symbol", "Give symbol, or mine=true.")
        paginator = EnvelopeCursorPagination()
        page = paginator.paginate_queryset(trades, request, view=self)
        user = request.user if request.user.is_authenticated else None
        return paginator.get_paginated_response(TradeOutput(page, many=True, context={"user": user}).data)


class TradeDetailView(APIView):
    @extend_schema(responses=TradeSchema, summary="One trade (with my side when I am a party)")
    def get(self, request, trade_id):
        trade = selectors.trade_get(trade_id=trade_id)
        user = request.user if request.user.is_authenticated else None
        return Response(TradeOutput(trade, context={"user": user}).data)


class TickerView(APIView):
    @extend_schema(responses=TickerSchema, summary="Market ticker (rolling 24 h)")
    def get(self, request, symbol):
        t = selectors.ticker(symbol=symbol)
        market = t["market"]
        pp, qp, vp = market.price_places, market.quantity_places, market.quote_places
        return Response(
            {
                "symbol": market.symbol,
                "best_bid": at_scale(t["best_bid"], pp),
                "best_bid_quantity": at_scale(t["best_bid_quantity"], qp),
                "best_ask": at_scale(t["best_ask"], pp),
                "best_ask_quantity": at_scale(t["best_ask_quantity"], qp),
                "last_price": at_scale(t["last_price"], pp),
                "open_24h": at_scale(t["open_24h"], pp),
                "high_24h": at_scale(t["high_24h"], pp),
                "low_24h": at_scale(t["low_24h"], pp),
                "volume_24h": at_scale(t["volume_24h"], qp) if t["volume_24h"] else "0",
                "quote_volume_24h": at_scale(t["quote_volume_24h"], vp) if t["quote_volume_24h"] else "0",
                "timestamp": t["timestamp"].isoformat().replace("+00:00", "Z"),
            }
        )


