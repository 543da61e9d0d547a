"""End-to-end benchmark: the whole exchange under load, next to the bare framework.

    python -m exchange.bench [--duration S] [--rate R] [--step] [--profile]

`stack` starts the processes `make run` starts (on free ports, a fresh database,
a private Redis); `load` is the HTTP load generator (asyncio, raw HTTP/1.1,
pre-built requests, pre-issued JWTs); `workload` builds the order mix; `views`
and `urls` hold the bare anchor endpoint (served with `exchange.bench.settings`);
`__main__` runs the phases and prints the table and the JSON.
"""
