"""The SQLite store: rollups equal the minute rows, retention, schema version, reopen."""

from __future__ import annotations

import inspect
import random
import sqlite3
from collections import defaultdict
from pathlib import Path

import msgpack

from agent.wire.batch import Batch, Profile, Row
from collector.model import Filter
from tests.collector.conftest import all_domains
from collector.plan import DAY, chart_plan, UTC
from collector.storage.sqlite import MIGRATIONS, SQLiteStore
from collector.storage.base import Store

T0 = 1773532800  # 2026-03-15 00:00:00 UTC


def random_rows(rnd: random.Random, n: int) -> list[Row]:
    rows = []
    for _ in range(n):
        ts = T0 + rnd.randrange(3 * 24 * 60) * 60
        lat = {rnd.randrange(0, 80): rnd.randrange(1, 5) for _ in range(rnd.randrange(0, 3))}
        rows.append(
            Row(
                ts=ts,
                user_id=rnd.choice([1, 2]),
                order_id=rnd.choice([1, 2]),
                domain=rnd.choice(["a.com", "b.com", "c.com"]),
                error=rnd.choice(["", "", "timeout"]),
                worker=rnd.choice(["w1", "w2"]),
                count=rnd.randrange(1, 9),
                bytes_sent=rnd.randrange(1000),
                bytes_received=rnd.randrange(1000),
                error_count=rnd.randrange(3),
                duration_ms=rnd.randrange(5000),
                conn_ms=rnd.randrange(60000),
                max_concurrency=rnd.randrange(30),
                duration_max_ms=rnd.randrange(5000),
                latency=lat,
            )
        )
    return rows


def hist(blob: bytes | None) -> dict[int, int]:
    """A stored histogram: a msgpack stream of {bucket: count} maps, summed."""
    out: dict[int, int] = {}
    if blob:
        unpacker = msgpack.Unpacker(strict_map_key=False)
        unpacker.feed(blob)
        for part in unpacker:
            for b, c in part.items():
                out[b] = out.get(b, 0) + c
    return out


def oracle_rollup(con: sqlite3.Connection, step: int) -> dict[tuple[int, ...], tuple[object, ...]]:
    """The rollup computed straight from the minute table."""
    out: dict[tuple[int, ...], list[object]] = {}
    for r in con.execute(
        "SELECT ts, user_id, order_id, domain, error, count, bytes_sent, bytes_received, error_count, "
        "duration_ms, conn_ms, max_concurrency, duration_max_ms, latency FROM m"
    ):
        key = (r[0] - r[0] % step, *r[1:5])
        acc = out.get(key)
        if acc is None:
            out[key] = [*r[5:13], r[0], r[0], hist(r[13])]
            continue
        for i in range(6):
            acc[i] += r[5 + i]  # type: ignore[operator]
        acc[6] = max(acc[6], r[11])  # type: ignore[call-overload]
        acc[7] = max(acc[7], r[12])  # type: ignore[call-overload]
        acc[8] = min(acc[8], r[0])  # type: ignore[call-overload]
        acc[9] = max(acc[9], r[0])  # type: ignore[call-overload]
        for i, c in hist(r[13]).items():
            acc[10][i] = acc[10].get(i, 0) + c  # type: ignore[union-attr,index]
    return {k: tuple(v) for k, v in out.items()}


def stored_rollup(con: sqlite3.Connection, table: str) -> dict[tuple[int, ...], tuple[object, ...]]:
    return {
        tuple(r[:5]): (*r[5:15], hist(r[15]))
        for r in con.execute(
            f"SELECT ts, user_id, order_id, domain, error, count, bytes_sent, bytes_received, error_count, "
            f"duration_ms, conn_ms, max_concurrency, duration_max_ms, first_ts, last_ts, latency FROM {table}"
        )
    }


async def test_rollups_equal_minute_rows(tmp_path: Path) -> None:
    rnd = random.Random(11)
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        rows = random_rows(rnd, 3000)
        # Many batches, in shuffled order: late rows merge into stored minutes and rollups.
        rnd.shuffle(rows)
        for i in range(0, len(rows), 137):
            assert await store.ingest(Batch(rows=rows[i : i + 137]), f"k{i}", T0)
        # Queries whose plan reads the day/hour rollups equal those reading minutes only.
        start, end = T0 + 7 * 60 + 13, T0 + 3 * DAY - 3 * 3600 - 120
        coarse = chart_plan(start, end, DAY, UTC)
        fine = chart_plan(start, end, 60, UTC)
        assert {s.level for s in coarse.segments} == {60, 3600, DAY}
        by_day = await store.chart(coarse, Filter(order_id=2), with_latency=True)
        by_minute = await store.chart(fine, Filter(order_id=2), with_latency=True)
        summed: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        hists: dict[int, dict[int, int]] = defaultdict(dict)
        for i, t in by_minute.items():
            day = (fine.edges[i] - T0) // DAY
            acc = summed[day]
            acc[0] += t.count
            acc[1] += t.bytes_sent
            acc[2] = max(acc[2], t.duration_max_ms)
            acc[3] += t.conn_ms
            for k, v in t.latency.items():
                hists[day][k] = hists[day].get(k, 0) + v
        assert {i: [t.count, t.bytes_sent, t.duration_max_ms, t.conn_ms] for i, t in by_day.items()} == dict(summed)
        assert {i: t.latency for i, t in by_day.items()} == dict(hists)
    finally:
        await store.close()
    con = sqlite3.connect(tmp_path / "s.db")
    try:
        assert stored_rollup(con, "h") == oracle_rollup(con, 3600)
        assert stored_rollup(con, "d") == oracle_rollup(con, DAY)
        # The minute rows themselves sum to what was ingested.
        assert con.execute("SELECT sum(count), sum(bytes_sent) FROM m").fetchone() == (
            sum(r.count for r in rows),
            sum(r.bytes_sent for r in rows),
        )
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


async def test_reopen_keeps_data_and_dictionaries(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    for n in range(2):
        store = SQLiteStore(path)
        await store.open()
        try:
            await store.ingest(Batch(rows=[Row(ts=T0, domain="a.com", worker="w", count=1)]), f"k{n}", T0)
            assert not await store.ingest(Batch(rows=[Row(ts=T0, domain="a.com", count=1)]), "k0", T0)
            totals = await all_domains(store, T0, T0 + DAY, Filter())
            assert {d: t.count for d, t in totals.items()} == {"a.com": n + 1}
        finally:
            await store.close()
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT count(*) FROM strings WHERE s = 'a.com'").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM rests").fetchone() == (1,)
    finally:
        con.close()


async def test_retention_drops_old_rows_and_keeps_keys_seven_days(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", retention_days=2, idempotency_days=7)
    await store.open()
    try:
        old = Row(ts=T0 + 3600, domain="old.com", count=1)
        new = Row(ts=T0 + 3 * DAY + 60, domain="new.com", count=2)
        prof = Profile(ts=T0 + 3600, user_id=1, order_id=1, worker="w", active=[1] * 60)
        assert await store.ingest(Batch(rows=[old], profiles=[prof]), "old-key", T0)
        assert await store.ingest(Batch(rows=[new]), "new-key", T0 + 3 * DAY)
        now = T0 + 4 * DAY + 600  # cutoff = 2026-03-17 00:10: the old day is gone
        deleted = await store.retention(now)
        assert deleted["m"] == 1 and deleted["h"] == 1 and deleted["d"] == 1
        assert deleted["conc_m"] == 4 and deleted["idem"] == 0
        totals = await all_domains(store, T0, T0 + 5 * DAY, Filter())
        assert {d: t.count for d, t in totals.items()} == {"new.com": 2}
        # Keys stay 7 days: a retry of the old batch is still recognised...
        assert not await store.ingest(Batch(rows=[old]), "old-key", now)
        # ...and forgotten after.
        later = T0 + 7 * DAY + 1
        assert (await store.retention(later))["idem"] == 1
    finally:
        await store.close()


def test_sqlite_store_implements_exactly_the_store_protocol() -> None:
    # The app only calls Store's methods; a backend must offer each with the same
    # signature, as a coroutine (nothing blocking on the event loop).
    members = [n for n, v in vars(Store).items() if not n.startswith("_") and callable(v)]
    assert members == ["open", "close", "ingest", "chart", "domains", "errors", "size_bytes", "retention", "ping",
                       "activity_page", "activity_stream", "hourly_stats", "download_token", "find_download_token"]
    streams = {"activity_stream"}  # return an async iterator (each chunk read off the loop)
    for name in members:
        impl = getattr(SQLiteStore, name)
        assert inspect.iscoroutinefunction(impl) == (name not in streams), name
        assert inspect.signature(impl) == inspect.signature(getattr(Store, name)), name


def _db_pages(db: Path) -> int:
    """Pages of the database file itself (what checkpoints have copied there so far)."""
    return db.stat().st_size // 4096


FIVE_BATCHES = [random_rows(random.Random(i), 400) for i in range(5)]


async def _ingest_five(store: SQLiteStore) -> None:
    for i, rows in enumerate(FIVE_BATCHES):
        assert await store.ingest(Batch(rows=rows), f"k{i}", T0)


async def test_checkpoints_run_in_the_background_not_in_the_writer(tmp_path: Path) -> None:
    import asyncio

    db = tmp_path / "s.db"
    # Never in the background: the writer alone must not checkpoint (the WAL holds it all).
    store = SQLiteStore(db, checkpoint_interval=3600, fold_rows=1)
    await store.open()
    try:
        size0 = _db_pages(db)
        await _ingest_five(store)
        assert _db_pages(db) == size0
        assert (tmp_path / "s.db-wal").stat().st_size > 100 * 4096
        assert store.writer_checkpoints == 0
    finally:
        await store.close()
    # Every 50 ms in the background: the pages reach the database file with no ingest running.
    db2 = tmp_path / "t.db"
    store = SQLiteStore(db2, checkpoint_interval=0.05, fold_rows=1)
    await store.open()
    try:
        size0 = _db_pages(db2)
        await _ingest_five(store)
        for _ in range(100):  # bounded: 5 s at most
            if _db_pages(db2) > size0 + 100:
                break
            await asyncio.sleep(0.05)
        assert _db_pages(db2) > size0 + 100
        assert store.writer_checkpoints == 0
        got = await all_domains(store, T0, T0 + 3 * DAY, Filter())
        rows = [r for batch in FIVE_BATCHES for r in batch]
        assert {d: t.count for d, t in got.items()} == {
            d: sum(r.count for r in rows if r.domain == d) for d in {r.domain for r in rows}
        }
    finally:
        await store.close()


async def test_writer_checkpoints_when_the_wal_passes_its_limit(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SQLiteStore(db, checkpoint_interval=3600, max_wal_bytes=64 * 1024, fold_rows=1)
    await store.open()
    try:
        size0 = _db_pages(db)
        await _ingest_five(store)
        # each batch alone, folded as it arrives (fold_rows=1), writes more than 64 KiB
        assert store.writer_checkpoints >= 5
        assert _db_pages(db) > size0 + 100
    finally:
        await store.close()
    # Stopping leaves the database file whole: the WAL is checkpointed and emptied.
    wal = tmp_path / "s.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    # Everything acknowledged is there after a reopen.
    con = sqlite3.connect(db)
    n = con.execute("SELECT sum(count) FROM m").fetchone()[0]
    con.close()
    assert n == sum(r.count for batch in FIVE_BATCHES for r in batch)


async def test_checkpoint_interval_zero_leaves_checkpoints_to_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SQLiteStore(db, checkpoint_interval=0, fold_rows=1)
    await store.open()
    try:
        size0 = _db_pages(db)
        for i in range(40):  # bounded: SQLite checkpoints by itself past 1,000 WAL pages
            assert await store.ingest(Batch(rows=random_rows(random.Random(i), 1000)), f"k{i}", T0)
            if _db_pages(db) > size0 + 100:
                break
        assert _db_pages(db) > size0 + 100
        assert store.writer_checkpoints == 0
    finally:
        await store.close()


async def test_domains_are_ranked_and_paged_as_documented(tmp_path: Path) -> None:
    """Every order, with ties on each measure, across minute/hour/day segments, page by
    page, against a ranking computed here from the rows."""
    rnd = random.Random(5)
    names = [f"d{i:02d}.com" for i in range(40)] + ["Z.com", "\u00e9.com", "a.com"]
    rows = []
    for _ in range(900):
        n = rnd.choice([1, 2, 2, 3])  # few distinct values: many ties
        rows.append(Row(ts=T0 + rnd.randrange(3 * 24 * 60) * 60, domain=rnd.choice(names), count=n,
                        bytes_sent=100 * rnd.choice([0, 1]), bytes_received=100 * rnd.choice([1, 2])))
    rows.append(Row(ts=T0 + 60, domain="", count=50, bytes_received=10**6))  # never listed
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        assert await store.ingest(Batch(rows=rows), "k", T0)
        start, end = T0 + 7 * 60 + 13, T0 + 3 * DAY - 3 * 3600 - 120
        inside = [r for r in rows if start <= r.ts // 60 * 60 < end and r.ts >= (start + 59) // 60 * 60 and r.domain]
        count: dict[str, int] = defaultdict(int)
        nbytes: dict[str, int] = defaultdict(int)
        for r in inside:
            count[r.domain] += r.count
            nbytes[r.domain] += r.bytes_sent + r.bytes_received
        expected = {
            "bytes": sorted(count, key=lambda d: (-nbytes[d], -count[d], d)),
            "count": sorted(count, key=lambda d: (-count[d], -nbytes[d], d)),
            "visits": sorted(count, key=lambda d: (-count[d], d)),
        }
        assert len(set(count.values())) < len(count)  # ties were met
        for order, want in expected.items():
            got: list[str] = []
            for offset in range(0, len(want) + 10, 7):
                page = await store.domains(start, end, Filter(), order=order, limit=7, offset=offset)
                assert page.total == len(want)
                got += [d for d, _ in page.items]
                for d, t in page.items:
                    assert (t.count, t.bytes_sent + t.bytes_received) == (count[d], nbytes[d])
            assert got == want, order
        empty = await store.domains(start, end, Filter(domain="nowhere.com"), order="bytes", limit=5)
        assert (empty.items, empty.total) == ([], 0)
    finally:
        await store.close()
