import pytest

pytestmark = pytest.mark.django_db


def _login(api_client, username, password):
    return api_client.post("/api/v1/auth/token", {"username": username, "password": password}, format="json")


def test_obtain_token(api_client, make_user):
    make_user("alice", password="secret-pass-1")
    response = _login(api_client, "alice", "secret-pass-1")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["access"] and data["refresh"]


def test_wrong_credentials_are_not_authenticated(api_client, make_user):
    make_user("bob", password="secret-pass-1")
    response = _login(api_client, "bob", "wrong")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_refresh_rotates_and_old_refresh_is_refused(api_client, make_user):
    make_user("carol", password="secret-pass-1")
    first = _login(api_client, "carol", "secret-pass-1").json()["data"]
    rotated = api_client.post("/api/v1/auth/token/refresh", {"refresh": first["refresh"]}, format="json")
    assert rotated.status_code == 200
    new = rotated.json()["data"]
    assert new["access"] and new["refresh"] and new["refresh"] != first["refresh"]
    again = api_client.post("/api/v1/auth/token/refresh", {"refresh": first["refresh"]}, format="json")
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "not_authenticated"


def test_inactive_user_cannot_log_in(api_client, make_user):
    make_user("dave", password="secret-pass-1", is_active=False)
    assert _login(api_client, "dave", "secret-pass-1").status_code == 401



def test_a_deactivated_account_is_refused_at_once(auth_client):
    client = auth_client()
    assert client.get("/api/v1/orders").status_code == 200
    type(client.user).objects.filter(pk=client.user.pk).update(is_active=False)
    response = client.get("/api/v1/orders")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_deleted_account_is_refused(auth_client):
    client = auth_client()
    type(client.user).objects.filter(pk=client.user.pk).delete()
    assert client.get("/api/v1/orders").status_code == 401


def test_a_token_accepted_before_is_refused_once_it_expires(auth_client, monkeypatch):
    from datetime import timedelta

    from rest_framework_simplejwt.utils import aware_utcnow

    from exchange.api import authentication

    client = auth_client()
    assert client.get("/api/v1/orders").status_code == 200  # validated, then remembered
    later = aware_utcnow() + timedelta(days=1)
    monkeypatch.setattr(authentication, "aware_utcnow", lambda: later)
    monkeypatch.setattr("rest_framework_simplejwt.tokens.aware_utcnow", lambda: later)
    response = client.get("/api/v1/orders")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_tampered_token_is_refused_after_its_original_was_accepted(auth_client):
    client = auth_client()
    assert client.get("/api/v1/orders").status_code == 200
    token = client._credentials["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert client.get("/api/v1/orders").status_code == 401
