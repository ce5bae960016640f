"""Measuring helpers shared by every benchmark: medians, percentiles, child processes.

Rules: wall time is time.perf_counter; a child's CPU and peak RSS come from the kernel
(os.wait4's rusage for a finished child, /proc/<pid>/stat and /proc/<pid>/status while
it runs), never from the child's own report. Children are started by us and stopped by
pid, always in a finally.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / ".bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def workdir(name: str) -> Path:
    path = BENCH_DIR / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of at least one value."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def pick_core() -> int | None:
    """The last CPU we may run on: the child is pinned there so one core is measured."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    return cpus[-1] if cpus else None


def pin_to(core: int | None):  # noqa: ANN201 - a preexec_fn
    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})

    return pin


@dataclass
class ChildRun:
    wall_s: float
    cpu_s: float  # user + system of the child
    maxrss_mib: float
    returncode: int
    stdout: bytes


def run_child(argv: Sequence[str], *, core: int | None = None, stdout_path: str | None = None,
              timeout_s: float = 3600.0, env: dict[str, str] | None = None) -> ChildRun:
    """Run a command to completion; wall, CPU and peak RSS from the kernel via wait4."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.PIPE, cwd=REPO,
                            preexec_fn=pin_to(core), env=env)
    try:
        if stdout_path:
            data = b""
            err = b""
            deadline = time.monotonic() + timeout_s
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{argv[0]} ran over {timeout_s} s")
                time.sleep(0.005)
        else:
            # read pipes without reaping, then reap with wait4 to get this child's rusage
            data, err = _communicate_no_reap(proc, timeout_s)
            pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            stop(proc)
        if stdout_path:
            out.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        tail = (err or (proc.stderr.read() if proc.stderr else b""))[-2000:].decode(errors="replace")
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {tail}")
    return ChildRun(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, data)


def _communicate_no_reap(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[bytes, bytes]:
    import selectors

    sel = selectors.DefaultSelector()
    bufs: dict[int, list[bytes]] = {}
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            sel.register(f, selectors.EVENT_READ)
            bufs[f.fileno()] = []
    deadline = time.monotonic() + timeout_s
    while sel.get_map():
        if time.monotonic() > deadline:
            raise TimeoutError("child ran too long")
        for key, _ in sel.select(timeout=1.0):
            chunk = os.read(key.fd, 1 << 16)
            if chunk:
                bufs[key.fd].append(chunk)
            else:
                sel.unregister(key.fileobj)
    out = b"".join(bufs.get(proc.stdout.fileno(), [])) if proc.stdout else b""
    err = b"".join(bufs.get(proc.stderr.fileno(), [])) if proc.stderr else b""
    return out, err


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:  # type: ignore[type-arg]
    """SIGTERM, wait, then SIGKILL: always by this child's pid."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except ProcessLookupError:
        pass


class ProcSampler:
    """Live CPU seconds and RSS of one running process, read from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss_mib = 0.0

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # after the comm field: state is [0], utime [11], stime [12]
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def sample(self) -> float:
        """Current RSS in MiB; also tracks the peak (VmHWM covers spikes between samples)."""
        rss = hwm = 0.0
        with open(f"/proc/{self.pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
        self.peak_rss_mib = max(self.peak_rss_mib, rss, hwm)
        return rss


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / MIB:.1f} GiB"
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": cpu,
        "cores": f"{os.cpu_count()} ({usable} usable)",
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": _loadavg(),
        "speed": interpreter_speed(),
    }


CALIBRATION_LINE = (b"1767225600.000   4979 10.96.81.121 TCP_TUNNEL/200 52120 CONNECT www.youtube.com:443 "
                    b"user-146-order-1461 HIER_DIRECT/151.101.26.51 -")


def interpreter_speed() -> str:
    """Two fixed CPython micro-timings (best of 5), so figures from machines of different
    speed can be compared: a bare loop, and the one bytes.split() every squid line costs."""
    import timeit

    loop = min(timeit.repeat("sum(range(1000))", repeat=5, number=2000)) / 2000
    split = min(timeit.repeat("line.split()", globals={"line": CALIBRATION_LINE}, repeat=5, number=200_000)) / 200_000
    return f"sum(range(1000)) {loop * 1e6:.1f} us; bytes.split() of a 10-field squid line {split * 1e9:.0f} ns"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def python() -> str:
    return sys.executable


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
