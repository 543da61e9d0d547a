from django.urls import path

from marketdata.api import views

urlpatterns = [
    path("markets", views.MarketListView.as_view(), name="market-list"),
    path("markets/<str:symbol>/ticker", views.TickerView.as_view(), name="ticker"),
    path("orderbook/<str:symbol>", views.OrderBookView.as_view(), name="orderbook"),
    path("trades", views.TradeListView.as_view(), name="trade-list"),
    path("trades/<int:trade_id>", views.TradeDetailView.as_view(), name="trade-detail"),
]
