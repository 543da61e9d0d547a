from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from marketdata import selectors
from marketdata.api.serializers import MarketOutput


class MarketListView(APIView):

    @extend_schema(responses=MarketOutput(many=True), summary="Markets, their filters and fees")
    def get(self, request):
        return Response(MarketOutput(selectors.markets_list(), many=True).data)
