"""The physical anchor: the cheapest DRF endpoint this project can serve."""

from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

BODY = {"status": "ok", "bench": "bare"}


class BareView(APIView):
    """A constant JSON body through the full middleware stack and the envelope renderer;
    no authentication, no throttling, no database, no Redis."""

    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = ()

    def get(self, request):
        return Response(BODY)
