"""Benchmark 7: end to end, as a user sees it: `proxymeter-agent run --once` of a squid log
into a running collector on SQLite, against GoAccess on the same file.

Per round (3, interleaved): a fresh collector (new SQLite file) is started, the agent
replays the whole file with `run --once` (it exits 0 only when the collector has
acknowledged every batch, so the wall time covers parsing, aggregation, shipping and
the collector's ingest); GoAccess writes its JSON report of the same file. Both are
pinned to the same core when the machine has two (the collector gets the other).
The ratio is GoAccess's wall time over ours, per round, then the median.
"""

from __future__ import annotations

import shutil

from bench import corpus
from bench.measure import MIB, median, pick_core, python, run_child, workdir
from bench.report import Report, Result
from bench.services import agent_config, start_collector
from bench.throughput import goaccess_argv

TARGET_RATIO = 3.0


def run(report: Report, quick: bool) -> None:
    n = 100_000 if quick else 2_000_000
    wd = workdir("e2e")
    core = pick_core()
    other = None if core is None or core == 0 else 0
    log = corpus.write_file(wd / f"squid-{n}.log", "squid", n)
    run_child(["cat", str(log)], stdout_path="/dev/null")  # warm the page cache
    have_goaccess = shutil.which("goaccess") is not None
    ours: list[float] = []
    cpu: list[float] = []
    theirs: list[float] = []
    for r in range(3):
        db = wd / f"store-{r}.sqlite"
        for stale in wd.glob(f"store-{r}.sqlite*"):
            stale.unlink()
        shutil.rmtree(wd / "agent-state", ignore_errors=True)
        with start_collector(wd, db, core=other) as col:
            cfg = wd / "agent.toml"
            cfg.write_text(agent_config(wd, log, "squid", col.url, col.agent_token, read_from="beginning"))
            child = run_child([python(), "-m", "agent", "run", "--once", "--config", str(cfg)], core=core)
            ours.append(child.wall_s)
            cpu.append(child.cpu_s)
        if have_goaccess:
            theirs.append(run_child(goaccess_argv(log, wd / "goaccess.json"), core=core).wall_s)
    size = log.stat().st_size / MIB
    wall = median(ours)
    report.add(Result("7 end to end", f"`run --once` of a squid log into the collector ({n:,} lines, {size:.0f} MiB)",
                      f"{n / wall:,.0f} lines/s", note=f"wall {wall:.2f} s (median of {len(ours)}), agent CPU "
                      f"{median(cpu):.2f} s; exit 0 = every batch acknowledged by the collector"))
    if theirs:
        ratio = median([g / o for g, o in zip(theirs, ours)])
        report.add(Result("7 end to end", "end to end speed / GoAccess speed (same file, same rounds)",
                          f"{ratio:.2f}x", f">= {TARGET_RATIO:.0f}x", ratio >= TARGET_RATIO,
                          note=f"GoAccess {n / median(theirs):,.0f} lines/s"))
    else:
        report.notes.append("GoAccess is not installed (Debian package goaccess): the end-to-end ratio was skipped.")
