"""What the machine spent: CPU seconds per process role (from /proc), and py-spy profiles.

`CpuMeter` reads utime+stime of every process in each started process group,
of the PostgreSQL backends serving the bench database (their process title
names it), and of this process (the load generator), plus the whole machine's
busy time from /proc/stat, so the CPU of processes that are not ours (other
work on the box) shows too.

`Profiler` runs `py-spy record --format raw` on chosen processes (with
`--subprocesses`: gunicorn's and celery's workers) and `top_functions` turns
the collapsed stacks into the functions that cost the most: CPU (`--gil`:
samples of the thread holding the GIL) or wall time (`--idle`: waits included).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from exchange.processes import process_table

TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / TICKS, total / TICKS


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": sys.version.split()[0],
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


class CpuMeter:
    def __init__(self, groups: dict[str, int], database_name: str) -> None:
        self.groups = groups  # role -> session id (the pid of the process we started)
        self.database_marker = f" {database_name} ".encode()
        self._start: dict[int, tuple[str, float]] = {}
        self._machine_start = (0.0, 0.0)

    def sample(self) -> dict[int, tuple[str, float]]:
        """pid -> (role, cpu seconds) for every process we account for."""
        out = {}
        role_of = {sid: role for role, sid in self.groups.items()}
        for pid, (sid, cpu) in process_table().items():
            role = role_of.get(sid)
            if role is None and self.database_marker in _cmdline(pid).replace(b"\0", b" ") + b" ":
                role = "postgres"
            if role is not None:
                out[pid] = (role, cpu)
        out[os.getpid()] = ("loadgen", _proc_cpu(os.getpid()))
        return out

    def start(self) -> None:
        self._start = self.sample()
        self._machine_start = machine_busy_seconds()

    def stop(self) -> dict:
        """CPU per role since `start()` (per process: a process that started meanwhile
        counts whole; one that ended meanwhile is lost, e.g. a recycled DB backend)."""
        end = self.sample()
        busy, total = machine_busy_seconds()
        ours: Counter = Counter()
        for pid, (role, cpu) in end.items():
            before = self._start.get(pid)
            ours[role] += cpu - (before[1] if before and before[0] == role else 0.0)
        machine_busy = busy - self._machine_start[0]
        return {
            "by_role_seconds": dict(ours),
            "machine_busy_seconds": machine_busy,
            "machine_seconds": total - self._machine_start[1],
            "others_seconds": max(0.0, machine_busy - sum(ours.values())),
        }


class Profiler:
    """py-spy on a few processes for `duration` seconds (their samples in raw collapsed form)."""

    def __init__(self, out_dir: Path, rate: int = 97, mode: str = "cpu") -> None:
        self.out_dir = out_dir
        self.rate = rate
        # cpu: samples of threads holding the GIL (running Python; a thread woken from
        # I/O but still waiting for a CPU does not count, which matters on a busy box);
        # wall: every sample, idle ones included (where a request's time goes).
        self.mode = mode
        self.runs: list[tuple[str, subprocess.Popen, Path]] = []

    @staticmethod
    def available() -> str | None:
        here = Path(sys.executable).parent / "py-spy"
        return str(here) if here.exists() else shutil.which("py-spy")

    def start(self, targets: dict[str, int], duration: float) -> None:
        binary = self.available()
        if binary is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for role, pid in targets.items():
            out = self.out_dir / f"{role}.txt"
            argv = [binary, "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--output", str(out),
                    "--rate", str(self.rate), "--duration", str(int(duration)), "--nonblocking",
                    "--gil" if self.mode == "cpu" else "--idle"]  # fmt: skip
            log = open(self.out_dir / f"{role}.py-spy.log", "wb")  # noqa: SIM115 - closed with the process
            self.runs.append((role, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), out))

    def finish(self, timeout: float = 60.0) -> dict[str, Path]:
        done = {}
        for role, popen, out in self.runs:
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                popen.terminate()
                popen.wait(timeout=10)
            if out.exists():
                done[role] = out
        self.runs.clear()
        return done


def _frame_name(frame: str) -> str:
    """'order_place (orders/services.py:97)' -> 'orders/services.py:order_place' (no line)."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("/lib/"):
                path = "stdlib/" + path.split("/", 1)[1]
            break
    else:
        root = str(Path(__file__).resolve().parents[2]) + "/"
        path = path.replace(root, "")
    return f"{path}:{name}"


def top_functions(raw_path: Path, *, limit: int = 25, leaders: bool = True) -> dict:
    """Self and inclusive shares of the samples per function, from a py-spy raw file.

    With `leaders=False`, the stacks of a process group's leader (the gunicorn
    arbiter, the celery consumer) are left out when its children are sampled
    (a wall-time profile would otherwise be mostly the leader sleeping).
    """
    lines = []
    deepest = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        depth = sum(1 for f in frames if f.startswith("process "))
        deepest = max(deepest, depth)
        lines.append((frames, depth, int(count)))
    self_counts: Counter = Counter()
    incl_counts: Counter = Counter()
    total = 0
    for frames, depth, n in lines:
        if not leaders and depth < deepest:
            continue
        names = [_frame_name(f) for f in frames if not f.startswith(("process ", "thread "))]
        if not names:
            continue
        total += n
        self_counts[names[-1]] += n
        for name in set(names):
            incl_counts[name] += n
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}

    def share(counter: Counter) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(limit)]

    return {"samples": total, "self": share(self_counts), "inclusive": share(incl_counts)}
