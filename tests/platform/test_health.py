import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_healthz_and_readyz_up(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "ok"


def _readyz_with(env_overrides: dict) -> tuple[int, dict]:
    script = (
        "import json, django; django.setup();"
        "from django.test import Client;"
        "r = Client().get('/readyz');"
        "print(json.dumps({'status': r.status_code, 'body': r.json()}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "exchange.settings_test", **env_overrides}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["status"], result["body"]


def test_readyz_names_redis_when_it_is_down():
    status, body = _readyz_with({"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert status == 503
    assert body["checks"]["redis"].startswith("down")


def test_readyz_names_database_when_it_is_down():
    status, body = _readyz_with({"DATABASE_URL": "postgres://postgres@127.0.0.1:1/nothing"})
    assert status == 503
    assert body["checks"]["database"].startswith("down")
