"""Benchmark 2: the agent as a real process on a live log, CPU % of one core and peak RSS.

For each (rate, keys per minute): a writer process appends squid lines at the rate, the
agent (`python -m agent run`, flush interval 10 s as before the default became 60 s,
pinned to one core) tails the file
and ships to an in-process sink. After a warm-up, CPU is read from /proc/<pid>/stat over
three back-to-back windows of one flush interval each (median reported); RSS is read from
/proc/<pid>/status every 0.2 s (the peak, VmHWM included). Afterwards the sink's request
total is compared with the lines written, so "it kept up" is checked, not assumed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench.measure import ProcSampler, median, pick_core, workdir
from bench.report import Report, Result
from bench.services import Sink, agent_config, start_agent
from bench.measure import stop
from bench.profiles import top_functions

TARGET_CPU = 5.0
TARGET_RSS = 80.0
FLUSH_S = 10.0


def run(report: Report, quick: bool) -> None:
    if quick:
        cases = [(2000, 10_000), (10_000, 100_000)]
        warm, window = 2.0, 3.0
    else:
        cases = [(r, k) for r in (2000, 10_000, 50_000) for k in (10_000, 100_000)]
        warm, window = 5.0, FLUSH_S
    for rate, keys in cases:
        res = one(rate, keys, warm, window)
        cpu = median(res["cpu"])
        target = rate == 10_000 and keys == 100_000
        kept = res["delivered"] == res["written"]
        note = (f"windows {', '.join(f'{c:.1f}' for c in res['cpu'])} %; delivered {res['delivered']:,} of "
                f"{res['written']:,} lines ({'kept up' if kept else 'BEHIND'}); "
                f"{res['bodies']} bodies, {res['body_bytes'] / max(1, res['written']) * 1e6 / 2**20:.2f} MiB per M lines")
        report.add(Result("2 live agent", f"{rate:,} lines/s, {keys:,} keys/min: CPU of one core",
                          f"{cpu:.1f} %", f"<= {TARGET_CPU:.0f} %" if target else "",
                          cpu <= TARGET_CPU if target else None, note))
        report.add(Result("2 live agent", f"{rate:,} lines/s, {keys:,} keys/min: peak RSS",
                          f"{res['rss']:.1f} MiB", f"<= {TARGET_RSS:.0f} MiB" if target else "",
                          res["rss"] <= TARGET_RSS if target else None))


    if report.results and any(r.met is False for r in report.results if r.bench == "2 live agent"):
        dump = workdir("live-profile") / "agent.prof"
        dump.unlink(missing_ok=True)
        one(10_000, 100_000, 2.0, 6.0, profile=str(dump))
        if dump.exists():
            report.profiles.append(("live agent, 10,000 lines/s, 100,000 keys/min (~20 s, cProfile CPU time of the main thread)",
                                    top_functions(dump)))


def one(rate: int, keys: int, warm: float, window: float, profile: str = "") -> dict:
    wd = workdir(f"live-{rate}-{keys}" + ("-profile" if profile else ""))
    for old in wd.glob("*"):
        if old.is_file():
            old.unlink()
    log = wd / "access.log"
    log.touch()
    core = pick_core()
    total_s = warm + 3 * window
    with Sink() as sink:
        agent = start_agent(wd, agent_config(wd, log, "squid", sink.url, "bench-token", flush_s=FLUSH_S), core=core,
                            profile=profile)
        writer = None
        try:
            time.sleep(1.5)  # let the agent open the file at its end
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited {agent.returncode}; see {wd / 'agent.log'}")
            sampler = ProcSampler(agent.pid)
            writer = subprocess.Popen([sys.executable, "-m", "bench.writer", "--path", str(log), "--rate",
                                       str(rate), "--keys", str(keys), "--seconds", str(total_s + 0.5)],
                                      stdout=subprocess.PIPE)
            t0 = time.monotonic()
            marks = [t0 + warm + i * window for i in range(4)]
            cpu_at: list[tuple[float, float]] = []
            while len(cpu_at) < 4:
                now = time.monotonic()
                sampler.sample()
                if now >= marks[len(cpu_at)]:
                    cpu_at.append((time.perf_counter(), sampler.cpu_s()))
                time.sleep(0.2)
            out, _ = writer.communicate(timeout=60)
            written = json.loads(out)["lines"]
            # wait for the last lines to be flushed (one interval plus slack), still sampling
            deadline = time.monotonic() + FLUSH_S + 10
            while sink.stats.requests < written and time.monotonic() < deadline:
                sampler.sample()
                time.sleep(0.2)
            sampler.sample()
        finally:
            if writer is not None and writer.poll() is None:
                stop(writer)
            stop(agent, grace_s=60)
        cpu = [100 * (c1 - c0) / (t1 - t0) for (t0, c0), (t1, c1) in zip(cpu_at, cpu_at[1:])]
        s = sink.stats
        return {"cpu": cpu, "rss": sampler.peak_rss_mib, "written": written, "delivered": s.requests,
                "bodies": s.bodies, "body_bytes": s.body_bytes, "rows": s.rows}
