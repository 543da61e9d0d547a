"""gunicorn settings shared by the web and wallet processes (sync workers: lowest p99 here)."""

import os

workers = int(os.environ.get("WEB_WORKERS", "3"))
worker_class = "sync"
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = os.environ.get("ACCESS_LOG") or None
max_requests = 0
