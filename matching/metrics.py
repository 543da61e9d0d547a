"""Prometheus metrics of the engine process (served on its own port, ENGINE_METRICS_PORT)."""

from prometheus_client import Counter, Gauge, Histogram

COMMANDS = Counter("engine_commands_total", "Commands applied", ["symbol", "kind"])
MALFORMED = Counter("engine_malformed_commands_total", "Malformed or unknown commands acked and dropped", ["symbol"])
DEAD_LETTERS = Counter("engine_dead_letters_total", "Commands dead-lettered after too many deliveries", ["symbol"])
TRADES = Counter("engine_trades_total", "Trades committed", ["symbol"])
BATCH_SIZE = Histogram("engine_batch_commands", "Commands per batch", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
COMMIT_SECONDS = Histogram(
    "engine_batch_commit_seconds", "Batch transaction latency", buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1)
)
STREAM_LAG = Gauge("engine_stream_lag", "Entries waiting in the command stream", ["symbol"])
REBUILD_SECONDS = Gauge("engine_rebuild_seconds", "Time the last book rebuild took", ["symbol"])
OWNED = Gauge("engine_owned_symbol", "1 while this process owns the symbol", ["symbol"])
