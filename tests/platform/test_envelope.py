import re

import pytest

pytestmark = pytest.mark.django_db

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_success_envelope_lists_markets(api_client, market):
    market("BTC-USDT")
    response = api_client.get("/api/v1/markets")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["data"][0]["symbol"] == "BTC-USDT"
    assert body["data"][0]["tick_size"] == "0.01"
    assert body["data"][0]["lot_size"] == "0.00001"
    assert body["data"][0]["enabled"] is True
    assert TIMESTAMP.match(body["meta"]["timestamp"])
    assert body["meta"]["request_id"] == response["X-Request-ID"]


def test_request_id_is_echoed(api_client):
    response = api_client.get("/api/v1/markets", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"
    assert response.json()["meta"]["request_id"] == "abc-123"


def test_unsafe_request_id_is_replaced(api_client):
    response = api_client.get("/api/v1/markets", HTTP_X_REQUEST_ID="<script>")
    assert response["X-Request-ID"] != "<script>"
    assert re.match(r"^[0-9a-f]{32}$", response["X-Request-ID"])


def test_unknown_route_is_enveloped_not_found(api_client):
    response = api_client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "not_found"
    assert body["meta"]["request_id"]


def test_bad_token_is_not_authenticated(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    response = api_client.get("/api/v1/markets")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_validation_error_has_field_details(api_client):
    response = api_client.post("/api/v1/auth/token", {"username": "x"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "validation_error"
    assert "password" in body["error"]["details"]


def test_malformed_json_is_validation_error(api_client):
    response = api_client.post("/api/v1/auth/token", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_wrong_method_is_method_not_allowed(api_client):
    response = api_client.delete("/api/v1/markets")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_schema_and_docs_are_served(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    spec = schema.json()
    ok = spec["paths"]["/api/v1/markets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(ok["required"]) == {"success", "data", "meta"}
    docs = api_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
