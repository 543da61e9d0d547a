"""`python -m exchange.bench`: the whole exchange under load, next to the bare framework.

Phases of the default run (under 5 minutes on a 2-core machine):

 1. stack: a fresh database `bench_<pid>` (migrated), a private Redis, and the
    processes of `make run` with production settings on free ports; two markets;
    `--traders` traders with pre-issued JWTs, funded by deposits at the wallet.
 2. warm-up: the order mix at a third of the rate, at most 50/s (not measured).
 3. sustained: the order mix at a fixed arrival rate (`--rate` placements per
    second, plus cancels and reads) for `--duration` seconds; then until no order
    is pending and the outbox is empty (bounded), for the settlement lag.
 4. anchor: `--rounds` alternating slices of (a) a constant-JSON DRF endpoint on
    the same gunicorn settings and (b) order placements, each driven back to back
    by `--concurrency` clients of the same load generator. `ratio_to_bare` =
    placements/s ÷ bare requests/s; alternating makes a drifting background load
    (other work on the box) weigh on both alike.
 5. the invariants (`exchange.invariants.check_all(quiescent=True)`).

`--step` replaces 3 and 4 by the bare endpoint alone, then a step test: the
rate rises by `--step-increment` every `--step-seconds` until the p99 of
POST /api/v1/orders passes 50 ms; the knee is the last step under it, and
`ratio_to_bare` is the knee's orders/s over the bare endpoint's requests/s.

Prints a table (progress goes to stderr), then one JSON object as the last line.
Exit status: 0, or 1 when an invariant breaks, or 2 when the bench itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from exchange.bench.load import Driver, HttpClient, Op, Recorder
from exchange.bench.probes import CpuMeter, Profiler, machine, top_functions
from exchange.bench.stack import Stack
from exchange.bench.workload import (
    BARE,
    CANCEL,
    FUNDING,
    PLACE,
    PLACE_SHARE,
    READ_BOOK,
    READ_TICKER,
    READ_TRADES,
    Trader,
    Workload,
)
from exchange.processes import ROOT

P99_LIMIT_MS = 50.0
TARGETS = {"orders_per_sec": 350, "p99_ms": 50, "settlement_lag_p99_ms": 2000, "ratio_to_bare": 0.12}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m exchange.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60, help="seconds of sustained load (a soak: 600)")
    p.add_argument("--rate", type=float, default=350, help="placements offered per second (cancels and reads come on top)")
    p.add_argument("--step", action="store_true", help="step test: raise the rate until p99 passes 50 ms")
    p.add_argument("--step-start", type=float, default=25, help="placements/s of the first step")
    p.add_argument("--step-increment", type=float, default=25)
    p.add_argument("--step-seconds", type=float, default=15)
    p.add_argument("--step-max", type=float, default=3000)
    p.add_argument("--traders", type=int, default=200)
    p.add_argument("--web-workers", type=int, default=3, help="gunicorn workers of web, wallet and bare (make run: 3)")
    p.add_argument("--concurrency", type=int, default=12, help="clients of the closed-loop phases (bare, capacity)")
    p.add_argument("--bare-seconds", type=float, default=20, help="seconds of the bare endpoint (over all rounds)")
    p.add_argument("--capacity-seconds", type=float, default=20,
                   help="seconds of order capacity (over all rounds; 0: measure the bare endpoint only)")
    p.add_argument("--rounds", type=int, default=4, help="alternating bare/capacity slices of the anchor phase")
    p.add_argument("--warmup", type=float, default=5, help="seconds of unmeasured load first")
    p.add_argument("--drain-timeout", type=float, default=60, help="most seconds to wait for the outbox to drain")
    p.add_argument("--max-inflight", type=int, default=256,
                   help="open-loop cap on requests in flight (due requests beyond it are skipped and counted)")
    p.add_argument("--timeout", type=float, default=10, help="seconds a request may take before the client gives up")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", nargs="?", const="cpu", choices=["cpu", "wall"], default=None,
                   help="py-spy the web, wallet, engine and worker during the sustained phase: "
                   "cpu (samples holding the GIL, the default) or wall (waits included)")
    p.add_argument("--profile-phase", choices=["sustained", "capacity"], default="sustained",
                   help="the phase --profile samples (capacity: placements only, at saturation)")
    p.add_argument("--settings", default="exchange.settings",
                   help="settings module of every process (experiments; the bare endpoint adds its URL to it)")
    p.add_argument("--redis-url", default=None, help="use this Redis instead of a private redis-server")
    p.add_argument("--keep-db", action="store_true", help="do not drop the bench database")
    p.add_argument("--log-dir", default=None, help="process logs (default var/bench/<time>-<pid>)")
    return p.parse_args(argv)


# --- setup --------------------------------------------------------------------------------


def make_traders(stack: Stack, count: int) -> list[Trader]:
    """Users with pre-issued access tokens, funded through the wallet service's deposits."""
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from rest_framework_simplejwt.tokens import AccessToken

    from settlement.clients.wallet import owner_for_user, wallet_client

    User = get_user_model()
    unusable = make_password(None)
    users = User.objects.bulk_create([User(username=f"bench-{i}", password=unusable) for i in range(count)])
    traders = [Trader(user_id=u.pk, token=str(AccessToken.for_user(u))) for u in users]
    client = wallet_client()

    def fund(trader: Trader) -> None:
        for asset, amount in FUNDING.items():
            client.deposit(key=f"bench-funding:{trader.user_id}:{asset}", owner=owner_for_user(trader.user_id),
                           asset=asset, amount=Decimal(amount))  # fmt: skip

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(fund, traders))
    return traders


def check_login(stack: Stack) -> None:
    """The token endpoint works (the load itself uses pre-issued tokens)."""
    import urllib.request

    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user(username="bench-login", password="bench-login-password")
    request = urllib.request.Request(
        f"{stack.web_url}/api/v1/auth/token",
        data=json.dumps({"username": "bench-login", "password": "bench-login-password"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    assert body["success"] and body["data"]["access"], body


# --- database figures ----------------------------------------------------------------------


def quiescent_state() -> dict:
    """What is still in flight: pending orders, cancels not applied, outbox rows not done."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE status = 'pending'), "
            "count(*) FILTER (WHERE cancel_requested_at IS NOT NULL AND status IN ('pending','untriggered','open','partially_filled')) "
            "FROM orders_order"
        )
        pending, cancelling = cursor.fetchone()
        cursor.execute("SELECT status, count(*) FROM settlement_settlement WHERE status <> 'settled' GROUP BY status")
        settlements = dict(cursor.fetchall())
        cursor.execute("SELECT status, count(*) FROM settlement_holdrelease WHERE status <> 'done' GROUP BY status")
        releases = dict(cursor.fetchall())
    return {"pending_orders": pending, "cancels_in_flight": cancelling, "settlements": settlements, "releases": releases}


def wait_quiescent(timeout: float) -> tuple[bool, float, dict]:
    started = time.monotonic()
    while True:
        state = quiescent_state()
        busy = state["pending_orders"] or state["cancels_in_flight"] or state["settlements"].get("pending") or state["releases"].get("pending")
        if not busy:
            return not (state["settlements"] or state["releases"]), time.monotonic() - started, state
        if time.monotonic() - started > timeout:
            return False, time.monotonic() - started, state
        time.sleep(0.5)


def window_figures(since: datetime, until: datetime) -> dict:
    """What the server did in [since, until): orders created (whether or not their client
    waited for the answer), trades committed, and the trades' settlement lag
    (trade created_at -> settled_at; one not settled yet counts with its lag so far)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders_order WHERE created_at >= %s AND created_at < %s", [since, until])
        (orders,) = cursor.fetchone()
        cursor.execute(
            """
            WITH lags AS (
                SELECT s.settled_at IS NOT NULL AS settled,
                       extract(epoch FROM coalesce(s.settled_at, now()) - t.created_at) * 1000 AS lag_ms
                  FROM orders_trade t LEFT JOIN settlement_settlement s ON s.trade_id = t.id
                 WHERE t.created_at >= %s AND t.created_at < %s
            )
            SELECT count(*), count(*) FILTER (WHERE settled),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms),
                   max(lag_ms)
              FROM lags
            """,
            [since, until],
        )
        trades, settled, p50, p99, worst = cursor.fetchone()
    seconds = max((until - since).total_seconds(), 1e-9)
    return {
        "server_orders": orders,
        "server_orders_per_sec": round(orders / seconds, 1),
        "trades": trades,
        "trades_per_sec": round(trades / seconds, 1),
        "settled": settled,
        "settlement_lag_p50_ms": _round(p50),
        "settlement_lag_p99_ms": _round(p99),
        "settlement_lag_max_ms": _round(worst),
    }


def _round(value, digits: int = 1):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, digits)


def run_invariants() -> dict:
    from exchange.invariants import check_all

    report = check_all(quiescent=True)
    return {
        "ok": report.ok,
        "summary": report.summary(),
        "examples": {name: found[:5] for name, found in report.violations.items() if found},
    }


# --- phases -----------------------------------------------------------------------------------


def phase_summary(rec: Recorder, offered_orders: float | None = None) -> dict:
    kinds = [PLACE, CANCEL, READ_BOOK, READ_TICKER, READ_TRADES, BARE]
    latency = {kind: rec.stats(kind).as_dict() for kind in kinds if rec.count(kind)}
    answers: dict[str, int] = {}
    for (kind, status, code), n in sorted(rec.answers.items(), key=lambda item: (item[0][0], item[0][1], item[0][2])):
        answers[f"{kind} {status}{' ' + code if code else ''}"] = n
    out = {
        "seconds": round(rec.elapsed, 2),
        "requests_per_sec": round(sum(rec.answers.values()) / rec.elapsed, 1),
        "orders_per_sec": round(rec.accepted_orders / rec.elapsed, 1),
        "accepted_orders": rec.accepted_orders,
        "latency_ms": latency,
        "answers": answers,
        "http_5xx": rec.server_errors(),
        "no_answer": rec.failures(),
        "generator_skipped": rec.skipped,
        "generator_max_lag_ms": round(rec.max_lag * 1000, 1),
    }
    if offered_orders is not None:
        out["offered_orders_per_sec"] = offered_orders
    return out


def cpu_per_order(cpu: dict, orders: int) -> dict:
    """CPU of each process role per order the server created in the phase."""
    per = {role: round(1000 * seconds / orders, 2) for role, seconds in sorted(cpu["by_role_seconds"].items())} if orders else {}
    return {
        "ms_per_order": per,
        "ms_per_order_total": round(sum(per.values()), 2) if per else None,
        "machine_busy_pct": round(100 * cpu["machine_busy_seconds"] / max(cpu["machine_seconds"], 1e-9), 1),
        "others_busy_seconds": round(cpu["others_seconds"], 1),
    }


class Phases:
    """Runs measured phases: client-side figures (Recorder), server-side figures (the
    database, over the same window), CPU per role (CpuMeter)."""

    def __init__(self, meter: CpuMeter, drain_timeout: float) -> None:
        self.meter = meter
        self.drain_timeout = drain_timeout
        self.other_cpu: dict | None = None  # CPU of the unmeasured slices of `run_slices`

    async def run(self, drive, *, offered: float | None = None, drain: bool = True) -> dict:
        from django.utils import timezone

        rec = Recorder()
        since = timezone.now()
        self.meter.start()
        await drive(rec)
        cpu = self.meter.stop()
        until = timezone.now()
        summary = phase_summary(rec, offered)
        if drain:  # the window's trades settle (or not) before their lag is read
            ok, waited, state = await asyncio.to_thread(wait_quiescent, self.drain_timeout)
            log(f"  drained in {waited:.1f}s" if ok else f"  not drained after {waited:.0f}s: {state}")
            summary["drain_seconds"] = round(waited, 1)
            summary["drained"] = ok
        summary.update(await asyncio.to_thread(window_figures, since, until))
        summary["cpu"] = cpu_per_order(cpu, summary["server_orders"])
        summary["window"] = [since.isoformat(), until.isoformat()]
        return summary

    async def run_slices(self, others, slices, rec: Recorder) -> dict:
        """Measured slices (`slices`, each after one of `others`, which are not measured
        here): client figures accumulate in `rec`, CPU only over the slices, server figures
        over the whole span (nothing else creates orders meanwhile) per slice second."""
        from django.utils import timezone

        def add(totals: dict, cpu: dict) -> None:
            for role, seconds in cpu["by_role_seconds"].items():
                totals["by_role_seconds"][role] = totals["by_role_seconds"].get(role, 0.0) + seconds
            for key in ("machine_busy_seconds", "machine_seconds", "others_seconds"):
                totals[key] += cpu[key]

        since = timezone.now()
        zero = {"by_role_seconds": {}, "machine_busy_seconds": 0.0, "machine_seconds": 0.0, "others_seconds": 0.0}
        totals, other_totals = dict(zero, by_role_seconds={}), dict(zero, by_role_seconds={})
        for other, measured in zip(others, slices, strict=True):
            self.meter.start()
            await other()
            add(other_totals, self.meter.stop())
            self.meter.start()
            await measured()
            add(totals, self.meter.stop())
        until = timezone.now()
        self.other_cpu = other_totals
        summary = phase_summary(rec)
        ok, waited, state = await asyncio.to_thread(wait_quiescent, self.drain_timeout)
        log(f"  drained in {waited:.1f}s" if ok else f"  not drained after {waited:.0f}s: {state}")
        summary["drain_seconds"], summary["drained"] = round(waited, 1), ok
        figures = await asyncio.to_thread(window_figures, since, until)
        span = max((until - since).total_seconds(), 1e-9)
        for key in ("server_orders_per_sec", "trades_per_sec"):  # per measured second, not per span second
            figures[key] = round(figures[key] * span / rec.elapsed, 1)
        summary.update(figures)
        summary["cpu"] = cpu_per_order(totals, summary["server_orders"])
        summary["window"] = [since.isoformat(), until.isoformat()]
        return summary


async def run_load(args, stack: Stack, traders: list[Trader], result: dict) -> None:
    host, port = "127.0.0.1", int(stack.web_url.rsplit(":", 1)[1])
    web = HttpClient(host, port, timeout=args.timeout)
    work = Workload(web, traders, seed=args.seed, ring=min(50_000, max(5_000, int(args.rate * args.duration * 1.1))))
    driver = Driver(web, max_inflight=args.max_inflight)
    healthz = web.get("/healthz")

    async def settle(phase: str) -> None:
        waited = await driver.settle(healthz)
        ok, drained, state = await asyncio.to_thread(wait_quiescent, args.drain_timeout)
        log(f"  settled after {phase}: web queue {waited:.1f}s, outbox {drained:.1f}s" + ("" if ok else f" (NOT drained: {state})"))

    if args.warmup > 0:
        warm_rate = min(args.rate / 3, 50)
        log(f"warm-up: {args.warmup:.0f}s at {warm_rate:.0f} orders/s")
        await driver.open_loop(work.next_mixed, warm_rate / PLACE_SHARE, args.warmup, Recorder())
        await settle("warm-up")

    # -- the anchor: the same gunicorn settings and generator; idle while not driven
    from exchange.bench.urls import BARE_PATH

    bare_client = HttpClient(host, int(stack.bare_url.rsplit(":", 1)[1]), timeout=args.timeout)
    bare_op = Op(BARE, bare_client.get(BARE_PATH))
    bare_driver = Driver(bare_client)
    await bare_driver.closed_loop(lambda: bare_op, args.concurrency, 1.0, Recorder())  # every worker warm
    bare = Recorder()

    def bare_slice(seconds: float):
        return bare_driver.closed_loop(lambda: bare_op, args.concurrency, seconds, bare, slice_of=True)

    groups = {role: proc.pid for role, proc in stack.procs.items()}
    if stack.redis is not None and stack.redis.proc is not None:
        groups["redis"] = stack.redis.proc.pid
    phases = Phases(CpuMeter(groups, stack.database.name), args.drain_timeout)

    def finish_bare() -> None:
        bare_client.close()
        stack.stop_bare()
        result["bare"] = phase_summary(bare)
        if phases.other_cpu is not None:  # what a bare request costs, whatever else ran on the box
            served = bare.count(BARE)
            cpu = phases.other_cpu
            result["bare"]["cpu"] = {
                "ms_per_request": {role: round(1000 * sec / served, 3) for role, sec in sorted(cpu["by_role_seconds"].items()) if sec > 0.005},
                "machine_busy_pct": round(100 * cpu["machine_busy_seconds"] / max(cpu["machine_seconds"], 1e-9), 1),
                "others_busy_seconds": round(cpu["others_seconds"], 1),
            }
        log(f"  bare: {result['bare']['requests_per_sec']:.0f} req/s, p99 {result['bare']['latency_ms'][BARE]['p99_ms']} ms")

    async def bare_alone(seconds: float) -> None:
        phases.meter.start()
        await bare_slice(seconds)
        phases.other_cpu = phases.meter.stop()

    if args.step:
        log(f"bare: {args.bare_seconds:.0f}s, {args.concurrency} clients back to back on {BARE_PATH}")
        await bare_alone(args.bare_seconds)
        finish_bare()
        await run_steps(args, driver, work, phases, result)
        web.close()
        return

    def start_profile(phase: str, seconds: float):
        if not args.profile or args.profile_phase != phase:
            return None
        profiler = Profiler(stack.log_dir / "profile", mode=args.profile)
        profiler.start({role: stack.procs[role].pid for role in ("web", "wallet", "engine", "worker")}, seconds)
        return profiler

    def finish_profile(profiler) -> None:
        if profiler is not None:
            files = profiler.finish()
            result["profile"] = {role: top_functions(path, leaders=args.profile == "cpu") for role, path in files.items()}
            result["profile_dir"] = str(stack.log_dir / "profile")

    total_rate = args.rate / PLACE_SHARE
    log(f"sustained: {args.duration:.0f}s at {args.rate:.0f} placements/s offered ({total_rate:.0f} requests/s with cancels and reads)")
    profiler = start_profile("sustained", args.duration)
    result["sustained"] = await phases.run(
        lambda rec: driver.open_loop(work.next_mixed, total_rate, args.duration, rec), offered=args.rate
    )
    finish_profile(profiler)
    sustained = result["sustained"]
    log(f"  sustained: {sustained['orders_per_sec']:.0f} orders/s answered 2xx ({sustained['server_orders_per_sec']:.0f}/s created), "
        f"p99 {sustained['latency_ms'].get(PLACE, {}).get('p99_ms')} ms")  # fmt: skip

    await settle("sustained")
    # Bare and order capacity in alternating slices: a background load that drifts (other
    # work on the box) weighs on both sides of the ratio alike.
    rounds = max(1, args.rounds)
    log(f"anchor: {rounds} rounds of bare ({args.bare_seconds / rounds:.1f}s on {BARE_PATH}) then orders "
        f"({args.capacity_seconds / rounds:.1f}s of placements), {args.concurrency} clients back to back")  # fmt: skip
    capacity = Recorder()
    profiler = start_profile("capacity", args.capacity_seconds + args.bare_seconds)
    if args.capacity_seconds > 0:
        result["capacity"] = await phases.run_slices(
            [lambda: bare_slice(args.bare_seconds / rounds)] * rounds,
            [lambda: driver.closed_loop(work.next_placement, args.concurrency, args.capacity_seconds / rounds, capacity, slice_of=True)] * rounds,
            capacity,
        )
    else:
        await bare_alone(args.bare_seconds)
    finish_profile(profiler)
    finish_bare()
    if args.capacity_seconds > 0:
        cap = result["capacity"]
        log(f"  capacity: {cap['orders_per_sec']:.0f} orders/s, p99 {cap['latency_ms'].get(PLACE, {}).get('p99_ms')} ms")
    web.close()


async def run_steps(args, driver: Driver, work: Workload, phases: Phases, result: dict) -> None:
    from django.utils import timezone

    steps = []
    knee = None
    rate = args.step_start
    since = timezone.now()
    log(f"step test: from {args.step_start:.0f} placements/s, +{args.step_increment:.0f} every {args.step_seconds:.0f}s, until p99 > {P99_LIMIT_MS:.0f} ms")
    while rate <= args.step_max:
        step_rate = rate
        summary = await phases.run(
            lambda rec, r=step_rate: driver.open_loop(work.next_mixed, r / PLACE_SHARE, args.step_seconds, rec),
            offered=rate, drain=False,
        )
        p99 = summary["latency_ms"].get(PLACE, {}).get("p99_ms", math.inf)
        passed = (
            p99 <= P99_LIMIT_MS
            and summary["http_5xx"] == 0
            and summary["no_answer"] == 0
            and summary["generator_skipped"] == 0
            and summary["orders_per_sec"] >= 0.95 * rate
        )
        summary["passed"] = passed
        steps.append(summary)
        log(f"  step {rate:5.0f}/s: answered {summary['orders_per_sec']:6.1f}/s  p99 {p99:7.1f} ms  "
            f"5xx {summary['http_5xx']}  machine busy {summary['cpu']['machine_busy_pct']}%  {'ok' if passed else 'past the knee'}")  # fmt: skip
        if not passed:
            break
        knee = summary
        rate += args.step_increment
    until = timezone.now()
    result["steps"] = steps
    result["knee"] = knee
    ok, waited, state = await asyncio.to_thread(wait_quiescent, args.drain_timeout)
    log(f"  drained in {waited:.1f}s" if ok else f"  not drained after {waited:.0f}s: {state}")
    result["step_trades"] = await asyncio.to_thread(window_figures, since, until)


# --- report --------------------------------------------------------------------------------------


def headline(args, result: dict) -> dict:
    """The figures that matter, first in the JSON object."""
    bare_rps = result["bare"]["requests_per_sec"]
    if args.step:
        main = result.get("knee") or {}
        orders = main.get("orders_per_sec", 0.0)
        figures = result.get("step_trades", {})
        ratio = orders / bare_rps if bare_rps else None
    else:
        main = result["sustained"]
        orders = main["orders_per_sec"]
        figures = main
        capacity = result.get("capacity", {}).get("orders_per_sec")
        ratio = (capacity / bare_rps) if (capacity and bare_rps) else None
    p99 = main.get("latency_ms", {}).get(PLACE, {}).get("p99_ms")
    lag = figures.get("settlement_lag_p99_ms")
    head = {
        "orders_per_sec": orders,
        "p99_ms": p99,
        "ratio_to_bare": round(ratio, 4) if ratio is not None else None,
        "trades_per_sec": figures.get("trades_per_sec"),
        "settlement_lag_p99_ms": lag,
        "invariants_ok": result["invariants"]["ok"],
        "bare_requests_per_sec": bare_rps,
        "server_orders_per_sec": main.get("server_orders_per_sec"),
        "delete_p99_ms": main.get("latency_ms", {}).get(CANCEL, {}).get("p99_ms"),
        "http_5xx": main.get("http_5xx"),
        "no_answer": main.get("no_answer"),
        "errors": {k: n for k, n in (main.get("answers") or {}).items() if k.split(" ")[2][0] in "045"},
        "cpu_ms_per_order": (main.get("cpu") or {}).get("ms_per_order_total"),
        "machine_busy_pct": (main.get("cpu") or {}).get("machine_busy_pct"),
        "others_busy_cpu_seconds": (main.get("cpu") or {}).get("others_busy_seconds"),
    }
    if args.step:
        head["knee_offered_orders_per_sec"] = main.get("offered_orders_per_sec")
    else:
        head["capacity_orders_per_sec"] = result.get("capacity", {}).get("orders_per_sec")
        head["sustained_ratio_to_bare"] = round(orders / bare_rps, 4) if bare_rps else None
        # The same ratio in CPU (immune to what else runs on the box): server CPU of a bare
        # request over the whole exchange's CPU per order placed (the load generator left out).
        bare_ms = ((result["bare"].get("cpu") or {}).get("ms_per_request") or {}).get("bare")
        order_ms = {k: v for k, v in ((result.get("capacity") or {}).get("cpu") or {}).get("ms_per_order", {}).items() if k != "loadgen"}
        head["bare_cpu_ms_per_request"] = bare_ms
        head["capacity_cpu_ms_per_order"] = round(sum(order_ms.values()), 2) if order_ms else None
        head["cpu_ratio_to_bare"] = round(bare_ms / sum(order_ms.values()), 4) if bare_ms and order_ms else None
    head["targets_met"] = {
        "orders_per_sec>=350": orders >= TARGETS["orders_per_sec"],
        "p99_ms<=50": p99 is not None and p99 <= TARGETS["p99_ms"],
        "settlement_lag_p99_ms<=2000": lag is not None and lag <= TARGETS["settlement_lag_p99_ms"],
        "zero_5xx": not main.get("http_5xx"),
        "ratio_to_bare>=0.12": head["ratio_to_bare"] is not None and head["ratio_to_bare"] >= TARGETS["ratio_to_bare"],
        "invariants_ok": result["invariants"]["ok"],
    }
    return head


PROJECT_CODE = ("orders/", "matching/", "settlement/", "wallet/", "exchange/", "marketdata/")


def print_table(args, result: dict, head: dict) -> None:
    m = result["machine"]
    bare = result["bare"]
    out = [
        "",
        f"exchange bench: {m['nproc']} × {m['cpu']}, Python {m['python']}, load average at start {m['loadavg']}",
        f"bare DRF endpoint: {bare['requests_per_sec']:.0f} req/s, p50 {bare['latency_ms'][BARE]['p50_ms']} ms, "
        f"p99 {bare['latency_ms'][BARE]['p99_ms']} ms ({args.concurrency} clients back to back, {args.web_workers} sync workers)"
        + ("; CPU ms per request: " + ", ".join(f"{r} {ms}" for r, ms in bare["cpu"]["ms_per_request"].items()) if bare.get("cpu") else ""),
    ]
    if args.step:
        phases = [(f"step {s['offered_orders_per_sec']:.0f}/s", s) for s in result.get("steps", [])]
    else:
        phases = [("sustained", result["sustained"])] + ([("capacity", result["capacity"])] if result.get("capacity") else [])
    for name, phase in phases:
        offered = phase.get("offered_orders_per_sec")
        out += [
            "",
            f"{name}: {phase['seconds']:.0f}s, {phase['requests_per_sec']:.0f} req/s answered; orders: "
            + (f"offered {offered:.0f}/s, " if offered else "")
            + f"answered 2xx {phase['orders_per_sec']:.1f}/s, created {phase['server_orders_per_sec']}/s; trades {phase['trades_per_sec']}/s",
            f"  {'request':<16}{'n':>8}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  ms",
        ]
        for kind, st in phase["latency_ms"].items():
            out.append(f"  {kind:<16}{st['n']:>8}{st['p50_ms']:>9.1f}{st['p95_ms']:>9.1f}{st['p99_ms']:>9.1f}{st['max_ms']:>9.1f}")
        out.append("  answers (status code): " + ", ".join(f"{k} ×{n}" for k, n in phase["answers"].items()))
        if phase.get("generator_skipped") or phase.get("generator_max_lag_ms", 0) > 20:
            out.append(f"  generator: {phase['generator_skipped']} due requests skipped (in-flight cap {args.max_inflight}), "
                       f"max start lag {phase['generator_max_lag_ms']} ms")  # fmt: skip
        out.append(f"  settlement lag p50 {phase['settlement_lag_p50_ms']} ms, p99 {phase['settlement_lag_p99_ms']} ms, "
                   f"max {phase['settlement_lag_max_ms']} ms ({phase['settled']}/{phase['trades']} settled)")  # fmt: skip
        cpu = phase["cpu"]
        if cpu["ms_per_order"]:
            parts = ", ".join(f"{role} {ms}" for role, ms in cpu["ms_per_order"].items())
            out.append(f"  CPU ms per order created: {parts}; total {cpu['ms_per_order_total']}")
        out.append(f"  machine {cpu['machine_busy_pct']}% busy; {cpu['others_busy_seconds']} CPU-s by processes not of this bench")
    if args.step:
        knee, trades = result.get("knee"), result.get("step_trades", {})
        out.append("")
        out.append(f"knee: {knee['offered_orders_per_sec']:.0f} placements/s offered, {knee['orders_per_sec']}/s answered, p99 ≤ {P99_LIMIT_MS:.0f} ms"
                   if knee else "knee: none (the first step already failed)")  # fmt: skip
        out.append(f"over the test: trades {trades.get('trades_per_sec')}/s, settlement lag p99 {trades.get('settlement_lag_p99_ms')} ms")
    for role, prof in (result.get("profile") or {}).items():
        out += ["", f"profile {role} ({args.profile}, {prof['samples']} samples), self %:"]
        out += [f"  {pct:5.1f}%  {name}" for name, pct in prof["self"][:12]]
        out.append(f"profile {role}, inclusive % (project code):")
        out += [f"  {pct:5.1f}%  {name}" for name, pct in [x for x in prof["inclusive"] if x[0].startswith(PROJECT_CODE)][:12]]
    inv = result["invariants"]
    out += [
        "",
        "invariants: " + ("all hold" if inv["ok"] else "BROKEN " + json.dumps(inv["examples"])),
        f"ratio to bare: {head['ratio_to_bare']} (in CPU: {head.get('cpu_ratio_to_bare')}); targets: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in head["targets_met"].items()),
    ]
    print("\n".join(out), flush=True)


def _interrupt(*_):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    log_dir = Path(args.log_dir) if args.log_dir else ROOT / "var" / "bench" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    result: dict = {"machine": machine(), "args": {k: v for k, v in vars(args).items()}}
    jwt_seconds = int(max(3600, 2 * (args.duration + args.warmup + args.capacity_seconds) + 900 + (3600 if args.step else 0)))
    status = 2
    with Stack(log_dir=log_dir, web_workers=args.web_workers, redis_url=args.redis_url, keep_database=args.keep_db, jwt_seconds=jwt_seconds,
               settings_module=args.settings) as stack:
        try:
            log(f"stack (logs in {log_dir}):")
            stack.prepare(log=log)
            stack.start(log=log)
            t = time.monotonic()
            traders = make_traders(stack, args.traders)
            check_login(stack)
            log(f"  {len(traders)} traders funded at the wallet ({time.monotonic() - t:.1f}s)")
            asyncio.run(run_load(args, stack, traders, result))
            dead = stack.dead()
            if dead:
                raise RuntimeError(f"processes died during the run: {dead}\n" + "\n".join(stack.procs[d].logs(30) for d in dead))
            log("invariants (quiescent)")
            result["invariants"] = run_invariants()
            head = headline(args, result)
            result["total_seconds"] = round(time.monotonic() - started, 1)
            print_table(args, result, head)
            status = 0 if result["invariants"]["ok"] else 1
            print(json.dumps({**head, **result}, default=str), flush=True)
        except KeyboardInterrupt:
            log("interrupted; stopping the stack")
            status = 130
        except Exception:
            import traceback

            traceback.print_exc()
            for name, proc in stack.procs.items():
                if not proc.alive():
                    log(f"--- {name} exited ({proc.popen.returncode}):\n{proc.logs(40)}")
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
