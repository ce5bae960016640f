"""Benchmark 7: end to end, as a user sees it: `proxymeter-agent run --once` of a squid log
into a running collector on SQLite, against GoAccess on the same file.

Per round (3, interleaved): a fresh collector (new SQLite file) is started, the agent
replays the whole file with `run --once` (it exits 0 only when the collector has
acknowledged every batch, so the wall time covers parsing, aggregation, shipping and
the collector's ingest); GoAccess writes its JSON report of the same file. Both are
pinned to the same core when the machine has two (the collector gets the other).
The ratio is GoAccess's wall time over ours, per round, then the median. In the same
rounds the agent also replays a jsonl log of JSONL_LINES lines (shorter than the squid
log: the jsonl path is slower, and three rounds of 2,000,000 lines would add about half
an hour to `make bench`); its ratio is
our jsonl lines/s over GoAccess's lines/s on the squid file of that round, as issue 11
sets the target. A third replay per round runs the squid log with `[activity] enabled =
false` (rows only): the gap between it and the default shows what storing one activity
record per line costs the path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench import corpus
from bench.measure import MIB, median, pick_core, python, run_child, workdir
from bench.report import Report, Result
from bench.services import agent_config, start_collector
from bench.throughput import goaccess_argv

TARGET_RATIO = 3.0
TARGET_JSONL_RATIO = 1.5
JSONL_LINES = 500_000
ONCE_TIMEOUT = 3600.0


def once(wd: Path, log: Path, fmt: str, core: int | None, other: int | None, r: int,
         activity: bool = True) -> tuple[float, float]:
    """(wall, agent CPU) of `run --once` of log into a fresh collector."""
    db = wd / f"store-{r}.sqlite"
    for stale in wd.glob(f"store-{r}.sqlite*"):
        stale.unlink()
    shutil.rmtree(wd / "agent-state", ignore_errors=True)
    with start_collector(wd, db, core=other) as col:
        cfg = wd / "agent.toml"
        # The agent reads faster than the collector stores, so most batches are still
        # spooled when reading ends: the default once_timeout (120 s) would give up on a
        # 2 M-line log, and the benchmark times the delivery of every batch.
        text = agent_config(wd, log, fmt, col.url, col.agent_token, read_from="beginning",
                            once_timeout=ONCE_TIMEOUT)
        cfg.write_text(text if activity else text + "\n[activity]\nenabled = false\n")
        child = run_child([python(), "-m", "agent", "run", "--once", "--config", str(cfg)], core=core)
    return child.wall_s, child.cpu_s


def run(report: Report, quick: bool) -> None:
    n = 100_000 if quick else 2_000_000
    wd = workdir("e2e")
    core = pick_core()
    other = None if core is None or core == 0 else 0
    n_jsonl = 20_000 if quick else JSONL_LINES
    log = corpus.write_file(wd / f"squid-{n}.log", "squid", n)
    jlog = corpus.write_file(wd / f"jsonl-{n_jsonl}.log", "jsonl", n_jsonl)
    for f in (log, jlog):
        run_child(["cat", str(f)], stdout_path="/dev/null")  # warm the page cache
    have_goaccess = shutil.which("goaccess") is not None
    ours: list[float] = []
    cpu: list[float] = []
    theirs: list[float] = []
    jsonl: list[float] = []
    rows_only: list[float] = []
    for r in range(3):
        wall, cpu_s = once(wd, log, "squid", core, other, r)
        ours.append(wall)
        cpu.append(cpu_s)
        if have_goaccess:
            theirs.append(run_child(goaccess_argv(log, wd / "goaccess.json"), core=core).wall_s)
        jsonl.append(once(wd, jlog, "jsonl", core, other, r)[0])
        rows_only.append(once(wd, log, "squid", core, other, r, activity=False)[0])
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
    rwall = median(rows_only)
    report.add(Result("7 end to end", f"`run --once` of the squid log, `[activity] enabled = false` ({n:,} lines)",
                      f"{n / rwall:,.0f} lines/s", note=f"wall {rwall:.2f} s (median of {len(rows_only)}); "
                      "minute rows and profiles only: no activity record stored"))
    if theirs:
        rratio = median([g / o for g, o in zip(theirs, rows_only)])
        report.add(Result("7 end to end", "rows-only end to end speed / GoAccess speed (same file, same rounds)",
                          f"{rratio:.2f}x", note="not the issue's configuration (activity records on by default): "
                          "the path's cost without them"))
    jwall = median(jsonl)
    report.add(Result("7 end to end", f"`run --once` of a jsonl log into the collector ({n_jsonl:,} lines, "
                      f"{jlog.stat().st_size / MIB:.0f} MiB)", f"{n_jsonl / jwall:,.0f} lines/s",
                      note=f"wall {jwall:.2f} s (median of {len(jsonl)})"))
    if theirs:
        jratio = median([(n_jsonl / j) / (n / g) for j, g in zip(jsonl, theirs)])
        report.add(Result("7 end to end", "jsonl end to end speed / GoAccess speed on the squid file (same rounds)",
                          f"{jratio:.2f}x", f">= {TARGET_JSONL_RATIO}x", jratio >= TARGET_JSONL_RATIO,
                          note="lines/s over lines/s: the two files differ in length"))
    else:
        report.notes.append("GoAccess is not installed (Debian package goaccess): the end-to-end ratio was skipped.")
