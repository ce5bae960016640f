"""Build the query benchmark's store once: `python -m bench.buildstore --db PATH ...`.

Minute rows for `--days` days ending at `--end` (UTC epoch seconds, a day boundary):
every minute holds `--per-minute` rows over 200 users and 5,000 domains (Zipf-like
popularity, each (user, domain) at most once a minute, 4 % error rows, small latency
histograms). They go through the collector's own Store.ingest (the same code path the
ingest endpoint uses after decoding, so hour/day rollups are maintained), in batches of
`--batch-minutes` minutes, oldest first. Prints one JSON object: rows, seconds.
No concurrency profiles are stored: concurrency queries read the rows' max_concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import time

from agent.wire.batch import Batch, Row

USERS = 200
DOMAINS = 5000
ERRORS = ("connection_refused", "dns_failure", "timeout", "auth_failed", "forbidden_host", "client_aborted")
TLDS = ("com", "net", "org", "io", "de", "co.uk")


def domain_name(i: int) -> str:
    return f"site{i}.{TLDS[i % len(TLDS)]}"


def order_of(user: int) -> int:
    return 1 + user % 37


def minute_rows(rnd: random.Random, ts: int, n: int, zipf: list[int]) -> list[Row]:
    rows: list[Row] = []
    seen: set[int] = set()
    nz = len(zipf)
    for k in range(n):
        u = k % USERS
        d = zipf[int(rnd.random() * nz)]
        while u * DOMAINS + d in seen:
            d = (d + 1 + k) % DOMAINS
        seen.add(u * DOMAINS + d)
        count = 1 + int(rnd.random() * 30)
        err = ERRORS[k % len(ERRORS)] if rnd.random() < 0.04 else ""
        https = d % 3 != 0
        rows.append(Row(
            ts=ts, user_id=1000 + u, order_id=order_of(u), port=443 if https else 80,
            protocol="HTTPS" if https else "HTTP", worker=f"worker-0{k % 4}", domain=domain_name(d), error=err,
            count=count, bytes_sent=count * 700, bytes_received=count * (1000 + int(rnd.random() * 90000)),
            error_count=count if err else 0, duration_ms=count * 350, conn_ms=count * 350,
            max_concurrency=1 + count // 4, duration_max_ms=900 + count * 10,
            latency={40 + int(rnd.random() * 30): count // 2 + 1, 70 + int(rnd.random() * 30): count - count // 2},
        ))
    return rows


def zipf_table(rnd: random.Random, size: int = 1 << 16) -> list[int]:
    cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(DOMAINS)))
    import bisect

    return [min(DOMAINS - 1, bisect.bisect(cum, rnd.random() * cum[-1])) for _ in range(size)]


async def build(db: str, end: int, days: int, per_minute: int, batch_minutes: int) -> dict:
    from collector.storage.sqlite import SQLiteStore

    store = SQLiteStore(db, retention_days=3650, synchronous="normal")
    await store.open()
    rnd = random.Random(20)
    zipf = zipf_table(rnd)
    start = end - days * 86400
    rows_total = 0
    t0 = time.perf_counter()
    try:
        ts = start
        while ts < end:
            rows: list[Row] = []
            for m in range(batch_minutes):
                if ts + m * 60 >= end:
                    break
                rows.extend(minute_rows(rnd, ts + m * 60, per_minute, zipf))
            await store.ingest(Batch(rows=rows), None, end)
            rows_total += len(rows)
            ts += batch_minutes * 60
            if (ts - start) % 86400 == 0:
                print(f"built {(ts - start) // 86400} of {days} days, {rows_total:,} rows, "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        await store.close()
    return {"rows": rows_total, "seconds": time.perf_counter() - t0, "start": start, "end": end,
            "per_minute": per_minute, "days": days}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.buildstore")
    ap.add_argument("--db", required=True)
    ap.add_argument("--end", type=int, required=True)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-minute", type=int, default=470)
    ap.add_argument("--batch-minutes", type=int, default=20)
    args = ap.parse_args(argv)
    if args.end % 86400:
        ap.error("--end must be a UTC day boundary")
    out = asyncio.run(build(args.db, args.end, args.days, args.per_minute, args.batch_minutes))
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
