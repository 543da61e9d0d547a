"""Throughput, latency and memory benchmark of the matching core.

    python -m matching.bench [--commands N] [--seed S] [--resting M]

Phase 1 replays a seeded workload through one book: ~60% limit orders that rest
1 + Exp(mean 6) ticks away from a randomly walking fair value, ~25% limit orders that
cross 0-3 ticks through the touch, ~10% cancels of live resting orders and ~5% market
orders no larger than the opposite side. The workload is generated (by running it
once through a scratch book, so cancels always hit live orders and market sizes fit)
and every Order object is built before timing starts; the timed loop only calls
``place``/``cancel``, and every event, each trade included, is materialised as usual.
The replay runs ``--repeat`` times on fresh books and fresh orders; the fastest is
reported (with every replay's rate).
One command in ``--sample-every`` is timed on its own for the latency percentiles, and
``take_touched()`` is called once per ``--batch`` commands, as the engine does per batch.
Order sizes: resting 1-10 lots, crossing 1-30 lots, market 1-30 lots (capped by the
opposite side); 1,000 owners, default self-trade prevention, non-zero fees.

Phase 2 loads ``--resting`` non-crossing orders into a fresh book under tracemalloc
and reports the bytes held per resting order: the Order objects themselves (with
their int fields), the levels, the deques and the id index.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sys
import time
import tracemalloc

from matching.core import (
    ACCEPTED,
    BUY,
    CANCELLED,
    EXPIRED,
    LIMIT,
    MARKET,
    SELL,
    TRADE,
    Order,
    OrderBook,
)

FAIR_START = 1_000_000  # ticks
OWNERS = 1_000


def generate(n: int, seed: int) -> tuple[list[tuple], int, int]:
    """Return ``(specs, trades, final_seq)`` for ``n`` commands.

    A spec is ``("cancel", order_id)`` or ``("place", id, owner, side, kind, price, qty)``.
    Each command is applied to a scratch book as it is generated: the generator needs
    the live book to aim crossing orders at the touch, to cancel only live orders and
    to size market orders, and it counts the trades the timed run must reproduce.
    """
    rng = random.Random(seed)
    rand = rng.random
    book = OrderBook(maker_fee=10, taker_fee=20, fee_scale=10_000)
    specs: list[tuple] = []
    live: list[int] = []  # resting order ids, swap-removed through pos
    pos: dict[int, int] = {}
    side_lots = [0, 0]
    fair = FAIR_START
    next_id = 1
    trades = 0

    def forget(order_id: int) -> None:
        i = pos.pop(order_id)
        last = live.pop()
        if last != order_id:
            live[i] = last
            pos[last] = i

    for _ in range(n):
        # Fair value: a lazy random walk of one tick.
        step = rand()
        if step < 0.1:
            fair -= 1
        elif step > 0.9:
            fair += 1
        r = rand()
        side = BUY if rand() < 0.5 else SELL
        if 0.85 <= r < 0.95 and live:
            victim = live[int(rand() * len(live))]
            spec = ("cancel", victim)
        else:
            bid, ask = book.best_bid(), book.best_ask()
            if r >= 0.95 and side_lots[SELL if side == BUY else BUY] > 0:
                opposite = side_lots[SELL if side == BUY else BUY]
                qty = min(rng.randint(1, 30), opposite)
                spec = ("place", next_id, rng.randrange(OWNERS), side, MARKET, None, qty)
            elif 0.60 <= r < 0.85:
                k = rng.randint(0, 3)
                if side == BUY:
                    price = (ask if ask is not None else fair) + k
                else:
                    price = max(1, (bid if bid is not None else fair) - k)
                qty = rng.randint(1, 30)
                spec = ("place", next_id, rng.randrange(OWNERS), side, LIMIT, price, qty)
            else:
                dist = 1 + int(rng.expovariate(1 / 6))
                if side == BUY:
                    price = fair - dist
                    if ask is not None and price >= ask:
                        price = ask - 1
                else:
                    price = fair + dist
                    if bid is not None and price <= bid:
                        price = bid + 1
                qty = rng.randint(1, 10)
                spec = ("place", next_id, rng.randrange(OWNERS), side, LIMIT, max(1, price), qty)
            next_id += 1
        specs.append(spec)
        if spec[0] == "cancel":
            events = book.cancel(spec[1])
        else:
            events = book.place(_order(spec))
        for ev in events:
            kind = ev[0]
            if kind is TRADE:
                trades += 1
                maker = ev[2]
                side_lots[maker.side] -= ev[5]
                if maker.remaining == 0:
                    forget(maker.id)
                continue
            o = ev[2]
            if kind is ACCEPTED:
                side_lots[o.side] += o.remaining
                pos[o.id] = len(live)
                live.append(o.id)
            elif kind is CANCELLED or (kind is EXPIRED and o.id in pos):
                side_lots[o.side] -= o.remaining
                forget(o.id)
    return specs, trades, book.seq


def _order(spec: tuple) -> Order:
    _, oid, owner, side, kind, price, qty = spec
    return Order(oid, owner, side, kind, price=price, quantity=qty)


def replay(specs: list[tuple], expected_seq: int, sample_every: int, batch: int) -> dict:
    """Time one replay of ``specs`` through a fresh book; return its measurements."""
    book = OrderBook(maker_fee=10, taker_fee=20, fee_scale=10_000)
    place, cancel = book.place, book.cancel
    # Commands as (bound method, argument), as a service would dispatch them, grouped
    # so the timed loop can time one command per group without a per-command counter.
    commands = [(cancel, s[1]) if s[0] == "cancel" else (place, _order(s)) for s in specs]
    groups = []
    for start in range(0, len(commands), sample_every):
        group = commands[start : start + sample_every]
        groups.append((group[:-1], group[-1]))
    del commands
    latencies = []
    clock = time.perf_counter_ns
    take_touched = book.take_touched
    groups_per_batch = max(1, batch // sample_every)
    # Everything built so far lives for the whole run: keep the cyclic GC from
    # re-scanning it (as a long-running engine process would after loading).
    gc.collect()
    gc.freeze()
    cpu_started = time.thread_time()
    started = clock()
    for number, (group, (probe, probe_arg)) in enumerate(groups):
        for command, arg in group:
            command(arg)
        t0 = clock()
        probe(probe_arg)
        latencies.append(clock() - t0)
        if number % groups_per_batch == 0:
            # The engine publishes the changed levels once per batch.
            take_touched()
    elapsed = (clock() - started) / 1e9
    cpu = time.thread_time() - cpu_started
    gc.unfreeze()
    if book.seq != expected_seq:
        raise RuntimeError(f"replay diverged: seq {book.seq} != {expected_seq}")
    latencies.sort()
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "p50_us": round(latencies[len(latencies) // 2] / 1000, 2),
        "p99_us": round(latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] / 1000, 2),
        "resting_orders_at_end": len(book),
        "book_levels_at_end": sum(map(len, book.depth(10**9))),
    }


def run_workload(n: int, seed: int, sample_every: int, batch: int, repeat: int) -> dict:
    """Generate the workload once and replay it ``repeat`` times; report the fastest.

    On a shared machine other processes steal time from some runs; the best of a few
    replays is the usual way to measure the code rather than the neighbours. Every
    replay's rate is listed too.
    """
    specs, trades, expected_seq = generate(n, seed)
    runs = [replay(specs, expected_seq, sample_every, batch) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["seconds"])
    elapsed, cpu = best["seconds"], best["cpu_seconds"]
    return {
        "commands": n,
        "seed": seed,
        "repeats": repeat,
        "seconds": round(elapsed, 3),
        "commands_per_sec": round(n / elapsed),
        "trades_per_sec": round(trades / elapsed),
        "trades": trades,
        "trades_per_command": round(trades / n, 3),
        "p50_us": best["p50_us"],
        "p99_us": best["p99_us"],
        # The same replay in this thread's CPU time: wall time also counts the time
        # other processes held the CPU.
        "cpu_seconds": round(cpu, 3),
        "cpu_commands_per_sec": round(n / cpu) if cpu else None,
        "all_commands_per_sec": [round(n / r["seconds"]) for r in runs],
        "resting_orders_at_end": best["resting_orders_at_end"],
        "book_levels_at_end": best["book_levels_at_end"],
    }


def resting_memory(m: int, seed: int) -> float:
    """Bytes traced per resting order after loading ``m`` non-crossing orders."""
    rng = random.Random(seed)
    specs = []
    for oid in range(1, m + 1):
        side = BUY if rng.random() < 0.5 else SELL
        dist = 1 + int(rng.expovariate(1 / 6))
        price = FAIR_START - dist if side == BUY else FAIR_START + dist
        specs.append((oid, rng.randrange(OWNERS), side, price, rng.randint(1, 1000)))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    book = OrderBook()
    place = book.place
    for oid, owner, side, price, qty in specs:
        # "+ 0" makes fresh int objects inside the traced region, as parsing a
        # command would, so their memory is counted too.
        place(Order(oid + 0, owner, side, LIMIT, price=price + 0, quantity=qty + 0))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    if len(book) != m:
        raise RuntimeError("phase 2 orders did not all rest")
    return (after - before) / m


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--resting", type=int, default=1_000_000)
    parser.add_argument("--sample-every", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256, help="commands per take_touched()")
    parser.add_argument("--repeat", type=int, default=3, help="timed replays; the best is reported")
    args = parser.parse_args(argv)
    result = run_workload(
        args.commands, args.seed, max(1, args.sample_every), max(1, args.batch), max(1, args.repeat)
    )
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["resting_loaded"] = args.resting
    result["bytes_per_resting_order"] = round(resting_memory(args.resting, args.seed), 1)
    result["python"] = sys.version.split()[0]
    # Which build: an optimised one (PGO + LTO) runs this loop a few percent faster.
    result["interpreter"] = os.path.realpath(sys.executable)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
