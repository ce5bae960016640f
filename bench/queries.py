"""Benchmark 4: /analytics query latency on a store of at least 20 million minute rows.

The store (30 days x 463 minute rows = 20.0 M rows over 200 users and 5,000 domains) is
built once by bench.buildstore through the collector's own Store.ingest and kept in
.bench/queries/ with a JSON note of how it was built; later runs reuse it. The collector
then serves it as a real process; every endpoint is asked for the last 1, 7 and 60 days
of the data, without a filter, with `domain` (a popular domain) and with `orderId`. Three
interleaved rounds each ask every (endpoint, range, filter) `reps` times, one request at a
time; p50/p99 are per round (nearest rank), the median round is reported.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bench.buildstore import domain_name
from bench.measure import REPO, median, percentile, run_child, workdir
from bench.report import Report, Result
from bench.services import start_collector

ENDPOINTS = ("traffic", "requests", "concurrency", "latency", "domains", "errors", "websites")
RANGES = (("1 d", 1), ("7 d", 7), ("60 d", 60))
FILTERS = (("no filter", {}), ("domain", {"domain": domain_name(3)}), ("orderId", {"orderId": "5"}))
TARGET_SHORT_MS = 100.0
TARGET_LONG_MS = 500.0
QUERY_TIMEOUT_S = 60.0


def store_path(quick: bool) -> tuple[Path, Path, int, int]:
    """The store's file, named after its size and a hash of the schema (the migrations)
    and of the generator: a change in the on-disk format or the data must not be
    benchmarked against a stale file, but a faster ingest path need not rebuild it."""
    from collector.storage.sqlite import MIGRATIONS

    wd = workdir("queries")
    days, per_minute = (2, 100) if quick else (30, 463)
    digest = hashlib.sha256("\n--\n".join(MIGRATIONS).encode())
    digest.update((REPO / "bench" / "buildstore.py").read_bytes())
    code = digest.hexdigest()[:10]
    name = f"store-{days}d-{per_minute}-{code}"
    return wd / f"{name}.db", wd / f"{name}.json", days, per_minute


def ensure_store(quick: bool) -> dict:
    db, note, days, per_minute = store_path(quick)
    if db.exists() and note.exists():
        return json.loads(note.read_text())
    for stale in db.parent.glob("store-*"):  # stores written by older store code
        stale.unlink()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    end = int(time.time()) // 86400 * 86400
    print(f"  building the query store ({days} days x {per_minute} rows/minute) in {db} ...", flush=True)
    child = run_child([sys.executable, "-m", "bench.buildstore", "--db", str(db), "--end", str(end),
                       "--days", str(days), "--per-minute", str(per_minute)], timeout_s=6 * 3600)
    info = json.loads(child.stdout)
    info["size_bytes"] = db.stat().st_size
    note.write_text(json.dumps(info))
    return info


def iso(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def get(url: str, token: str) -> tuple[int, float, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=QUERY_TIMEOUT_S) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body = exc.read()
        status = exc.code
    except TimeoutError:
        # one query over the limit is a figure to report, not a reason to lose the others
        return 0, time.perf_counter() - t0, f"no answer within {QUERY_TIMEOUT_S:.0f} s".encode()
    return status, time.perf_counter() - t0, body


def run(report: Report, quick: bool) -> None:
    info = ensure_store(quick)
    db, _, _, _ = store_path(quick)
    reps = 3 if quick else 10
    wd = workdir("queries")
    end = info["end"]
    report.add(Result("4 queries", "store", f"{info['rows']:,} minute rows, {info['size_bytes'] / 2**30:.2f} GiB",
                      ">= 20,000,000 rows" if not quick else "", info["rows"] >= 20_000_000 if not quick else None,
                      note=f"{info['days']} days x {info['per_minute']} rows/minute, 200 users, 5,000 domains; "
                           f"built in {info['seconds']:.0f} s ({info['rows'] / info['seconds']:,.0f} rows/s) "
                           f"through Store.ingest"))
    coll = start_collector(wd, db)
    try:
        measure(report, "4 queries", coll.url, coll.admin_token, end, reps)
    finally:
        coll.stop()


def measure(report: Report, section: str, url: str, token: str, end: int, reps: int) -> None:
    """Every (endpoint, range, filter) case against a running collector, into `report`."""
    cases = [(ep, rname, days, fname, params) for ep in ENDPOINTS for rname, days in RANGES
             for fname, params in FILTERS]
    samples: dict[tuple[str, str, str], list[list[float]]] = {(c[0], c[1], c[3]): [] for c in cases}
    errors: dict[tuple[str, str, str], str] = {}
    for _ in range(3):
        for ep, rname, days, fname, params in cases:
            q = {"from": iso(end - days * 86400), "to": iso(end), **params}
            if ep in ("domains", "errors"):
                q["limit"] = "100"
            full = f"{url}/analytics/{ep}?{urllib.parse.urlencode(q)}"
            times = []
            for _ in range(reps):
                status, secs, body = get(full, token)
                if status != 200:
                    what = f"HTTP {status}" if status else "timeout"
                    errors[(ep, rname, fname)] = f"{what}: {body[:160].decode(errors='replace')}"
                    break
                times.append(secs * 1000)
            if times:
                samples[(ep, rname, fname)].append(times)
    for ep, rname, days, fname, _ in cases:
        key = (ep, rname, fname)
        target = TARGET_LONG_MS if days > 7 else TARGET_SHORT_MS
        if key in errors:
            report.add(Result(section, f"/{ep} {rname}, {fname}", "error", f"p99 <= {target:.0f} ms", False,
                              note=errors[key]))
            continue
        rounds = samples[key]
        p50 = median([percentile(t, 50) for t in rounds])
        p99 = median([percentile(t, 99) for t in rounds])
        report.add(Result(section, f"/{ep} {rname}, {fname}", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                          f"p99 <= {target:.0f} ms", p99 <= target))
