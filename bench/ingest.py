"""Benchmark 3: collector ingest rate on SQLite, and store size per million minute-rows.

The collector runs as a real process on a fresh SQLite file per run; 8 concurrent
aiohttp senders post pre-encoded bodies (msgpack or JSON, 1,000 or 10,000 rows each, a
unique Idempotency-Key per body) as fast as the collector acknowledges them. "msgpack"
and "json" are version 1 bodies (FonProxy's row maps); "v2" is what agents send: the
same rows as version 2 columns and a string table (agent.wire.compact's encoder). rows/s =
rows acknowledged / wall time from the first send to the last 204. Rows are realistic
minute rows (distinct keys, latency histograms), so every row is a new stored row.
A store may acknowledge rows before it has folded them into its rollups (SQLite stages
them): the clock stops only when a query has answered after the last 204, and a query
sees every acknowledged row, so the rate is of rows stored AND queryable.
Store size = the database file after the collector stopped (WAL checkpointed), rollups
included.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import msgpack
import json

from agent.wire.batch import decode_body
from agent.wire.compact import encode_compact
from bench.measure import MIB, median, run_child, workdir
from bench.report import Report, Result
from bench.services import db_files, dir_size, start_collector

SENDERS = 8
TARGET = 100_000  # issue 11: SQLite ingest >= 100k rows/s sustained
START_S = 1_767_225_600


def make_rows(n: int, seed: int, start_s: int = START_S, per_minute: int = 500) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for k in range(n):
        minute = start_s + (k // per_minute) * 60
        u = k % 200
        err = "connection_refused" if k % 25 == 0 else ""
        count = 1 + rnd.randrange(40)
        rows.append({
            "ts": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(minute)),
            "user_id": 1000 + u, "order_id": 1 + u % 37, "port": 443 if k % 2 else 80,
            "protocol": "HTTPS" if k % 2 else "HTTP", "ip_out": "198.51.100.7",
            "ip_from": f"10.0.{u // 250}.{u % 250}", "peer_id": "", "worker": "worker-01",
            "domain": f"site{(k // 200) % 5000}.com", "error": err,
            "count": count, "bytes_sent": count * 700, "bytes_received": count * rnd.randrange(1000, 90000),
            "error_count": count if err else 0, "duration_ms": count * 350, "max_concurrency": 1 + count // 4,
            "conn_ms": count * 350, "duration_max_ms": 2000,
            "latency": [[b, 1 + rnd.randrange(count)] for b in sorted(rnd.sample(range(40, 110), 3))],
        })
    return rows


def bodies(rows: list[dict], size: int, encoding: str) -> list[bytes]:
    """Bodies of `size` rows: "msgpack" or "json" version 1, or "v2" (agent.wire.compact)."""
    out = []
    for i in range(0, len(rows), size):
        obj = {"logs": rows[i:i + size]}
        if encoding == "v2":
            batch = decode_body(msgpack.packb(obj, use_bin_type=True), "application/msgpack")
            out.append(encode_compact(batch))
        else:
            out.append(msgpack.packb(obj, use_bin_type=True) if encoding == "msgpack"
                       else json.dumps(obj, separators=(",", ":")).encode())
    return out


async def send_all(url: str, token: str, payloads: list[bytes], ctype: str, admin_token: str) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    run = uuid.uuid4().hex[:8]
    counter = iter(range(1 << 30))

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": ctype,
                       "Idempotency-Key": f"bench-{run}:{next(counter)}"}
            async with session.post(url + "/analytics/ingest", data=body, headers=headers) as resp:
                if resp.status != 204:
                    raise RuntimeError(f"ingest answered {resp.status}: {(await resp.text())[:300]}")

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(sender(session) for _ in range(SENDERS)))
        query = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
        async with session.get(url + "/analytics/traffic", params=query,
                               headers={"Authorization": f"Bearer {admin_token}"}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"query answered {resp.status}: {(await resp.text())[:300]}")
            await resp.read()
        return time.perf_counter() - start


def run(report: Report, quick: bool) -> None:
    wd = workdir("ingest")
    n_rows = 40_000 if quick else 200_000
    rows = make_rows(n_rows, seed=3)
    cases = [(enc, size) for enc in ("v2", "msgpack", "json") for size in (1000, 10_000)]
    payloads = {c: bodies(rows, c[1], c[0]) for c in cases}
    rates: dict[tuple[str, int], list[float]] = {c: [] for c in cases}
    sizes: list[float] = []
    for rnd in range(3):
        for case in cases:  # interleaved: A B C D A B C D ...
            db = wd / f"ingest-{case[0]}-{case[1]}-{rnd}.db"
            for p in db_files(db):
                p.unlink(missing_ok=True)
            coll = start_collector(wd, db)
            try:
                ctype = "application/json" if case[0] == "json" else "application/msgpack"
                secs = asyncio.run(send_all(coll.url, coll.agent_token, payloads[case], ctype, coll.admin_token))
            finally:
                coll.stop()
            rates[case].append(n_rows / secs)
            if case == ("msgpack", 10_000):
                sizes.append(dir_size(db_files(db)) / n_rows * 1e6 / MIB)
            for p in db_files(db):
                p.unlink(missing_ok=True)
    for case in cases:
        r = median(rates[case])
        body = len(payloads[case][0])
        report.add(Result("3 ingest", f"{case[0]}, {case[1]:,} rows/body, {SENDERS} senders",
                          f"{r:,.0f} rows/s", f">= {TARGET:,} rows/s", r >= TARGET,
                          note=f"{n_rows:,} rows per run; body {body / 1024:,.0f} KiB"))
    if any(median(v) < TARGET for v in rates.values()):
        db = wd / "profile.db"
        for p in db_files(db):
            p.unlink(missing_ok=True)
        dump = wd / "ingest.prof"
        child = run_child([sys.executable, "-m", "bench.profiles", "ingest", "--db", str(db), "--rows",
                           str(min(n_rows, 100_000)), "--dump", str(dump), "--body", "v2"])
        report.profiles.append((f"ingest: collector decode + SQLite Store write of {min(n_rows, 100_000):,} rows in "
                                "version 2 "
                                "msgpack bodies of 10,000 (synchronous, in-process, no HTTP)",
                                child.stdout.decode()))
        for p in db_files(db):
            p.unlink(missing_ok=True)
    report.add(Result("3 ingest", "SQLite store size per million minute-rows", f"{median(sizes):,.0f} MiB",
                      note="file size after the collector stopped, rollups included"))
