import pytest
from django.core.cache import cache

from exchange.api.throttling import AnonIpThrottle, OrderPlacementThrottle

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def test_anonymous_callers_are_throttled_per_ip(api_client, monkeypatch):
    monkeypatch.setattr(AnonIpThrottle, "THROTTLE_RATES", {"anon": "2/min"})
    assert api_client.get("/api/v1/markets").status_code == 200
    assert api_client.get("/api/v1/markets").status_code == 200
    response = api_client.get("/api/v1/markets")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


def test_order_placement_has_its_own_rate(auth_client, monkeypatch):
    monkeypatch.setattr(OrderPlacementThrottle, "THROTTLE_RATES", {"orders": "1/min", "user": "1000/min"})
    client = auth_client()
    # Invalid bodies still count: the throttle runs before validation.
    assert client.post("/api/v1/orders", {}, format="json").status_code == 400
    response = client.post("/api/v1/orders", {}, format="json")
    assert response.status_code == 429 and response.json()["error"]["code"] == "throttled"
    assert client.get("/api/v1/orders").status_code == 200  # reads are not order placements
