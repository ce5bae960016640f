"""`make bench`: run the benchmarks, print one table, write BENCHMARKS.md.

    python -m bench.run                 # everything, full sizes
    python -m bench.run --quick         # small sizes: a smoke test of the scripts
    python -m bench.run throughput live # a subset, by name

A full run of every benchmark rewrites BENCHMARKS.md (keeping its hand-written Gaps
section); a quick run or a subset writes .bench/BENCHMARKS.partial.md instead. The file is
rewritten after every benchmark, marked as in progress until the last one has run, so a
run stopped part-way still leaves the figures it had measured. Figures,
sizes and method per benchmark are described in each module's docstring and in the
README section "Benchmarks".
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable

from bench import activity, clickhouse, e2e, freshness, ingest, live, queries, throughput
from bench.measure import BENCH_DIR, REPO, machine
from bench.report import Report, Result, write

# name -> (what, run); benchmark 6 (wire bytes) is measured by the replay in "throughput"
BENCHMARKS: dict[str, tuple[str, Callable[[Report, bool], None]]] = {
    "throughput": ("1+6 agent replay vs cat and GoAccess, wire bytes", throughput.run),
    "live": ("2 agent on a live log: CPU and RSS", live.run),
    "ingest": ("3 collector ingest rate, store size", ingest.run),
    "queries": ("4 query latency on 20 M minute rows", queries.run),
    "freshness": ("5 line written -> visible in the API", freshness.run),
    "e2e": ("7 run --once of a squid log into the collector vs GoAccess", e2e.run),
    "activity": ("8 activity records: ingest, list/stats latency, CSV download at 10 M", activity.run),
    "clickhouse": ("3+4 ingest rate and query latency on the ClickHouse backend, same data", clickhouse.run),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="benchmarks: " + "; ".join(f"{k}: {v[0]}" for k, v in BENCHMARKS.items()))
    ap.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="small sizes and short runs (a smoke test)")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    BENCH_DIR.mkdir(exist_ok=True)
    report = Report(machine())
    print(f"machine: {report.machine}", flush=True)
    failed = []
    complete = not args.quick and names == list(BENCHMARKS)
    out = REPO / "BENCHMARKS.md" if complete else BENCH_DIR / "BENCHMARKS.partial.md"
    command = "python -m bench.run" + (" --quick" if args.quick else "") + "".join(f" {n}" for n in args.names)
    for i, name in enumerate(names):
        print(f"== {name}: {BENCHMARKS[name][0]}", flush=True)
        t0 = time.perf_counter()
        try:
            BENCHMARKS[name][1](report, args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            report.add(Result(name, "benchmark failed", f"{type(exc).__name__}: {str(exc)[:150]}"))
        report.durations[name] = time.perf_counter() - t0
        if i + 1 < len(names):
            write(report, out, command, progress=f"run in progress: {i + 1} of {len(names)} benchmarks done, "
                                                 f"{', '.join(names[i + 1:])} not yet run")
    write(report, out, command)
    print()
    print(report.table())
    print(f"written to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
