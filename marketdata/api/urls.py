from django.urls import path

from marketdata.api import views

urlpatterns = [
    path("markets", views.MarketListView.as_view(), name="market-list"),
]
