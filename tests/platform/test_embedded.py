"""The embedded servers: started once, shared, even when processes start together."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = (
    "import json; from exchange import embedded;"
    "db = embedded.postgres_settings(); url = embedded.redis_url();"
    "import psycopg, redis;"
    "pid = psycopg.connect(host=db['HOST'], user='postgres', dbname=db['NAME']).execute('select pg_postmaster_start_time()::text').fetchone()[0];"
    "redis_pid = redis.Redis.from_url(url).info('server')['process_id'];"
    "print(json.dumps({'host': db['HOST'], 'pg_started': pid, 'redis': url, 'redis_pid': redis_pid}))"
)


@pytest.mark.embedded
def test_three_processes_starting_together_share_one_server_each(tmp_path):
    var_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["EXCHANGE_VAR_DIR"] = str(var_dir)
    procs = [
        subprocess.Popen([sys.executable, "-c", PROBE], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        assert len({r["host"] for r in results}) == 1
        assert len({r["pg_started"] for r in results}) == 1, "more than one PostgreSQL was started"
        assert len({r["redis"] for r in results}) == 1
        assert len({r["redis_pid"] for r in results}) == 1, "more than one Redis was started"
        # A later process finds the same servers running.
        again = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert json.loads(again.stdout.strip().splitlines()[-1])["redis_pid"] == results[0]["redis_pid"]
    finally:
        subprocess.run([sys.executable, "-m", "exchange.embedded", "stop"], cwd=ROOT, env=env, timeout=60)
