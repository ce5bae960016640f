"""The SQLite backend of Store.

Strategy
- WAL mode; ONE writer connection owned by one thread (a single-worker executor), so
  writes are serialised without locks or SQLITE_BUSY; queries run on a small pool of
  read-only connections (other threads), each query in one read transaction (a
  consistent snapshot). Nothing blocking ever runs on the event loop.
- Strings (domain, error, protocol, IPs, peer, worker) are integer-coded through the
  `strings` dictionary table; the FonProxy dimensions no query filters on (port,
  protocol, ip_out, ip_from, peer_id, worker) are coded together as one `rests` tuple id.
  Id 0 is the empty string. Ids never change, so both sides cache them in memory.
- Tables: `m` one row per (minute, user, order, domain, error, rest); rollups `h` (UTC
  hour) and `d` (UTC day) per (start, user, order, domain, error) with first/last minute
  seen. All are WITHOUT ROWID tables whose primary key leads with time. Every ingest
  upserts the minute rows AND the rollups in the same transaction as its idempotency
  key, pre-merging the batch in memory first, so the rollups always equal the minute
  rows they summarise (a test checks this) and long ranges never read minute rows.
- Concurrency profiles: per (minute, level, user, order) the per-second active counts
  summed over workers (`conc_m.secs`, 60 int64 little-endian) and their peak, at four
  filter levels: 0 all, 1 user, 2 order, 3 user+order. A delta adds to the seconds and
  recomputes the minute peak; since counts only grow, hour/day peaks (`conc_h`,
  `conc_d`) are maintained by max().
- Schema migrations are numbered; PRAGMA user_version holds the applied count.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import struct
import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from agent.wire import histogram
from agent.wire.batch import SECONDS_PER_MINUTE, Batch
from agent.wire.logfmt import kv
from collector.model import ErrorTotals, Filter, Totals
from collector.plan import DAY, HOUR, MINUTE, ChartPlan, breakdown_cover, floor_to
from collector.store import StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

_COUNTERS = "count, bytes_sent, bytes_received, error_count, duration_ms, conn_ms, max_concurrency, duration_max_ms"
_COUNTER_COLS = """count INTEGER NOT NULL, bytes_sent INTEGER NOT NULL, bytes_received INTEGER NOT NULL,
    error_count INTEGER NOT NULL, duration_ms INTEGER NOT NULL, conn_ms INTEGER NOT NULL,
    max_concurrency INTEGER NOT NULL, duration_max_ms INTEGER NOT NULL"""


def _rollup_ddl(name: str) -> str:
    return f"""
CREATE TABLE {name} (
    ts INTEGER NOT NULL, user_id INTEGER NOT NULL, order_id INTEGER NOT NULL,
    domain INTEGER NOT NULL, error INTEGER NOT NULL,
    {_COUNTER_COLS},
    first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL, latency BLOB,
    PRIMARY KEY (ts, user_id, order_id, domain, error)
) WITHOUT ROWID;
CREATE INDEX {name}_user ON {name}(user_id, ts);
"""


def _conc_ddl(name: str, secs: bool) -> str:
    return f"""
CREATE TABLE {name} (
    lvl INTEGER NOT NULL, user_id INTEGER NOT NULL, order_id INTEGER NOT NULL, ts INTEGER NOT NULL,
    {"secs BLOB NOT NULL," if secs else ""} peak INTEGER NOT NULL,
    PRIMARY KEY (lvl, user_id, order_id, ts)
) WITHOUT ROWID;
"""


MIGRATIONS: tuple[str, ...] = (
    f"""
CREATE TABLE strings (id INTEGER PRIMARY KEY, s TEXT NOT NULL UNIQUE);
INSERT INTO strings (id, s) VALUES (0, '');
CREATE TABLE rests (
    id INTEGER PRIMARY KEY, port INTEGER NOT NULL, protocol INTEGER NOT NULL,
    ip_out INTEGER NOT NULL, ip_from INTEGER NOT NULL, peer_id INTEGER NOT NULL, worker INTEGER NOT NULL,
    UNIQUE (port, protocol, ip_out, ip_from, peer_id, worker)
);
CREATE TABLE m (
    ts INTEGER NOT NULL, user_id INTEGER NOT NULL, order_id INTEGER NOT NULL,
    domain INTEGER NOT NULL, error INTEGER NOT NULL, rest INTEGER NOT NULL,
    {_COUNTER_COLS}, latency BLOB,
    PRIMARY KEY (ts, user_id, order_id, domain, error, rest)
) WITHOUT ROWID;
{_rollup_ddl("h")}
{_rollup_ddl("d")}
{_conc_ddl("conc_m", True)}
{_conc_ddl("conc_h", False)}
{_conc_ddl("conc_d", False)}
CREATE TABLE idem (key TEXT PRIMARY KEY, applied_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX idem_time ON idem(applied_at);
""",
)

ROW_TABLES = {MINUTE: "m", HOUR: "h", DAY: "d"}
CONC_TABLES = {MINUTE: "conc_m", HOUR: "conc_h", DAY: "conc_d"}
_SECS = struct.Struct(f"<{SECONDS_PER_MINUTE}q")

_M_UPSERT = f"""
INSERT INTO m (ts, user_id, order_id, domain, error, rest, {_COUNTERS}, latency)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (ts, user_id, order_id, domain, error, rest) DO UPDATE SET
    count = count + excluded.count, bytes_sent = bytes_sent + excluded.bytes_sent,
    bytes_received = bytes_received + excluded.bytes_received,
    error_count = error_count + excluded.error_count, duration_ms = duration_ms + excluded.duration_ms,
    conn_ms = conn_ms + excluded.conn_ms,
    max_concurrency = max(max_concurrency, excluded.max_concurrency),
    duration_max_ms = max(duration_max_ms, excluded.duration_max_ms),
    latency = hist_merge(latency, excluded.latency)
"""


def _rollup_upsert(table: str) -> str:
    return f"""
INSERT INTO {table} (ts, user_id, order_id, domain, error, {_COUNTERS}, first_ts, last_ts, latency)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (ts, user_id, order_id, domain, error) DO UPDATE SET
    count = count + excluded.count, bytes_sent = bytes_sent + excluded.bytes_sent,
    bytes_received = bytes_received + excluded.bytes_received,
    error_count = error_count + excluded.error_count, duration_ms = duration_ms + excluded.duration_ms,
    conn_ms = conn_ms + excluded.conn_ms,
    max_concurrency = max(max_concurrency, excluded.max_concurrency),
    duration_max_ms = max(duration_max_ms, excluded.duration_max_ms),
    first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts),
    latency = hist_merge(latency, excluded.latency)
"""


def _peak_upsert(table: str) -> str:
    return f"""
INSERT INTO {table} (lvl, user_id, order_id, ts, peak) VALUES (?,?,?,?,?)
ON CONFLICT (lvl, user_id, order_id, ts) DO UPDATE SET peak = max(peak, excluded.peak)
"""


# Packing happens only on the writer thread (ingest and the hist_merge UDF), so one
# reusable Packer is safe and saves building one per call.
_packer = msgpack.Packer()


def hist_pack(h: histogram.Histogram) -> bytes | None:
    """A histogram as a msgpack map {bucket index: count} (C-speed both ways)."""
    return _packer.pack(h) if h else None


def hist_unpack(blob: bytes | None) -> histogram.Histogram:
    if not blob:
        return {}
    out: histogram.Histogram = msgpack.unpackb(blob, strict_map_key=False)
    return out


def _hist_merge(a: bytes | None, b: bytes | None) -> bytes | None:
    if not a:
        return b
    if not b:
        return a
    return hist_pack(histogram.add(hist_unpack(a), hist_unpack(b)))


def peak_level(filt: Filter) -> tuple[int, int, int]:
    """(lvl, user_id, order_id) of the profile sums matching a domain-free filter."""
    if filt.user_id is not None and filt.order_id is not None:
        return 3, filt.user_id, filt.order_id
    if filt.user_id is not None:
        return 1, filt.user_id, 0
    if filt.order_id is not None:
        return 2, 0, filt.order_id
    return 0, 0, 0


class SQLiteStore:
    def __init__(
        self,
        path: str | Path,
        *,
        retention_days: int = 90,
        idempotency_days: int = 7,
        synchronous: str = "full",
        readers: int = 4,
        cache_mib: int = 64,
    ) -> None:
        self.path = str(path)
        self.retention_days = retention_days
        self.idempotency_days = idempotency_days
        self.synchronous = synchronous.upper()
        self.cache_kib = cache_mib * 1024
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
        self._w: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._strings: dict[str, int] = {}
        self._rests: dict[tuple[int, str, str, str, str, str], int] = {}

    # ---- plumbing -----------------------------------------------------------------

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except sqlite3.Error as exc:
            log.error("sqlite failed", extra=kv(error=str(exc), path=self.path))
            raise StoreError(f"storage error: {exc}") from exc

    def _write(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        return self._on(self._writer_pool, fn, *args)  # type: ignore[return-value]

    def _read(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        return self._on(self._reader_pool, self._in_snapshot, fn, *args)  # type: ignore[return-value]

    def _in_snapshot(self, fn: Callable[..., T], *args: Any) -> T:
        con = self._reader()
        con.execute("BEGIN")
        try:
            return fn(con, *args)
        finally:
            con.execute("COMMIT")

    def _reader(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            con.execute(f"PRAGMA cache_size = -{self.cache_kib}")
            con.execute("PRAGMA mmap_size = 268435456")
            self._local.con = con
            self._local.names = {0: ""}
            with self._readers_lock:
                self._readers.append(con)
        return con

    # ---- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        await self._write(self._open_writer)
        log.info("store opened", extra=kv(path=self.path, strings=len(self._strings), rests=len(self._rests)))

    def _open_writer(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode = WAL")
        con.execute(f"PRAGMA synchronous = {self.synchronous}")
        con.execute(f"PRAGMA cache_size = -{self.cache_kib}")
        con.execute("PRAGMA journal_size_limit = 67108864")
        con.execute("PRAGMA busy_timeout = 5000")
        con.create_function("hist_merge", 2, _hist_merge, deterministic=True)
        self._migrate(con)
        self._strings = {s: i for i, s in con.execute("SELECT id, s FROM strings")}
        names = {i: s for s, i in self._strings.items()}
        self._rests = {
            (port, names[p], names[a], names[b], names[c], names[w]): i
            for i, port, p, a, b, c, w in con.execute(
                "SELECT id, port, protocol, ip_out, ip_from, peer_id, worker FROM rests"
            )
        }
        self._w = con

    @staticmethod
    def _migrate(con: sqlite3.Connection) -> None:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"database schema version {version} is newer than this collector ({len(MIGRATIONS)})")
        for number in range(version, len(MIGRATIONS)):
            con.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[number].split(";\n"):
                    if statement.strip():
                        con.execute(statement)
                con.execute(f"PRAGMA user_version = {number + 1}")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            log.info("schema migrated", extra=kv(version=number + 1))

    async def close(self) -> None:
        if self._w is not None:
            await self._write(self._close_writer)
        self._reader_pool.shutdown(wait=True)
        self._writer_pool.shutdown(wait=True)
        with self._readers_lock:
            for con in self._readers:
                con.close()
            self._readers.clear()

    def _close_writer(self) -> None:
        assert self._w is not None
        try:
            self._w.execute("PRAGMA optimize")
        finally:
            self._w.close()
            self._w = None

    async def ping(self) -> None:
        await self._read(lambda con: con.execute("SELECT 1").fetchone())

    async def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    # ---- ingest -------------------------------------------------------------------

    async def ingest(self, batch: Batch, idempotency_key: str | None, now: int) -> bool:
        return await self._write(self._ingest, batch, idempotency_key, now)

    def _ingest(self, batch: Batch, key: str | None, now: int) -> bool:
        con = self._w
        assert con is not None
        new_strings: list[str] = []
        new_rests: list[tuple[int, str, str, str, str, str]] = []
        con.execute("BEGIN IMMEDIATE")
        try:
            if key is not None:
                cur = con.execute("INSERT OR IGNORE INTO idem (key, applied_at) VALUES (?, ?)", (key, now))
                if cur.rowcount == 0:
                    con.execute("ROLLBACK")
                    return False
            self._ingest_rows(con, batch, new_strings, new_rests)
            self._ingest_profiles(con, batch)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            # Ids handed out inside the rolled-back transaction do not exist on disk.
            for s in new_strings:
                self._strings.pop(s, None)
            for r in new_rests:
                self._rests.pop(r, None)
            raise
        return True

    def _sid(self, con: sqlite3.Connection, s: str, new: list[str]) -> int:
        i = self._strings.get(s)
        if i is None:
            i = con.execute("INSERT INTO strings (s) VALUES (?)", (s,)).lastrowid
            assert i is not None
            self._strings[s] = i
            new.append(s)
        return i

    def _ingest_rows(
        self,
        con: sqlite3.Connection,
        batch: Batch,
        new_strings: list[str],
        new_rests: list[tuple[int, str, str, str, str, str]],
    ) -> None:
        if not batch.rows:
            return
        strings, rests = self._strings, self._rests
        minutes: dict[tuple[int, int, int, int, int, int], list[Any]] = {}
        for r in batch.rows:
            d = strings.get(r.domain)
            if d is None:
                d = self._sid(con, r.domain, new_strings)
            e = strings.get(r.error)
            if e is None:
                e = self._sid(con, r.error, new_strings)
            rk = (r.port, r.protocol, r.ip_out, r.ip_from, r.peer_id, r.worker)
            rest = rests.get(rk)
            if rest is None:
                ids = [self._sid(con, s, new_strings) for s in rk[1:]]
                rest = con.execute(
                    "INSERT INTO rests (port, protocol, ip_out, ip_from, peer_id, worker) VALUES (?,?,?,?,?,?)",
                    (r.port, *ids),
                ).lastrowid
                assert rest is not None
                rests[rk] = rest
                new_rests.append(rk)
            key = (r.ts, r.user_id, r.order_id, d, e, rest)
            acc = minutes.get(key)
            if acc is None:
                minutes[key] = [
                    r.count, r.bytes_sent, r.bytes_received, r.error_count, r.duration_ms, r.conn_ms,
                    r.max_concurrency, r.duration_max_ms, dict(r.latency) if r.latency else None,
                ]  # fmt: skip
            else:
                acc[0] += r.count
                acc[1] += r.bytes_sent
                acc[2] += r.bytes_received
                acc[3] += r.error_count
                acc[4] += r.duration_ms
                acc[5] += r.conn_ms
                if r.max_concurrency > acc[6]:
                    acc[6] = r.max_concurrency
                if r.duration_max_ms > acc[7]:
                    acc[7] = r.duration_max_ms
                if r.latency:
                    acc[8] = histogram.add(acc[8] or {}, r.latency)
        con.executemany(_M_UPSERT, [(*k, *v[:8], hist_pack(v[8]) if v[8] else None) for k, v in minutes.items()])
        hours = self._roll(minutes, HOUR)
        con.executemany(_rollup_upsert("h"), self._rollup_params(hours))
        days = self._roll_rollup(hours, DAY)
        con.executemany(_rollup_upsert("d"), self._rollup_params(days))

    @staticmethod
    def _roll(
        minutes: dict[tuple[int, int, int, int, int, int], list[Any]], step: int
    ) -> dict[tuple[int, int, int, int, int], list[Any]]:
        out: dict[tuple[int, int, int, int, int], list[Any]] = {}
        for (ts, u, o, d, e, _rest), v in minutes.items():
            key = (ts - ts % step, u, o, d, e)
            acc = out.get(key)
            if acc is None:
                out[key] = [*v[:8], ts, ts, dict(v[8]) if v[8] else None]
            else:
                _merge_acc(acc, v, ts, ts)
        return out

    @staticmethod
    def _roll_rollup(
        rows: dict[tuple[int, int, int, int, int], list[Any]], step: int
    ) -> dict[tuple[int, int, int, int, int], list[Any]]:
        out: dict[tuple[int, int, int, int, int], list[Any]] = {}
        for (ts, u, o, d, e), v in rows.items():
            key = (ts - ts % step, u, o, d, e)
            acc = out.get(key)
            if acc is None:
                out[key] = [*v[:10], dict(v[10]) if v[10] else None]
            else:
                _merge_acc(acc, v[:8] + [v[10]], v[8], v[9])
        return out

    @staticmethod
    def _rollup_params(rows: dict[tuple[int, int, int, int, int], list[Any]]) -> list[tuple[Any, ...]]:
        return [(*k, *v[:10], hist_pack(v[10]) if v[10] else None) for k, v in rows.items()]

    def _ingest_profiles(self, con: sqlite3.Connection, batch: Batch) -> None:
        if not batch.profiles:
            return
        deltas: dict[tuple[int, int, int, int], list[int]] = {}
        for p in batch.profiles:
            for key in ((0, 0, 0, p.ts), (1, p.user_id, 0, p.ts), (2, 0, p.order_id, p.ts), (3, p.user_id, p.order_id, p.ts)):
                acc = deltas.get(key)
                if acc is None:
                    deltas[key] = list(p.active)
                else:
                    for i, v in enumerate(p.active):
                        acc[i] += v
        minute_rows: list[tuple[int, int, int, int, bytes, int]] = []
        for key, delta in deltas.items():
            old = con.execute(
                "SELECT secs FROM conc_m WHERE lvl = ? AND user_id = ? AND order_id = ? AND ts = ?", key
            ).fetchone()
            secs = [a + b for a, b in zip(_SECS.unpack(old[0]), delta)] if old else delta
            minute_rows.append((*key, _SECS.pack(*secs), max(secs)))
        con.executemany(
            "INSERT OR REPLACE INTO conc_m (lvl, user_id, order_id, ts, secs, peak) VALUES (?,?,?,?,?,?)", minute_rows
        )
        for step, table in ((HOUR, "conc_h"), (DAY, "conc_d")):
            peaks: dict[tuple[int, int, int, int], int] = {}
            for lvl, u, o, ts, _secs, peak in minute_rows:
                k = (lvl, u, o, ts - ts % step)
                if peak > peaks.get(k, -1):
                    peaks[k] = peak
            con.executemany(_peak_upsert(table), [(*k, v) for k, v in peaks.items()])

    # ---- retention ----------------------------------------------------------------

    async def retention(self, now: int) -> dict[str, int]:
        cutoff = floor_to(now - self.retention_days * DAY, MINUTE)
        deleted: dict[str, int] = {}
        jobs: list[tuple[str, str, int]] = [
            ("m", "ts", cutoff),
            ("h", "ts", floor_to(cutoff, HOUR)),
            ("d", "ts", floor_to(cutoff, DAY)),
            ("conc_m", "ts", cutoff),
            ("conc_h", "ts", floor_to(cutoff, HOUR)),
            ("conc_d", "ts", floor_to(cutoff, DAY)),
            ("idem", "applied_at", now - max(self.idempotency_days, 7) * DAY),
        ]
        for table, column, before in jobs:
            # One hour per transaction for time-led tables, so ingests interleave.
            total = 0
            while True:
                n, more = await self._write(self._delete_chunk, table, column, before)
                total += n
                if not more:
                    break
            deleted[table] = total
        if any(deleted.values()):
            log.info("retention applied", extra=kv(**deleted))
        return deleted

    def _delete_chunk(self, table: str, column: str, before: int) -> tuple[int, bool]:
        con = self._w
        assert con is not None
        oldest = con.execute(f"SELECT min({column}) FROM {table}").fetchone()[0]
        if oldest is None or oldest >= before:
            return 0, False
        limit = min(before, oldest + HOUR) if table in ("m", "h", "d") else before
        con.execute("BEGIN IMMEDIATE")
        try:
            n = con.execute(f"DELETE FROM {table} WHERE {column} < ?", (limit,)).rowcount
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return n, limit < before

    # ---- queries ------------------------------------------------------------------

    @staticmethod
    def _where(filt: Filter, domain_id: int | None) -> tuple[str, list[int]]:
        parts, args = [], []
        if filt.user_id is not None:
            parts.append("user_id = ?")
            args.append(filt.user_id)
        if filt.order_id is not None:
            parts.append("order_id = ?")
            args.append(filt.order_id)
        if domain_id is not None:
            parts.append("domain = ?")
            args.append(domain_id)
        return "".join(" AND " + p for p in parts), args

    @staticmethod
    def _domain_id(con: sqlite3.Connection, filt: Filter) -> tuple[bool, int | None]:
        """(any rows can match, domain id or None)."""
        if filt.domain is None:
            return True, None
        row = con.execute("SELECT id FROM strings WHERE s = ?", (filt.domain,)).fetchone()
        return (row is not None), (row[0] if row else None)

    def _names(self, con: sqlite3.Connection, ids: Sequence[int]) -> dict[int, str]:
        names: dict[int, str] = self._local.names
        missing = [i for i in set(ids) if i not in names]
        for n in range(0, len(missing), 500):
            part = missing[n : n + 500]
            marks = ",".join("?" * len(part))
            names.update(con.execute(f"SELECT id, s FROM strings WHERE id IN ({marks})", part))
        return names

    @staticmethod
    def _span_cols(level: int) -> str:
        return "min(ts), max(ts)" if level == MINUTE else "min(first_ts), max(last_ts)"

    async def chart(
        self, plan: ChartPlan, filt: Filter, *, with_latency: bool = False, with_peaks: bool = False
    ) -> dict[int, Totals]:
        return await self._read(self._chart, plan, filt, with_latency, with_peaks)

    def _chart(self, con: sqlite3.Connection, plan: ChartPlan, filt: Filter, with_latency: bool, with_peaks: bool) -> dict[int, Totals]:
        ok, domain_id = self._domain_id(con, filt)
        buckets: dict[int, Totals] = {}
        if not ok:
            return buckets
        where, args = self._where(filt, domain_id)
        edges = plan.edges

        def bucket(ts: int) -> Totals:
            i = bisect_right(edges, ts) - 1
            t = buckets.get(i)
            if t is None:
                t = buckets[i] = Totals()
            return t

        for seg in plan.segments:
            table = ROW_TABLES[seg.level]
            sql = (
                f"SELECT ts, sum(count), sum(bytes_sent), sum(bytes_received), sum(error_count), "
                f"sum(duration_ms), sum(conn_ms), max(max_concurrency), max(duration_max_ms), "
                f"{self._span_cols(seg.level)} FROM {table} WHERE ts >= ? AND ts < ?{where} GROUP BY ts"
            )
            for row in con.execute(sql, (seg.start, seg.end, *args)):
                bucket(row[0]).add_sums(*row[1:])
            if with_latency:
                sql = f"SELECT ts, latency FROM {table} WHERE ts >= ? AND ts < ?{where} AND latency IS NOT NULL"
                for ts, blob in con.execute(sql, (seg.start, seg.end, *args)):
                    histogram.add(bucket(ts).latency, hist_unpack(blob))
            if with_peaks and filt.domain is None:
                lvl, u, o = peak_level(filt)
                sql = (
                    f"SELECT ts, max(peak) FROM {CONC_TABLES[seg.level]} "
                    "WHERE lvl = ? AND user_id = ? AND order_id = ? AND ts >= ? AND ts < ? GROUP BY ts"
                )
                for ts, peak in con.execute(sql, (lvl, u, o, seg.start, seg.end)):
                    bucket(ts).add_peak(peak)
        return buckets

    async def domains(self, start: int, end: int, filt: Filter) -> dict[str, Totals]:
        return await self._read(self._domains, start, end, filt)

    def _domains(self, con: sqlite3.Connection, start: int, end: int, filt: Filter) -> dict[str, Totals]:
        ok, domain_id = self._domain_id(con, filt)
        by_id: dict[int, Totals] = {}
        if not ok:
            return {}
        where, args = self._where(filt, domain_id)
        for seg in breakdown_cover(start, end):
            sql = (
                f"SELECT domain, sum(count), sum(bytes_sent), sum(bytes_received), sum(error_count), "
                f"sum(duration_ms), sum(conn_ms), max(max_concurrency), max(duration_max_ms), "
                f"{self._span_cols(seg.level)} FROM {ROW_TABLES[seg.level]} "
                f"WHERE ts >= ? AND ts < ?{where} AND domain != 0 GROUP BY domain"
            )
            for row in con.execute(sql, (seg.start, seg.end, *args)):
                t = by_id.get(row[0])
                if t is None:
                    t = by_id[row[0]] = Totals()
                t.add_sums(*row[1:])
        names = self._names(con, list(by_id))
        return {names[i]: t for i, t in by_id.items()}

    async def errors(self, start: int, end: int, filt: Filter) -> dict[str, ErrorTotals]:
        return await self._read(self._errors, start, end, filt)

    def _errors(self, con: sqlite3.Connection, start: int, end: int, filt: Filter) -> dict[str, ErrorTotals]:
        ok, domain_id = self._domain_id(con, filt)
        if not ok:
            return {}
        where, args = self._where(filt, domain_id)
        rows: list[tuple[int, int, int, int, int]] = []
        for seg in breakdown_cover(start, end):
            sql = (
                f"SELECT error, domain, sum(error_count), {self._span_cols(seg.level)} "
                f"FROM {ROW_TABLES[seg.level]} WHERE ts >= ? AND ts < ?{where} AND error != 0 GROUP BY error, domain"
            )
            rows.extend(con.execute(sql, (seg.start, seg.end, *args)))
        names = self._names(con, [r[0] for r in rows] + [r[1] for r in rows])
        out: dict[str, ErrorTotals] = {}
        for e, d, n, first, last in rows:
            t = out.get(names[e])
            if t is None:
                t = out[names[e]] = ErrorTotals()
            t.add(names[d], n, first, last)
        return out


def _merge_acc(acc: list[Any], v: list[Any], first: int, last: int) -> None:
    """Merge counters v[0:8] and histogram v[8] into a rollup accumulator."""
    acc[0] += v[0]
    acc[1] += v[1]
    acc[2] += v[2]
    acc[3] += v[3]
    acc[4] += v[4]
    acc[5] += v[5]
    if v[6] > acc[6]:
        acc[6] = v[6]
    if v[7] > acc[7]:
        acc[7] = v[7]
    if first < acc[8]:
        acc[8] = first
    if last > acc[9]:
        acc[9] = last
    if v[8]:
        acc[10] = histogram.add(acc[10] or {}, v[8])
