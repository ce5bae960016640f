"""Benchmarks 1 and 6: replay throughput against `cat` and GoAccess, and wire bytes.

Per round, on the same file and the same pinned core, interleaved: `cat file >/dev/null`
(the I/O floor), GoAccess writing its JSON report, our pipeline (bench.replay). The page
cache is warmed first, so all three read from memory. Ratios are per round, then the
median. Ratios use whole-process wall time for every side (our interpreter start and
Public Suffix List load included); lines/s uses the pipeline's own time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench import corpus
from bench.measure import MIB, median, pick_core, python, run_child, workdir
from bench.profiles import top_functions
from bench.replay import STAGES
from bench.report import Report, Result

GOACCESS_FORMAT = "%x.%^ %~%L %h %^/%s %b %m %U %e %^/%^ %M"
TARGET_SQUID = 250_000
TARGET_JSONL = 100_000
TARGET_WIRE_RATIO = 0.3  # wire bytes per log byte, squid, default flush settings
# Per-minute flushing: flush_interval = 60 (aligned to the minute, plus the grace) and a
# max_batch_rows large enough that a minute's rows leave in one batch.
MINUTE_FLUSH = ("--flush-s", "60", "--max-batch-rows", "100000")


def goaccess_argv(path: Path, report_json: Path) -> list[str]:
    return ["goaccess", str(path), f"--log-format={GOACCESS_FORMAT}", "--date-format=%s",
            "--time-format=%s", "--no-progress", "--no-global-config", "-o", str(report_json)]


def replay_argv(fmt: str, path: Path, profile: str = "", upto: str = "encode", floor: bool = False,
                extra: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    argv = [python(), "-m", "bench.replay", "--format", fmt, "--path", str(path), "--upto", upto, *extra]
    return argv + (["--profile", profile] if profile else []) + (["--floor"] if floor else [])


def run(report: Report, quick: bool) -> None:
    n = 100_000 if quick else 2_000_000
    rounds = 3
    wd = workdir("throughput")
    core = pick_core()
    files = {fmt: corpus.write_file(wd / f"{fmt}-{n}.log", fmt, n) for fmt in ("squid", "jsonl")}
    squid = files["squid"]
    run_child(["cat", str(squid)], stdout_path="/dev/null")  # warm the page cache
    run_child(["cat", str(files["jsonl"])], stdout_path="/dev/null")
    have_goaccess = shutil.which("goaccess") is not None
    if not have_goaccess:
        report.notes.append("GoAccess is not installed (Debian package goaccess): its comparison was skipped.")

    cat_s: list[float] = []
    ga_s: list[float] = []
    ours: dict[str, list[dict]] = {"squid": [], "jsonl": []}
    ga_general: dict = {}
    for _ in range(rounds):
        cat_s.append(run_child(["cat", str(squid)], core=core, stdout_path="/dev/null").wall_s)
        if have_goaccess:
            rj = wd / "goaccess-report.json"
            ga = run_child(goaccess_argv(squid, rj), core=core)
            ga_s.append(ga.wall_s)
            ga_general = json.loads(rj.read_text())["general"]
        for fmt, path in files.items():
            child = run_child(replay_argv(fmt, path), core=core)
            res = json.loads(child.stdout)
            res["wall_s"] = child.wall_s
            res["cpu_s"] = child.cpu_s
            res["maxrss_mib"] = child.maxrss_mib
            ours[fmt].append(res)

    size_mib = squid.stat().st_size / MIB
    cat_med = median(cat_s)
    report.add(Result("1 throughput", f"cat squid file ({n:,} lines, {size_mib:.0f} MiB)",
                      f"{n / cat_med:,.0f} lines/s, {size_mib / cat_med:,.0f} MiB/s", note="I/O floor"))
    if ga_s:
        ga_med = median(ga_s)
        total = ga_general.get("total_requests")
        ok = total == n
        report.add(Result("1 throughput", "GoAccess on the squid file (JSON report)",
                          f"{n / ga_med:,.0f} lines/s, {size_mib / ga_med:,.1f} MiB/s",
                          note=f"total_requests={total} ({'= line count' if ok else 'MISMATCH'}), "
                               f"valid={ga_general.get('valid_requests')}, failed={ga_general.get('failed_requests')}"))
    for fmt, runs in ours.items():
        size = files[fmt].stat().st_size / MIB
        lps = median([r["lines"] / r["seconds"] for r in runs])
        mps = median([r["bytes"] / MIB / r["seconds"] for r in runs])
        target = TARGET_SQUID if fmt == "squid" else TARGET_JSONL
        errs = runs[0]["parse_errors"]
        report.add(Result("1 throughput", f"agent pipeline, {fmt} ({n:,} lines, {size:.0f} MiB, 1 core)",
                          f"{lps:,.0f} lines/s, {mps:,.1f} MiB/s", f">= {target:,} lines/s", lps >= target,
                          note=f"parse errors {errs}; process wall {median([r['wall_s'] for r in runs]):.2f} s "
                               f"incl. {median([r['setup_s'] for r in runs]):.2f} s start-up; "
                               f"peak RSS {max(r['maxrss_mib'] for r in runs):.0f} MiB"))
    sq = ours["squid"]
    if ga_s:
        ratio = median([g / r["wall_s"] for g, r in zip(ga_s, sq)])
        report.add(Result("1 throughput", "agent speed / GoAccess speed (squid, same run)", f"{ratio:.2f}x",
                          note="whole-process wall time on both sides; the agent pipeline alone, no collector"))
    ratio_cat = median([c / r["wall_s"] for c, r in zip(cat_s, sq)])
    report.add(Result("1 throughput", "agent speed / cat speed (squid, same run)", f"{ratio_cat:.3f}x"))

    for fmt, runs in ours.items():
        minute = json.loads(run_child(replay_argv(fmt, files[fmt], extra=MINUTE_FLUSH), core=core).stdout)
        for how, r in (("default flush: 10 s, max_batch_rows 10,000", runs[0]),
                       ("per-minute flush: 60 s, max_batch_rows 100,000", minute)):
            per_m = 1_000_000 / max(1, r["lines"])
            ratio = r["wire_bytes"] / max(1, r["bytes"])
            default = how.startswith("default")
            target = fmt == "squid" and default
            report.add(Result("6 wire", f"wire bytes / log bytes, {fmt} ({how})", f"{ratio:,.3f}",
                              f"<= {TARGET_WIRE_RATIO}" if target else "", ratio <= TARGET_WIRE_RATIO if target else None,
                              note=f"body version 2; {r['wire_bytes'] * per_m / MIB:,.2f} MiB per million lines; "
                                   f"{r['rows'] * per_m:,.0f} rows + {r['profiles'] * per_m:,.0f} profiles per M lines "
                                   f"in {r['batches']} batches; log rate 2,000 lines/s"))

    small = min(n, 200_000)
    stages(report, {fmt: corpus.write_file(wd / f"{fmt}-{small}.log", fmt, small) for fmt in files}, core)
    for fmt, runs in ours.items():
        lps = median([r["lines"] / r["seconds"] for r in runs])
        if lps < (TARGET_SQUID if fmt == "squid" else TARGET_JSONL):
            report.profiles.append((f"replay of the {fmt} log ({min(n, 300_000):,} lines, cProfile)",
                                    profile(fmt, wd, min(n, 300_000))))


def stages(report: Report, files: dict[str, Path], core: int | None) -> None:
    """Microseconds per line of each stage: the pipeline cut after each stage, 3 runs each,
    interleaved; a stage's cost is the difference from the previous cut."""
    for fmt, path in files.items():
        small = sum(1 for _ in open(path, "rb"))
        per_line: dict[str, list[float]] = {s: [] for s in STAGES}
        floor_us: list[float] = []
        for _ in range(3):
            for stage in STAGES:
                res = json.loads(run_child(replay_argv(fmt, path, upto=stage), core=core).stdout)
                per_line[stage].append(res["seconds"] / res["lines"] * 1e6)
            res = json.loads(run_child(replay_argv(fmt, path, floor=True), core=core).stdout)
            floor_us.append(res["seconds"] / res["lines"] * 1e6)
        target = TARGET_SQUID if fmt == "squid" else TARGET_JSONL
        call = "json.loads()" if fmt == "jsonl" else "bytes.split()"
        fl = median(floor_us)
        report.add(Result("1 throughput", f"interpreter floor, {fmt}: read + {call} of every line",
                          f"{fl:.2f} us per line = {1e6 / fl:,.0f} lines/s",
                          note=f"the {target:,} lines/s target leaves {1e6 / target:.2f} us per line for "
                               f"everything; a Python parser of this format makes at least this call per line"))
        med = {s: median(v) for s, v in per_line.items()}
        parts, prev = [], 0.0
        for s in STAGES:
            parts.append(f"{s} {med[s] - prev:.2f}")
            prev = med[s]
        report.add(Result("1 throughput", f"where the time goes, {fmt} (us per line, {small:,}-line file)", f"total {med['encode']:.2f} us",
                          note="; ".join(parts) + " (each stage = cut after it minus cut before it)"))


def profile(fmt: str, wd: Path, n: int) -> str:
    path = corpus.write_file(wd / f"{fmt}-{n}.log", fmt, n)
    dump = wd / f"replay-{fmt}.prof"
    run_child(replay_argv(fmt, path, str(dump)), core=pick_core())
    return top_functions(dump)
