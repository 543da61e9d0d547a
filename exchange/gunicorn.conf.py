"""gunicorn settings shared by the web and wallet processes (sync workers: lowest p99 here)."""

import os
import shutil
import tempfile

workers = int(os.environ.get("WEB_WORKERS", "3"))
worker_class = "sync"
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = os.environ.get("ACCESS_LOG") or None
max_requests = 0

# /metrics must add up every worker's counters: prometheus_client's multiprocess
# mode, one directory per server (set before any worker imports the client).
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir = tempfile.mkdtemp(prefix="exchange-metrics-")
else:
    _own_metrics_dir = None


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
