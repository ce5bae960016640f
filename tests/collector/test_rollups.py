"""Every row table of the SQLite store equals sums computed straight from the ingested rows.

The oracle aggregates the Row objects that were ingested (not what the store wrote) per
each table's key at its level; the store is fed shuffled batches of mixed shapes (one
minute, many minutes with repeated keys, concurrent senders whose batches are group
committed, a failing batch among them), so both ingest paths and the savepoints run.
A v1 database (before the rollup families) is migrated and checked the same way.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest

from agent.wire.batch import Batch, Row
from collector.model import Filter
from tests.collector.conftest import all_domains
from collector.plan import DAY, HOUR, MINUTE, UTC, chart_plan
from collector.storage.sqlite import BASE, FAMILIES, M, MIGRATIONS, SQLiteStore, Table

T0 = 1773532800  # 2026-03-15 00:00:00 UTC
INT64_MAX = 2**63 - 1
REPO = Path(__file__).resolve().parents[2]
DOMAINS = ["a.com", "b.org", "c.net", "d.io", ""]
ERRORS = ["", "", "", "timeout", "dns_failure"]


def rand_rows(rnd: random.Random, n: int, minutes: int) -> list[Row]:
    rows = []
    for _ in range(n):
        count = rnd.randrange(1, 9)
        lat = {rnd.randrange(0, 90): rnd.randrange(1, 5) for _ in range(rnd.randrange(0, 4))}
        rows.append(Row(
            ts=T0 + rnd.randrange(minutes) * 60, user_id=rnd.choice([1, 2, 3]), order_id=rnd.choice([1, 2]),
            port=rnd.choice([80, 443]), worker=rnd.choice(["w1", "w2"]), domain=rnd.choice(DOMAINS),
            error=rnd.choice(ERRORS), count=count, bytes_sent=rnd.randrange(10**6), bytes_received=rnd.randrange(10**6),
            error_count=rnd.randrange(3), duration_ms=rnd.randrange(5000), conn_ms=rnd.randrange(60000),
            max_concurrency=rnd.randrange(30), duration_max_ms=rnd.randrange(5000), latency=lat,
        ))  # fmt: skip
    return rows


KEYS: dict[str, Callable[[Row], tuple[Any, ...]]] = {
    "order_id": lambda r: r.order_id,
    "user_id": lambda r: r.user_id,
    "domain": lambda r: r.domain,
    "error": lambda r: r.error,
    "rest": lambda r: (r.port, r.protocol, r.ip_out, r.ip_from, r.peer_id, r.worker),
}


def oracle(rows: list[Row], table: Table) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    out: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        if table.name.startswith("e_") and not r.error:
            continue
        key = tuple(r.ts - r.ts % table.level if k == "ts" else KEYS[k](r) for k in table.keys)
        acc = out.get(key)
        if acc is None:
            acc = out[key] = [0] * 8 + [r.ts, r.ts, {}]
        for i, name in enumerate(("count", "bytes_sent", "bytes_received", "error_count", "duration_ms", "conn_ms")):
            acc[i] += getattr(r, name)
        acc[6] = max(acc[6], r.max_concurrency)
        acc[7] = max(acc[7], r.duration_max_ms)
        acc[8] = min(acc[8], r.ts)
        acc[9] = max(acc[9], r.ts)
        for b, c in r.latency.items():
            acc[10][b] = acc[10].get(b, 0) + c
    result = {}
    for key, acc in out.items():
        # Stored sums saturate: non-negative deltas merged with min(a + b, MAX) end at
        # min(total, MAX), whatever the order.
        acc[:6] = [min(v, INT64_MAX) for v in acc[:6]]
        vals = acc[:8] + (acc[8:10] if table.spans else []) + ([acc[10]] if table.latency else [])
        result[key] = tuple(vals)
    return result


def hist_stream(blob: bytes | None) -> dict[int, int]:
    """A stored histogram: a msgpack stream of {bucket: count} maps, summed (merges may
    just concatenate)."""
    out: dict[int, int] = {}
    if blob:
        unpacker = msgpack.Unpacker(strict_map_key=False)
        unpacker.feed(blob)
        for part in unpacker:
            for b, c in part.items():
                out[b] = out.get(b, 0) + c
    return out


def stored(con: sqlite3.Connection, table: Table) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    names = dict(con.execute("SELECT id, s FROM strings"))
    rests = {
        i: (port, names[p], names[a], names[b], names[c], names[w])
        for i, port, p, a, b, c, w in con.execute("SELECT id, port, protocol, ip_out, ip_from, peer_id, worker FROM rests")
    }
    out = {}
    nk = len(table.keys)
    for r in con.execute(f"SELECT {', '.join(table.columns())} FROM {table.name}"):
        key = tuple(
            names[v] if k in ("domain", "error") else rests[v] if k == "rest" else v for k, v in zip(table.keys, r[:nk])
        )
        vals = list(r[nk:])
        if table.latency:
            vals[-1] = hist_stream(vals[-1])
        out[key] = tuple(vals)
    return out


ALL_TABLES = (M, BASE[HOUR], BASE[DAY], *FAMILIES.values())


def check_all(db: Path, rows: list[Row]) -> None:
    con = sqlite3.connect(db)
    try:
        for table in ALL_TABLES:
            assert stored(con, table) == oracle(rows, table), table.name
    finally:
        con.close()


@pytest.mark.parametrize("fold_rows", [1, 500, 10**9])  # fold every drain, now and then, only at close
async def test_every_table_equals_the_rows_ingested(tmp_path: Path, fold_rows: int) -> None:
    rnd = random.Random(5)
    store = SQLiteStore(tmp_path / "s.db", fold_rows=fold_rows, fold_interval=0)
    await store.open()
    kept: list[Row] = []
    try:
        # Many-minute batches with repeated keys (grouped path)...
        for i in range(4):
            rows = rand_rows(rnd, 300, 3 * 24 * 60)
            rows += [Row(**{f: getattr(r, f) for f in Row.__slots__}) for r in rows[:100]]  # exact repeats
            assert await store.ingest(Batch(rows=rows), f"many-{i}", T0)
            kept += rows
        # ...one-minute batches (few duplicates), some concurrent, one of them failing.
        for i in range(6):
            minute_rows = [rand_rows(rnd, 40, 1) for _ in range(4)]
            for batch_rows in minute_rows:
                shift = rnd.randrange(3 * 24 * 60) * 60
                for r in batch_rows:
                    r.ts += shift
            bad = [Row(ts=T0, domain="never.stored", count=1 << 64)]  # too big for SQLite
            results = await asyncio.gather(
                *(store.ingest(Batch(rows=b), f"one-{i}-{j}", T0) for j, b in enumerate(minute_rows)),
                store.ingest(Batch(rows=bad), f"bad-{i}", T0),
                return_exceptions=True,
            )
            assert results[:4] == [True] * 4
            assert isinstance(results[4], Exception)
            for b in minute_rows:
                kept += b
        # A replayed key changes nothing; the failed batch's key was not recorded.
        assert not await store.ingest(Batch(rows=rand_rows(rnd, 5, 10)), "many-0", T0)
        good = [Row(ts=T0 + 60, domain="never.stored", count=2)]
        assert await store.ingest(Batch(rows=good), "bad-0", T0)
        kept += good
    finally:
        await store.close()
    check_all(tmp_path / "s.db", kept)


def build_v1(db: Path, rows: list[Row]) -> None:
    """A database as the first schema wrote it: minute rows plus hour/day rollups."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in MIGRATIONS[0].split(";\n"):
            if statement.strip():
                con.execute(statement)
        con.execute("PRAGMA user_version = 1")
        ids: dict[str, int] = {"": 0}
        rest_ids: dict[tuple[Any, ...], int] = {}

        def sid(s: str) -> int:
            if s not in ids:
                ids[s] = con.execute("INSERT INTO strings (s) VALUES (?)", (s,)).lastrowid  # type: ignore[assignment]
            return ids[s]

        def rid(rest: tuple[Any, ...]) -> int:
            if rest not in rest_ids:
                rest_ids[rest] = con.execute(  # type: ignore[assignment]
                    "INSERT INTO rests (port, protocol, ip_out, ip_from, peer_id, worker) VALUES (?,?,?,?,?,?)",
                    (rest[0], *(sid(s) for s in rest[1:])),
                ).lastrowid
            return rest_ids[rest]

        def enc(k: str, v: Any) -> Any:
            return sid(v) if k in ("domain", "error") else rid(v) if k == "rest" else v

        for table, name in ((M, "m"), (BASE[HOUR], "h"), (BASE[DAY], "d")):
            for key, vals in oracle(rows, table).items():
                cols = [*table.keys, "count", "bytes_sent", "bytes_received", "error_count", "duration_ms", "conn_ms",
                        "max_concurrency", "duration_max_ms"] + (["first_ts", "last_ts"] if table.spans else []) + ["latency"]  # fmt: skip
                params = [enc(k, v) for k, v in zip(table.keys, key)] + list(vals[:-1])
                params.append(msgpack.packb(vals[-1]) if vals[-1] else None)
                con.execute(f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})", params)
    finally:
        con.close()


async def test_v1_database_is_migrated_with_its_rollups(tmp_path: Path) -> None:
    rows = rand_rows(random.Random(8), 800, 2 * 24 * 60)
    db = tmp_path / "v1.db"
    build_v1(db, rows)
    store = SQLiteStore(db)
    await store.open()
    try:
        more = rand_rows(random.Random(9), 200, 2 * 24 * 60)
        assert await store.ingest(Batch(rows=more), "after-migration", T0)
    finally:
        await store.close()
    check_all(db, rows + more)
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        con.close()


@pytest.mark.parametrize(
    "filt",
    [Filter(), Filter(order_id=2), Filter(domain="b.org"), Filter(user_id=3), Filter(order_id=1, domain="a.com")],
)
async def test_chart_from_rollups_equals_chart_from_minutes(tmp_path: Path, filt: Filter) -> None:
    rows = rand_rows(random.Random(12), 1500, 3 * 24 * 60)
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        assert await store.ingest(Batch(rows=rows), "k", T0)
        start, end = T0 + 7 * 60 + 13, T0 + 3 * DAY - 3 * HOUR - 120
        coarse = chart_plan(start, end, DAY, UTC)
        assert {s.level for s in coarse.segments} == {MINUTE, HOUR, DAY}
        by_day = await store.chart(coarse, filt, with_latency=True)
    finally:
        await store.close()
    # Oracle: the ingested rows inside [ceil(start), ceil(end)) that match the filter.
    expected: dict[int, list[Any]] = {}
    for r in rows:
        if not start <= r.ts < end:
            continue
        wanted = (("user_id", filt.user_id), ("order_id", filt.order_id), ("domain", filt.domain))
        if any(v is not None and getattr(r, k) != v for k, v in wanted):
            continue
        i = (r.ts - T0) // DAY
        acc = expected.setdefault(i, [0, 0, 0, {}])
        acc[0] += r.count
        acc[1] += r.bytes_received
        acc[2] = max(acc[2], r.duration_max_ms)
        for b, c in r.latency.items():
            acc[3][b] = acc[3].get(b, 0) + c
    assert {i: [t.count, t.bytes_received, t.duration_max_ms, t.latency] for i, t in by_day.items()} == expected


@pytest.mark.parametrize("filt", [Filter(), Filter(domain="a.com"), Filter(order_id=2), Filter(user_id=1)])
async def test_errors_and_domains_from_rollups_equal_the_rows(tmp_path: Path, filt: Filter) -> None:
    rnd = random.Random(21)
    rows = rand_rows(rnd, 2000, 3 * 24 * 60)
    for r in rows[:300]:  # many equal counts, so the sample ranking meets ties
        r.error, r.error_count = "timeout", 1
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        assert await store.ingest(Batch(rows=rows), "k", T0)
        start, end = T0 + 7 * 60 + 13, T0 + 3 * DAY - 3 * HOUR - 120  # minute, hour and day segments
        errors = await store.errors(start, end, filt)
        domains = await all_domains(store, start, end, filt)
    finally:
        await store.close()
    wanted = (("user_id", filt.user_id), ("order_id", filt.order_id), ("domain", filt.domain))
    inside = [r for r in rows if start <= r.ts < end and all(v is None or getattr(r, k) == v for k, v in wanted)]
    exp_err: dict[str, list[Any]] = {}
    for r in inside:
        if r.error:
            acc = exp_err.setdefault(r.error, [0, r.ts, r.ts, {}])
            acc[0] += r.error_count
            acc[1], acc[2] = min(acc[1], r.ts), max(acc[2], r.ts)
            acc[3][r.domain] = acc[3].get(r.domain, 0) + r.error_count
    got_err = {}
    for e, t in errors.items():
        samples = sorted(((d, n) for d, n in t.by_domain.items() if d), key=lambda it: (-it[1], it[0]))[:3]
        got_err[e] = [t.total_errors, t.first_ts, t.last_ts, samples]
    for acc in exp_err.values():
        acc[3] = sorted(((d, n) for d, n in acc[3].items() if d), key=lambda it: (-it[1], it[0]))[:3]
    assert got_err == exp_err
    exp_dom: dict[str, list[int]] = {}
    for r in inside:
        if r.domain:
            acc2 = exp_dom.setdefault(r.domain, [0, 0, 0, r.ts, r.ts])
            acc2[0] += r.count
            acc2[1] += r.bytes_sent + r.bytes_received
            acc2[2] += r.error_count
            acc2[3], acc2[4] = min(acc2[3], r.ts), max(acc2[4], r.ts)
    got_dom = {d: [t.count, t.bytes_sent + t.bytes_received, t.error_count, t.first_ts, t.last_ts] for d, t in domains.items()}
    assert got_dom == exp_dom


async def test_a_fold_overflowing_int64_saturates_row_by_row(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Two bodies, each under 2**63-1 per day, together past it in the hour and day
    # rollups: the grouped fold cannot sum them, the row-by-row fold saturates.
    big = 2**53 - 1
    bodies = [[Row(ts=T0 + 600 + 60 * b, domain=f"d{i}.com", user_id=1 + i % 2, count=1, bytes_sent=big,
                   latency={3: 1}) for i in range(600)] for b in range(2)]
    store = SQLiteStore(tmp_path / "s.db", fold_rows=10**9, fold_interval=0)
    await store.open()
    try:
        for b, rows in enumerate(bodies):
            assert await store.ingest(Batch(rows=rows), f"b{b}", T0)
        day = await store.chart(chart_plan(T0, T0 + DAY, DAY, UTC), Filter(), with_latency=True)
        assert [(t.count, t.bytes_sent, t.latency) for t in day.values()] == [(1200, INT64_MAX, {3: 1200})]
        assert "folding row by row" in caplog.text
    finally:
        await store.close()
    check_all(tmp_path / "s.db", bodies[0] + bodies[1])


async def test_every_row_query_sees_staged_rows_before_any_fold(tmp_path: Path) -> None:
    # Nothing folds by itself (no row limit, no timer): whatever a query answers from
    # the minute rows must still count every acknowledged row, the Webshare hourly
    # stats included.
    rows = [Row(ts=T0 + 60 * i, user_id=5, domain="a.com", protocol="HTTP", ip_out="198.51.100.1", count=2,
                bytes_sent=10, bytes_received=100, error="timeout" if i % 3 == 0 else "",
                error_count=1 if i % 3 == 0 else 0, conn_ms=1000) for i in range(90)]
    store = SQLiteStore(tmp_path / "s.db", fold_rows=10**9, fold_interval=0)
    await store.open()
    try:
        assert await store.ingest(Batch(rows=rows), "k", T0)
        plan = chart_plan(T0, T0 + 2 * HOUR, HOUR, UTC)
        stats = await store.hourly_stats(plan, Filter(user_id=5))
        assert [(i, s.count, s.bytes_sent, s.bytes_received, s.error_count, s.conn_ms, s.errors, s.proxies)
                for i, s in sorted(stats.items())] == [
            (0, 120, 600, 6000, 20, 60_000, {"timeout": 20}, {"198.51.100.1": 120}),
            (1, 60, 300, 3000, 10, 30_000, {"timeout": 10}, {"198.51.100.1": 60}),
        ]
        chart = await store.chart(plan, Filter(domain="a.com"))
        assert [(i, t.count) for i, t in sorted(chart.items())] == [(0, 120), (1, 60)]
    finally:
        await store.close()


# The child ingests (rows staged and acknowledged), then folds and is killed with
# SIGKILL just before or just after the COMMIT of the fold's write transaction (the
# rollups written, the staged rows deleted).
_KILLED_CHILD = """
import asyncio, os, random, signal, sys
from agent.wire.batch import Batch
from collector.storage.sqlite import SQLiteStore
from tests.collector.test_rollups import rand_rows

db, when = sys.argv[1], sys.argv[2]

class KilledAtCommit:
    # the fold's connection, killing the process at the COMMIT of its write transaction
    def __init__(self, con):
        self.con = con
        self.writing = False
    def execute(self, sql, *args):
        self.writing = self.writing or sql == "BEGIN IMMEDIATE"
        at_commit = self.writing and sql == "COMMIT"
        if at_commit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = self.con.execute(sql, *args)
        if at_commit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    def __getattr__(self, name):
        return getattr(self.con, name)

async def main():
    store = SQLiteStore(db, fold_rows=10**9, fold_interval=0)
    await store.open()
    rnd = random.Random(31)
    for i in range(4):
        assert await store.ingest(Batch(rows=rand_rows(rnd, 300, 2 * 24 * 60)), f"k{i}", 0)
    store._f = KilledAtCommit(store._f)  # the fold's own connection
    await store._fold_staged()

asyncio.run(main())
"""


@pytest.mark.parametrize("when", ["before", "after"])
async def test_killed_around_the_fold_commit_every_row_counts_once(tmp_path: Path, when: str) -> None:
    db = tmp_path / "s.db"
    child = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(db), when], cwd=REPO, capture_output=True, timeout=120)
    assert child.returncode == -9, child.stderr.decode()
    rnd = random.Random(31)
    batches = [rand_rows(rnd, 300, 2 * 24 * 60) for _ in range(4)]
    con = sqlite3.connect(db)
    try:  # killed before: every row still staged, none folded; after: the reverse
        staged, minutes = con.execute("SELECT (SELECT count(*) FROM stage), (SELECT count(*) FROM m)").fetchone()
    finally:
        con.close()
    assert (staged > 0, minutes > 0) == ((True, False) if when == "before" else (False, True))
    store = SQLiteStore(db, fold_rows=10**9, fold_interval=0)
    await store.open()
    try:
        for i, rows in enumerate(batches):  # the agent resends: every key is known
            assert not await store.ingest(Batch(rows=rows), f"k{i}", 0)
        more = rand_rows(rnd, 200, 2 * 24 * 60)
        assert await store.ingest(Batch(rows=more), "k-more", 0)
    finally:
        await store.close()
    check_all(db, [r for b in batches for r in b] + more)
