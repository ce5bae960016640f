"""Benchmarks 3 and 4 on the ClickHouse backend, next to SQLite's, from the same data.

A clickhouse-server runs as a child process (the test suite's helper: a loopback port,
a temporary data folder, stopped by its pid). Ingest: the collector as a real process
with `backend = "clickhouse"` (insert_batch_rows 100,000, insert_interval 0.2 s) gets
the same bodies as benchmark 3 (bench.ingest.make_rows, 10,000 rows per body, 8
senders), version 2 (what agents send) and version 1 msgpack, a fresh database per run;
rows/s = rows acknowledged / wall time. Queries:
the store of benchmark 4 (bench.buildstore's generator with its seed, so the same
rows) is written through ClickHouseStore.ingest in-process (8 batches in flight, so
the store's batching merges them), its parts merged (OPTIMIZE ... FINAL: the state a
running store reaches by background merges), then the collector serves it and bench.queries
asks the same (endpoint, range, filter) cases. The store is rebuilt on every run (it
lives in the server's temporary folder).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import sys
import time

from agent.wire.batch import Batch, Row
from bench import buildstore, ingest, queries
from bench.measure import median, workdir
from bench.report import Report, Result
from bench.services import start_collector

TARGET_INGEST = 300_000


def storage_toml(url: str, database: str) -> str:
    return (f'[storage]\nbackend = "clickhouse"\nretention_days = 3650\n[storage.clickhouse]\nurl = "{url}"\n'
            f'database = "{database}"\ninsert_batch_rows = 100000\ninsert_interval = 0.2\n')


async def build(url: str, database: str, end: int, days: int, per_minute: int) -> tuple[int, float]:
    from collector.storage.clickhouse import ClickHouseStore

    store = ClickHouseStore(url, database, insert_batch_rows=100_000, insert_interval=0.2, retention_days=3650)
    await store.open()
    rnd = random.Random(20)  # bench.buildstore's seed and order: the same rows as SQLite's store
    zipf = buildstore.zipf_table(rnd)
    start = end - days * 86400
    total = 0
    t0 = time.perf_counter()
    inflight: list[asyncio.Future[bool]] = []
    try:
        ts = start
        while ts < end:
            rows: list[Row] = []
            for m in range(20):
                if ts + m * 60 >= end:
                    break
                rows.extend(buildstore.minute_rows(rnd, ts + m * 60, per_minute, zipf))
            inflight.append(asyncio.ensure_future(store.ingest(Batch(rows=rows), None, end)))
            total += len(rows)
            ts += 20 * 60
            if len(inflight) >= 8:
                await asyncio.gather(*inflight)
                inflight = []
            if (ts - start) % 86400 == 0:
                print(f"  clickhouse store: {(ts - start) // 86400} of {days} days, {total:,} rows, "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        await asyncio.gather(*inflight)
    finally:
        await store.close()
    return total, time.perf_counter() - t0


def run(report: Report, quick: bool) -> None:
    from tests.fixtures.clickhouse import ClickHouseServer, server_command

    if server_command() is None:
        report.add(Result("3/4 clickhouse", "clickhouse-server", "not installed", note="make bench installs it as root"))
        return
    wd = workdir("clickhouse")
    server = ClickHouseServer()
    server.start()
    try:
        n_rows = 40_000 if quick else 200_000
        rows = ingest.make_rows(n_rows, seed=3)
        version = server.query("SELECT version()").strip()
        # version 2 (what agents send: Native blocks straight from its columns) and
        # version 1 msgpack (Row objects on the way)
        for encoding, label in (("v2", "v2 msgpack"), ("msgpack", "msgpack (version 1)")):
            payloads = ingest.bodies(rows, 10_000, encoding)
            rates = []
            for rnd in range(1 if quick else 3):
                coll = start_collector(wd, wd / "unused.db",
                                       storage=storage_toml(server.url, f"ingest_{encoding}_{rnd}_{secrets.token_hex(3)}"))
                try:
                    secs = asyncio.run(ingest.send_all(coll.url, coll.agent_token, payloads, "application/msgpack", coll.admin_token))
                finally:
                    coll.stop()
                rates.append(n_rows / secs)
            r = median(rates)
            report.add(Result("3 ingest clickhouse", f"{label}, 10,000 rows/body, {ingest.SENDERS} senders",
                              f"{r:,.0f} rows/s", f">= {TARGET_INGEST:,} rows/s", r >= TARGET_INGEST,
                              note=f"{n_rows:,} rows per run; clickhouse-server {version}"))

        _, _, days, per_minute = queries.store_path(quick)
        end = int(time.time()) // 86400 * 86400
        rows, secs = asyncio.run(build(server.url, "queries", end, days, per_minute))
        # Measured once ClickHouse's background merges have settled (as a store that has
        # run for a while): merge every table's parts now instead of waiting for it.
        t0 = time.perf_counter()
        for table in ("m", "r_m", "r_h", "r_d", "p"):
            # a merge of a 20 M-row table's parts takes minutes here, not the helper's 30 s
            server.query(f"OPTIMIZE TABLE queries.{table} FINAL", timeout=3600)
        merge_s = time.perf_counter() - t0
        size = int(server.query("SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = 'queries'").strip() or 0)
        report.add(Result("4 queries clickhouse", "store", f"{rows:,} minute rows, {size / 2**30:.2f} GiB",
                          ">= 20,000,000 rows" if not quick else "", rows >= 20_000_000 if not quick else None,
                          note=f"{days} days x {per_minute} rows/minute, the generator of benchmark 4; "
                               f"built in {secs:.0f} s ({rows / secs:,.0f} rows/s) through Store.ingest, "
                               f"then OPTIMIZE ... FINAL ({merge_s:.0f} s)"))
        coll = start_collector(wd, wd / "unused.db", storage=storage_toml(server.url, "queries"))
        try:
            queries.measure(report, "4 queries clickhouse", coll.url, coll.admin_token, end, 3 if quick else 10)
        finally:
            coll.stop()
    finally:
        server.stop()
