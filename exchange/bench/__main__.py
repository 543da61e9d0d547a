"""`python -m exchange.bench`: the whole exchange under load, next to the bare framework.

Phases of the default run (under 5 minutes on a 2-core machine):

 1. stack: a fresh database `bench_<pid>` (migrated), a private Redis, and the
    processes of `make run` with production settings on free ports; two markets;
    `--traders` traders with pre-issued JWTs, funded by deposits at the wallet.
 2. warm-up: the order mix at a third of the rate (fills the books; not measured).
 3. bare: a constant-JSON DRF endpoint on the same gunicorn settings, driven by
    the same load generator back to back (`--concurrency` clients): the anchor.
 4. sustained: the order mix at a fixed arrival rate (`--rate` placements per
    second, plus cancels and reads) for `--duration` seconds.
 5. drain: until no order is pending and the outbox is empty (bounded).
 6. capacity: placements back to back, to measure order throughput at saturation;
    `ratio_to_bare` = that throughput / the bare endpoint's.
 7. drain again, then the invariants (`exchange.invariants.check_all(quiescent=True)`).

`--step` replaces 4 and 6 by a step test: the rate rises by `--step-increment`
every `--step-seconds` until the p99 of POST /api/v1/orders passes 50 ms; the
knee is the last step under it, and `ratio_to_bare` is the knee's accepted
orders/s over the bare endpoint's requests/s.

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
from exchange.bench.stack import ROOT, Stack
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

P99_LIMIT_MS = 50.0
TARGETS = {"orders_per_sec": 350, "p99_ms": 50, "settlement_lag_p99_ms": 2000, "ratio_to_bare": 0.12}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m exchange.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60, help="seconds of sustained load (a soak: 600)")
    p.add_argument("--rate", type=float, default=350, help="placements offered per second (cancels and reads come on top)")
    p.add_argument("--step", action="store_true", help="step test: raise the rate until p99 passes 50 ms")
    p.add_argument("--step-start", type=float, default=100)
    p.add_argument("--step-increment", type=float, default=50)
    p.add_argument("--step-seconds", type=float, default=15)
    p.add_argument("--step-max", type=float, default=3000)
    p.add_argument("--traders", type=int, default=200)
    p.add_argument("--web-workers", type=int, default=3, help="gunicorn workers of web, wallet and bare (make run: 3)")
    p.add_argument("--concurrency", type=int, default=12, help="clients of the closed-loop phases (bare, capacity)")
    p.add_argument("--bare-seconds", type=float, default=15)
    p.add_argument("--capacity-seconds", type=float, default=20, help="0 skips the capacity phase")
    p.add_argument("--warmup", type=float, default=5, help="seconds of unmeasured load first")
    p.add_argument("--drain-timeout", type=float, default=90, help="most seconds to wait for the outbox to drain")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", nargs="?", const="cpu", choices=["cpu", "wall"], default=None,
                   help="py-spy the web, wallet, engine and worker during the sustained phase: "
                   "cpu (samples holding the GIL, the default) or wall (waits included)")
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


def trade_figures(since: datetime, until: datetime) -> dict:
    """Trades committed in [since, until) and their settlement lag (trade created_at -> settled_at).
    A trade not settled yet counts with its lag so far."""
    from django.db import connection

    with connection.cursor() as cursor:
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
    per = {role: round(1000 * seconds / orders, 2) for role, seconds in sorted(cpu["by_role_seconds"].items())} if orders else {}
    return {
        "ms_per_accepted_order": per,
        "ms_per_accepted_order_total": round(sum(per.values()), 2) if per else None,
        "machine_busy_pct": round(100 * cpu["machine_busy_seconds"] / max(cpu["machine_seconds"], 1e-9), 1),
        "others_busy_seconds": round(cpu["others_seconds"], 1),
    }


async def run_load(args, stack: Stack, traders: list[Trader], result: dict) -> None:
    from django.utils import timezone

    host, port = "127.0.0.1", int(stack.web_url.rsplit(":", 1)[1])
    web = HttpClient(host, port)
    work = Workload(web, traders, seed=args.seed, ring=min(50_000, max(5_000, int(args.rate * args.duration * 1.1))))
    driver = Driver(web)

    if args.warmup > 0:
        log(f"warm-up: {args.warmup:.0f}s at {args.rate / 3:.0f} orders/s")
        await driver.open_loop(work.next_mixed, args.rate / 3 / PLACE_SHARE, args.warmup, Recorder())

    # -- the anchor
    bare_url = stack.start_bare()
    from exchange.bench.urls import BARE_PATH

    bare_client = HttpClient(host, int(bare_url.rsplit(":", 1)[1]))
    bare_raw = bare_client.get(BARE_PATH)
    bare_op = Op(BARE, bare_raw)
    bare_driver = Driver(bare_client)
    await bare_driver.closed_loop(lambda: bare_op, args.concurrency, 1.0, Recorder())  # warm every worker
    log(f"bare: {args.bare_seconds:.0f}s, {args.concurrency} clients back to back on {BARE_PATH}")
    bare = Recorder()
    await bare_driver.closed_loop(lambda: bare_op, args.concurrency, args.bare_seconds, bare)
    stack.stop_bare()
    result["bare"] = phase_summary(bare)
    bare_rps = result["bare"]["requests_per_sec"]
    log(f"  bare: {bare_rps:.0f} req/s, p99 {result['bare']['latency_ms'][BARE]['p99_ms']} ms")

    meter = CpuMeter({role: proc.pid for role, proc in stack.procs.items()} | ({"redis": stack.redis.proc.pid} if stack.redis and stack.redis.proc else {}),
                     stack.database.name)  # fmt: skip
    if args.step:
        await run_steps(args, stack, driver, work, meter, result)
    else:
        profiler = None
        if args.profile:
            profiler = Profiler(stack.log_dir / "profile", mode=args.profile)
            profiler.start({role: stack.procs[role].pid for role in ("web", "wallet", "engine", "worker")}, args.duration)
        log(f"sustained: {args.duration:.0f}s at {args.rate:.0f} placements/s offered ({args.rate / PLACE_SHARE:.0f} requests/s with cancels and reads)")
        since = timezone.now()
        meter.start()
        sustained = Recorder()
        await driver.open_loop(work.next_mixed, args.rate / PLACE_SHARE, args.duration, sustained)
        cpu = meter.stop()
        until = timezone.now()
        result["sustained"] = phase_summary(sustained, offered_orders=args.rate)
        result["sustained"]["cpu"] = cpu_per_order(cpu, sustained.accepted_orders)
        log(f"  sustained: {result['sustained']['orders_per_sec']:.0f} orders/s accepted, "
            f"p99 {result['sustained']['latency_ms'].get(PLACE, {}).get('p99_ms')} ms")  # fmt: skip
        if profiler is not None:
            files = profiler.finish()
            result["profile"] = {role: top_functions(path, leaders=args.profile == "cpu") for role, path in files.items()}
            result["profile_dir"] = str(stack.log_dir / "profile")
        ok, waited, state = await asyncio.to_thread(wait_quiescent, args.drain_timeout)
        log(f"  drained in {waited:.1f}s" if ok else f"  not drained after {waited:.0f}s: {state}")
        result["sustained"]["drain_seconds"] = round(waited, 1)
        result["sustained"].update(await asyncio.to_thread(trade_figures, since, until))

        if args.capacity_seconds > 0:
            log(f"capacity: {args.capacity_seconds:.0f}s, {args.concurrency} clients placing back to back")
            capacity = Recorder()
            meter.start()
            await driver.closed_loop(work.next_placement, args.concurrency, args.capacity_seconds, capacity)
            cpu = meter.stop()
            result["capacity"] = phase_summary(capacity)
            result["capacity"]["cpu"] = cpu_per_order(cpu, capacity.accepted_orders)
            log(f"  capacity: {result['capacity']['orders_per_sec']:.0f} orders/s, "
                f"p99 {result['capacity']['latency_ms'].get(PLACE, {}).get('p99_ms')} ms")  # fmt: skip
    web.close()
    bare_client.close()


async def run_steps(args, stack: Stack, driver: Driver, work: Workload, meter: CpuMeter, result: dict) -> None:
    from django.utils import timezone

    steps = []
    knee = None
    rate = args.step_start
    since = timezone.now()
    log(f"step test: from {args.step_start:.0f} placements/s, +{args.step_increment:.0f} every {args.step_seconds:.0f}s, until p99 > {P99_LIMIT_MS:.0f} ms")
    while rate <= args.step_max:
        rec = Recorder()
        meter.start()
        await driver.open_loop(work.next_mixed, rate / PLACE_SHARE, args.step_seconds, rec)
        cpu = meter.stop()
        summary = phase_summary(rec, offered_orders=rate)
        summary["cpu"] = cpu_per_order(cpu, rec.accepted_orders)
        p99 = summary["latency_ms"].get(PLACE, {}).get("p99_ms", math.inf)
        passed = (
            p99 <= P99_LIMIT_MS
            and summary["http_5xx"] == 0
            and summary["no_answer"] == 0
            and summary["orders_per_sec"] >= 0.95 * rate
        )
        summary["passed"] = passed
        steps.append(summary)
        log(f"  step {rate:5.0f}/s: accepted {summary['orders_per_sec']:6.1f}/s  p99 {p99:7.1f} ms  "
            f"5xx {summary['http_5xx']}  machine busy {summary['cpu']['machine_busy_pct']}%  {'ok' if passed else 'KNEE PASSED'}")  # fmt: skip
        if not passed:
            break
        knee = summary
        rate += args.step_increment
    until = timezone.now()
    result["steps"] = steps
    result["knee"] = knee
    ok, waited, state = await asyncio.to_thread(wait_quiescent, args.drain_timeout)
    log(f"  drained in {waited:.1f}s" if ok else f"  not drained after {waited:.0f}s: {state}")
    result["step_trades"] = await asyncio.to_thread(trade_figures, since, until)


# --- report --------------------------------------------------------------------------------------


def headline(args, result: dict) -> dict:
    bare_rps = result["bare"]["requests_per_sec"]
    if args.step:
        knee = result.get("knee") or {}
        main = knee
        orders = knee.get("orders_per_sec", 0.0)
        figures = result.get("step_trades", {})
        ratio = orders / bare_rps if bare_rps else None
    else:
        main = result["sustained"]
        orders = main["orders_per_sec"]
        figures = main
        capacity = result.get("capacity", {}).get("orders_per_sec")
        ratio = (capacity / bare_rps) if (capacity and bare_rps) else None
    p99 = main.get("latency_ms", {}).get(PLACE, {}).get("p99_ms")
    head = {
        "orders_per_sec": orders,
        "p99_ms": p99,
        "ratio_to_bare": round(ratio, 4) if ratio is not None else None,
        "trades_per_sec": figures.get("trades_per_sec"),
        "settlement_lag_p99_ms": figures.get("settlement_lag_p99_ms"),
        "invariants_ok": result["invariants"]["ok"],
        "bare_requests_per_sec": bare_rps,
        "http_5xx": main.get("http_5xx"),
    }
    if not args.step:
        head["capacity_orders_per_sec"] = result.get("capacity", {}).get("orders_per_sec")
        head["sustained_ratio_to_bare"] = round(orders / bare_rps, 4) if bare_rps else None
        head["delete_p99_ms"] = main.get("latency_ms", {}).get(CANCEL, {}).get("p99_ms")
    else:
        head["knee_orders_per_sec"] = orders
    head["targets_met"] = {
        "orders_per_sec>=350": orders >= TARGETS["orders_per_sec"] and (p99 or math.inf) <= TARGETS["p99_ms"],
        "p99_ms<=50": p99 is not None and p99 <= TARGETS["p99_ms"],
        "settlement_lag_p99_ms<=2000": head["settlement_lag_p99_ms"] is not None and head["settlement_lag_p99_ms"] <= TARGETS["settlement_lag_p99_ms"],
        "zero_5xx": not main.get("http_5xx"),
        "ratio_to_bare>=0.12": head["ratio_to_bare"] is not None and head["ratio_to_bare"] >= TARGETS["ratio_to_bare"],
        "invariants_ok": result["invariants"]["ok"],
    }
    return head


def print_table(args, result: dict, head: dict) -> None:
    m = result["machine"]
    out = []
    out.append("")
    out.append(f"exchange bench  {m['nproc']} × {m['cpu']}, Python {m['python']}, load avg at start {m['loadavg']}")
    bare = result["bare"]
    out.append(f"bare DRF endpoint   {bare['requests_per_sec']:8.0f} req/s   p50 {bare['latency_ms'][BARE]['p50_ms']} ms  p99 {bare['latency_ms'][BARE]['p99_ms']} ms  ({args.concurrency} clients, {args.web_workers} sync workers)")
    phases = [("sustained", result.get("sustained"))] if not args.step else [(f"step {s['offered_orders_per_sec']:.0f}/s", s) for s in result.get("steps", [])]
    if result.get("capacity"):
        phases.append(("capacity", result["capacity"]))
    for name, phase in phases:
        if not phase:
            continue
        offered = phase.get("offered_orders_per_sec")
        out.append("")
        out.append(f"{name}: {phase['seconds']:.0f}s, {phase['requests_per_sec']:.0f} req/s, "
                   f"accepted orders {phase['orders_per_sec']:.1f}/s" + (f" (offered {offered:.0f}/s)" if offered else "")
                   + (f", trades {phase['trades_per_sec']}/s" if "trades_per_sec" in phase else ""))  # fmt: skip
        out.append(f"  {'request':<16}{'n':>8}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  ms")
        for kind, s in phase["latency_ms"].items():
            out.append(f"  {kind:<16}{s['n']:>8}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}{s['p99_ms']:>9.1f}{s['max_ms']:>9.1f}")
        out.append("  answers: " + ", ".join(f"{k} ×{n}" for k, n in phase["answers"].items()))
        if phase.get("generator_skipped") or phase.get("generator_max_lag_ms", 0) > 20:
            out.append(f"  generator: skipped {phase['generator_skipped']}, max lag {phase['generator_max_lag_ms']} ms")
        if "settlement_lag_p99_ms" in phase:
            out.append(f"  settlement lag p50 {phase['settlement_lag_p50_ms']} ms, p99 {phase['settlement_lag_p99_ms']} ms, "
                       f"max {phase['settlement_lag_max_ms']} ms ({phase['settled']}/{phase['trades']} settled; drain {phase.get('drain_seconds')}s)")  # fmt: skip
        cpu = phase.get("cpu")
        if cpu and cpu["ms_per_accepted_order"]:
            parts = ", ".join(f"{role} {ms}" for role, ms in cpu["ms_per_accepted_order"].items())
            out.append(f"  CPU ms per accepted order: {parts} (total {cpu['ms_per_accepted_order_total']}); "
                       f"machine {cpu['machine_busy_pct']}% busy, {cpu['others_busy_seconds']} CPU-s not ours")  # fmt: skip
    if args.step:
        trades = result.get("step_trades", {})
        out.append("")
        knee = result.get("knee")
        out.append(f"knee: {knee['offered_orders_per_sec']:.0f} placements/s offered, {knee['orders_per_sec']} accepted/s with p99 ≤ {P99_LIMIT_MS:.0f} ms" if knee else "knee: none (the first step already failed)")
        out.append(f"trades over the test {trades.get('trades_per_sec')}/s, settlement lag p99 {trades.get('settlement_lag_p99_ms')} ms")
    if result.get("profile"):
        for role, prof in result["profile"].items():
            out.append("")
            out.append(f"profile {role} ({args.profile}, {prof['samples']} samples), self %:")
            for name, pct in prof["self"][:12]:
                out.append(f"  {pct:5.1f}%  {name}")
            out.append(f"profile {role}, inclusive % (project code):")
            shown = 0
            for name, pct in prof["inclusive"]:
                if name.startswith(("orders/", "matching/", "settlement/", "wallet/", "exchange/", "marketdata/")):
                    out.append(f"  {pct:5.1f}%  {name}")
                    shown += 1
                if shown >= 12:
                    break
    inv = result["invariants"]
    out.append("")
    out.append("invariants: " + ("all hold" if inv["ok"] else "BROKEN " + json.dumps(inv["examples"])))
    out.append(f"ratio to bare: {head['ratio_to_bare']}   targets: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in head["targets_met"].items()))
    print("\n".join(out), flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
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
            if not args.step and args.capacity_seconds > 0:
                ok, waited, state = wait_quiescent(args.drain_timeout)
                log(f"  drained in {waited:.1f}s" if ok else f"  not drained after {waited:.0f}s: {state}")
                result["final_drain"] = {"drained": ok, "seconds": round(waited, 1), "state": state}
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
