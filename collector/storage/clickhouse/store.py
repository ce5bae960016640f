"""The ClickHouse backend of Store, over ClickHouse's HTTP interface.

Strategy
- Batching: `ingest` validates a batch and queues it; one flusher task takes whatever
  is queued once `insert_batch_rows` rows wait or `insert_interval` seconds passed since
  the first one, and writes it all as one flush (a few large inserts, which ClickHouse
  wants). Each caller is answered only after every insert of its flush was confirmed.
- Exactly once without transactions. A flush gets a fresh random id `fid`, and runs
      1. SELECT which of its Idempotency-Keys the ledger already holds (those: False);
      2. INSERT pending (fid, days touched)             -- the intent;
      3. INSERT the rows into m_in (tagged fid; views fill m, r_m, r_h, r_d) and the
         profiles into p (tagged fid);
      4. INSERT ledger (key, fid) for every key, plus ('', fid)  -- the commit.
  A flush is committed iff a ledger row holds its fid. One that never commits (the
  collector died after 3, or an insert failed half way) is found by `_recover` (at
  open and before the next flush after a failure): pending without ledger. It goes to
  `void` for good, and from then on (a) its keys do not count as applied, so the
  agent's retry is applied afresh under a new fid, (b) every read of p (and the
  rebuild's read of m) skips its fid (the void set is small and held in memory), and
  (c) the days it touched are rebuilt in the fid-less rollups r_m, r_h, r_d from m
  without it (drop the day partition, INSERT ... SELECT), after which `void_done`
  records it. Every step is idempotent, so a crash inside recovery only repeats it. A
  retried batch is thus a no-op if its first try committed and counted once if it did
  not, whatever the moment of a crash (tests/shell/test_clickhouse_crash.py kills the
  collector between 3 and 4, and between 4 and the answer). A query may see a flush's
  rows a moment before its ack (read uncommitted); one that then fails is taken out
  again by the recovery. Known gap: an insert that times out here but still lands on
  the server after the recovery voided its flush would leave its rows in the rollups
  until that day is rebuilt again.
- Activity records travel in the same flush, into `activity` between pending and the
  ledger, tagged with the fid; reads skip void fids as reads of p do. A record's id is
  a 63-bit hash of (fid, its index in the flush): stable (stored with it) and, since
  fids are random, unique but for hash collisions, which matter only between records
  of the same microsecond (the order is by (ts_us, id)) and so never in practice.
  Pages and download chunks are keyset reads (ORDER BY ts_us DESC, id DESC LIMIT n,
  `after` as a bound), with the count a second query of the same filters.
- Download tokens: one insert per new token into a versioned table read with argMax
  by id, so the latest token of (user, scope) wins at once; an asyncio lock makes
  "read, then insert if needed" one step (the one-collector assumption above).
- Reads: each plan segment (minute/hour/day) reads r_m/r_h/r_d, the rows of the
  family the filter needs (schema.py; the family's unused leading keys pinned, so the
  primary key narrows to the filter), grouped server-side by the coarsest grain that
  keeps every group inside one bucket (segment_grain), so one row per grain comes
  back; Python adds them into buckets exactly as the SQLite backend does. The ranked
  breakdowns keep their many groups on the server: /domains is one ranked query whose
  total is the answer's rows_before_limit_at_least; /errors returns per error its
  total and its SAMPLE_DOMAINS largest domains. Sums are Decimal128 states clamped
  at 2**63-1 on read (SQLite saturates at the same value); a batch whose own rows pass 2**63-1 within one UTC day
  is refused as SQLite refuses it. The /api/v2 hourly stats read `s` instead (it keeps
  protocol and ip_out, which the rollups drop), grouped by the coarsest grain dividing
  the plan's edges and skipping void fids, as reads of p do.
- Every failure of ClickHouse is a StoreError; the one assumption is a single collector
  writing a database (the flusher's recovery owns its pending flushes).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import struct
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from agent.wire import histogram
from agent.wire.batch import ACTIVITY_FIELDS, SECONDS_PER_MINUTE, Activity, Batch, Row, WireError
from agent.wire.errorcodes import ERRORS
from agent.wire.logfmt import kv
from collector.model import (
    DOMAIN_ORDERS,
    SAMPLE_DOMAINS,
    ActivityPage,
    ActivityQuery,
    DomainPage,
    DownloadToken,
    ErrorTotals,
    Filter,
    StatsTotals,
    Totals,
)
from collector.plan import (
    DAY, HOUR, MINUTE, ChartPlan, Segment, breakdown_cover, floor_to, row_span, segment_grain, stats_grain,
)
from collector.storage.base import StoreError, keyset_stream
from collector.fastdecode import ColumnRows
from collector.storage.clickhouse import native, schema
from collector.storage.clickhouse.http import ClickHouseError, ClickHouseHTTP
from collector.storage.clickhouse.sqltext import ident, literal, literals

log = logging.getLogger(__name__)

INT64_MAX = (1 << 63) - 1
_CLAMP = f"toDecimal128('{INT64_MAX}', 0)"
_LEVEL_TABLE = {MINUTE: "m", HOUR: "h", DAY: "d"}
_U64 = struct.Struct("<Q")
_P_HEAD = struct.Struct("<BQQI")
_SECS = struct.Struct(f"<{SECONDS_PER_MINUTE}q")
# DOMAIN_ORDERS over the ranked query's columns (cc: count, bt: bytes); ClickHouse
# compares Strings bytewise, which for UTF-8 is code point order, as Python orders str.
_ORDER_COLUMN = {"count": "cc", "bytes_total": "bt"}
_ORDER_SQL = {
    order: ", ".join(f"{_ORDER_COLUMN[m]} DESC" for m in measures) + ", domain ASC"
    for order, measures in DOMAIN_ORDERS.items()
}


def _string(s: str) -> bytes:
    return native.string(s.encode())


_U16 = struct.Struct("<H")
_ID_MASK = (1 << 63) - 1


def _encoder(ch_type: str) -> Callable[[Any], bytes]:
    """RowBinary of one value of the activity table's column type."""
    if ch_type.startswith("Nullable("):
        inner = _encoder(ch_type[len("Nullable(") : -1])
        return lambda v: b"\x01" if v is None else b"\x00" + inner(v)
    return {"UInt64": _U64.pack, "UInt16": _U16.pack, "String": _string}[ch_type]


# (ACTIVITY_FIELDS name, encoder), after the id and fid columns
_ACTIVITY_ENCODERS = tuple((name, _encoder(t)) for name, t in schema.ACTIVITY_COLUMNS[2:])
if tuple(n for n, _ in _ACTIVITY_ENCODERS) != ACTIVITY_FIELDS:  # Activity(*row) reads them in this order
    raise RuntimeError("schema.ACTIVITY_COLUMNS does not follow agent.wire.batch.ACTIVITY_FIELDS")
_ACTIVITY_SELECT = ", ".join(ACTIVITY_FIELDS)
_SEARCHED = ("hostname", "domain", "ip_address", "client_address", "auth_username")
_KNOWN_CODES = tuple(ERRORS)
_ALL_USERS = -1  # download_tokens.user_id of an admin's (every user's) token


def activity_id(fid: int, index: int) -> int:
    """The store's id of the index-th activity record of flush fid (0 <= id < 2**63)."""
    digest = hashlib.blake2b(_U64.pack(fid) + _U64.pack(index), digest_size=8).digest()
    return _U64.unpack(digest)[0] & _ID_MASK


def _clamped(expr: str) -> str:
    return f"toUInt64(least({expr}, {_CLAMP}))"


def check_sums(batch: Batch) -> None:
    """Refuse a batch whose rows sum past 2**63-1 in one UTC day (the widest rollup
    SQLite keeps), as the SQLite backend does: its content is at fault, not the store."""
    rows = batch.rows
    if isinstance(rows, ColumnRows) and rows.untouched:
        # the whole body's sums bound each day's: only a body that passes them needs
        # the per-day look (which makes Row objects)
        if all(sum(rows.columns[c]) <= INT64_MAX for c in schema.SUMS):
            return
    days: dict[int, list[int]] = {}
    for r in rows:
        acc = days.get(r.ts // DAY)
        if acc is None:
            acc = days[r.ts // DAY] = [0] * 6
        acc[0] += r.count
        acc[1] += r.bytes_sent
        acc[2] += r.bytes_received
        acc[3] += r.error_count
        acc[4] += r.duration_ms
        acc[5] += r.conn_ms
    for acc in days.values():
        if max(acc) > INT64_MAX:
            raise WireError("logs", "the rows of this body sum past 2**63-1 in one rollup")


_ROW_INTS = tuple(map(attrgetter, ("ts", "user_id", "order_id")))
_ROW_STRS = tuple(map(attrgetter, ("domain", "error", "protocol", "ip_out")))
_ROW_COUNTERS = tuple(map(attrgetter, (*schema.SUMS, *schema.MAXES)))
_LATENCY = attrgetter("latency")


def _rows_block(rows: Sequence[Row], fid: int) -> bytes:
    """One Native block of m_in (schema.M_IN_COLUMNS) for a batch's rows: straight
    from a version 2 body's columns while nobody made Row objects of them, else from
    the Row objects."""
    b = native.Block(len(rows))
    strings: Callable[[native.Block, str, Sequence[Any]], None]
    if isinstance(rows, ColumnRows) and rows.untouched:
        cols, enc = rows.columns, native.encode(rows.table)
        strings = lambda block, name, indices: block.strings(name, indices, enc)  # noqa: E731
        ts, user, order = rows.ts, cols["user_id"], cols["order_id"]
        domain, error, protocol, ip_out = (cols[c] for c in ("domain", "error", "protocol", "ip_out"))
        counters = [cols[c] for c in (*schema.SUMS, *schema.MAXES)]
        ns, buckets, counts = cols["latency"], cols["latency_bucket"], cols["latency_count"]
    else:
        strings = native.Block.texts
        ts, user, order = (list(map(f, rows)) for f in _ROW_INTS)
        domain, error, protocol, ip_out = (list(map(f, rows)) for f in _ROW_STRS)
        counters = [list(map(f, rows)) for f in _ROW_COUNTERS]
        hists = list(map(_LATENCY, rows))
        ns = list(map(len, hists))
        buckets = [k for h in hists for k in sorted(h)]
        counts = [h[k] for h in hists for k in sorted(h)]
    b.uints("minute", "UInt32", ts)
    b.uints("in_user_id", "UInt64", user)
    b.uints("in_order_id", "UInt64", order)
    strings(b, "in_domain", domain)
    strings(b, "in_error", error)
    for name, col in zip((*schema.SUMS, *schema.MAXES), counters):
        b.uints(f"in_{name}", "UInt64", col)
    b.arrays("lat_k", "UInt16", ns, buckets)
    b.arrays("lat_v", "UInt64", ns, counts)
    b.repeat("fid", "UInt64", fid)
    strings(b, "in_protocol", protocol)
    strings(b, "in_ip_out", ip_out)
    return b.bytes()


def _group_label(seg: Segment, edges: Sequence[int]) -> str:
    """A group's label: the start of its grain block, or the segment's start for the
    first block (which may begin before it): inside the block's rows' bucket either way."""
    g = segment_grain(seg, edges)
    return f"greatest(toUInt32(intDiv(ts, {g}) * {g}), {literal(seg.start, 'UInt32')})"


def peak_level(filt: Filter) -> tuple[int, int, int]:
    """(lvl, user_id, order_id) of the profile sums matching a domain-free filter."""
    if filt.user_id is not None and filt.order_id is not None:
        return 3, filt.user_id, filt.order_id
    if filt.user_id is not None:
        return 1, filt.user_id, 0
    if filt.order_id is not None:
        return 2, 0, filt.order_id
    return 0, 0, 0


@dataclass
class _Item:
    batch: Batch
    key: str | None
    now: int
    fut: "asyncio.Future[bool]"
    rows: int = field(default=0)


class ClickHouseStore:
    def __init__(
        self,
        url: str,
        database: str,
        *,
        user: str = "default",
        password_file: str = "",
        insert_batch_rows: int = 100_000,
        insert_interval: float = 1.0,
        timeout: float = 30.0,
        retention_days: int = 90,
        idempotency_days: int = 7,
        activity_retention_days: int = 90,
    ) -> None:
        self.db = ident(database)  # raises on a name outside the allow-list
        self.database = database
        self.url = url
        self.user = user
        self.password_file = password_file
        self.insert_batch_rows = insert_batch_rows
        self.insert_interval = insert_interval
        self.timeout = timeout
        self.retention_days = retention_days
        self.idempotency_days = idempotency_days
        self.activity_retention_days = activity_retention_days
        self._http: ClickHouseHTTP | None = None
        self._queue: list[_Item] = []
        self._queued_rows = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._voids: frozenset[int] = frozenset()
        self._dirty = False  # a flush failed: recover before the next one
        self._closing = False
        self._token_lock = asyncio.Lock()

    # ---- plumbing -----------------------------------------------------------------

    def _client(self) -> ClickHouseHTTP:
        if self._http is None:
            raise StoreError("store is not open")
        return self._http

    async def _select(self, sql: str) -> list[list[Any]]:
        return (await self._select_counted(sql))[0]

    async def _select_counted(self, sql: str) -> tuple[list[list[Any]], int | None]:
        try:
            return await self._client().select_counted(sql)
        except ClickHouseError as exc:
            log.error("clickhouse failed", extra=kv(error=str(exc)))
            raise StoreError(f"storage error: {exc}") from exc

    async def _exec(self, sql: str) -> None:
        try:
            await self._client().execute(sql)
        except ClickHouseError as exc:
            log.error("clickhouse failed", extra=kv(error=str(exc)))
            raise StoreError(f"storage error: {exc}") from exc

    async def _insert(self, table: str, columns: Sequence[str], data: bytes, fmt: str = "RowBinary") -> None:
        try:
            await self._client().insert(f"{self.db}.{table} ({', '.join(columns)})", data, fmt)
        except ClickHouseError as exc:
            log.error("clickhouse insert failed", extra=kv(error=str(exc), table=table))
            raise StoreError(f"storage error: {exc}") from exc

    def _t(self, table: str) -> str:
        return f"{self.db}.{table}"

    def _not_void(self) -> str:
        return f" AND fid NOT IN {literals(sorted(self._voids), 'UInt64')}" if self._voids else ""

    # ---- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        password = ""
        if self.password_file:
            try:
                password = Path(self.password_file).read_text().strip()
            except OSError as exc:
                raise StoreError(f"storage.clickhouse.password_file: {exc}") from exc
        self._http = ClickHouseHTTP(self.url, user=self.user, password=password, timeout=self.timeout)
        await self._http.open()
        try:
            await self._migrate()
            await self._recover()
        except BaseException:
            await self._http.close()
            self._http = None
            raise
        self._closing = False
        self._flusher = asyncio.create_task(self._flush_loop())
        log.info("store opened", extra=kv(backend="clickhouse", url=self.url, database=self.database))

    async def _migrate(self) -> None:
        present = await self._select(
            "SELECT count() FROM system.tables WHERE database = "
            f"{literal(self.database, 'String')} AND name = 'schema_version'"
        )
        version = 0
        if present[0][0]:
            version = int((await self._select(f"SELECT max(version) FROM {self._t('schema_version')}"))[0][0])
        if version > len(schema.MIGRATIONS):
            raise StoreError(f"database schema version {version} is newer than this collector ({len(schema.MIGRATIONS)})")
        for number in range(version, len(schema.MIGRATIONS)):
            phases = schema.MIGRATIONS[number](self.database)
            if number + 1 == schema.RECREATE_ROLLUPS:
                phases = schema.recreate_rollups(self.database, await self._stale_rollups())
            for phase in phases:
                for statement in phase:  # one by one: 18.16 serialises DDL and sending it at once is slower
                    if await self._column_exists(statement):
                        continue  # a rerun of a migration cut short after this ALTER
                    await self._exec(statement)
            if number + 1 == schema.RECREATE_ROLLUPS:
                await self._rebuild_all()
            await self._exec(
                f"INSERT INTO {self._t('schema_version')} (version, at) VALUES ({literal(number + 1, 'UInt32')}, 0)"
            )
            log.info("schema migrated", extra=kv(version=number + 1))

    async def _stale_rollups(self) -> list[str]:
        rows = await self._select(
            "SELECT name, engine, create_table_query FROM system.tables WHERE database = "
            f"{literal(self.database, 'String')} AND name IN {literals(schema.ROLLUP_TABLES.values(), 'String')}"
        )
        found = {name: (engine, query) for name, engine, query in rows}
        return [name for name in schema.ROLLUP_TABLES.values()
                if name not in found or schema.stale_rollup(*found[name], name)]  # fmt: skip

    async def _column_exists(self, statement: str) -> bool:
        added = schema.added_column(statement)
        if added is None:
            return False
        db, table, column = added
        rows = await self._select(
            f"SELECT count() FROM system.columns WHERE database = {literal(db, 'String')} "
            f"AND table = {literal(table, 'String')} AND name = {literal(column, 'String')}"
        )
        return bool(rows[0][0])

    async def close(self) -> None:
        self._closing = True
        if self._flusher is not None:
            self._wake.set()
            self._full.set()
            await self._flusher
            self._flusher = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def ping(self) -> None:
        await self._select("SELECT 1")

    async def size_bytes(self) -> int:
        rows = await self._select(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = "
            + literal(self.database, "String")
        )
        return int(rows[0][0] or 0)

    # ---- ingest -------------------------------------------------------------------

    async def ingest(self, batch: Batch, idempotency_key: str | None, now: int) -> bool:
        check_sums(batch)
        if self._flusher is None or self._closing:
            raise StoreError("store is not open")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        n = len(batch.rows) + len(batch.profiles) + len(batch.activity)
        self._queue.append(_Item(batch, idempotency_key, now, fut, n))
        self._queued_rows += n
        self._wake.set()
        if self._queued_rows >= self.insert_batch_rows:
            self._full.set()
        return await fut

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            if not self._queue:
                self._wake.clear()
                if self._closing:
                    return
                continue
            if self.insert_interval > 0 and not self._closing and self._queued_rows < self.insert_batch_rows:
                try:
                    await asyncio.wait_for(self._full.wait(), self.insert_interval)
                except TimeoutError:
                    pass
            items, self._queue, self._queued_rows = self._queue, [], 0
            self._full.clear()
            try:
                await self._flush(items)
            except BaseException as exc:  # never leave a caller waiting
                for it in items:
                    if not it.fut.done():
                        it.fut.set_exception(exc if isinstance(exc, Exception) else StoreError(str(exc)))
                if not isinstance(exc, Exception):
                    raise

    async def _flush(self, items: list[_Item]) -> None:
        try:
            if self._dirty:
                await self._recover()
            keys = sorted({it.key for it in items if it.key is not None})
            applied = await self._applied(keys)
            leaders: dict[str, _Item] = {}
            todo: list[_Item] = []
            followers: list[tuple[_Item, _Item]] = []
            for it in items:
                if it.key is None:
                    todo.append(it)
                elif it.key in applied:
                    continue
                elif it.key in leaders:  # the same key twice in one flush: applied once
                    followers.append((it, leaders[it.key]))
                else:
                    leaders[it.key] = it
                    todo.append(it)
            await self._write(todo, leaders, items[0].now)
        except StoreError as exc:
            self._dirty = True
            for it in items:
                if not it.fut.done():
                    it.fut.set_exception(exc)
            return
        repeated = {id(f) for f, _ in followers}
        for it in items:
            if it.fut.done():
                continue
            if it.key is not None and (it.key in applied or id(it) in repeated):
                it.fut.set_result(False)
            else:
                it.fut.set_result(True)

    async def _applied(self, keys: list[str]) -> set[str]:
        """The keys the ledger holds with a committed (not voided) flush."""
        if not keys:
            return set()
        found: set[str] = set()
        for n in range(0, len(keys), 1000):
            part = keys[n : n + 1000]
            rows = await self._select(
                f"SELECT DISTINCT key FROM {self._t('ledger')} WHERE key IN {literals(part, 'String')}"
                f" AND fid NOT IN (SELECT fid FROM {self._t('void')})"
            )
            found.update(r[0] for r in rows)
        return found

    async def _write(self, todo: list[_Item], leaders: dict[str, _Item], at: int) -> None:
        fid = secrets.randbits(63) | 1
        has_data = any(it.batch.rows or it.batch.profiles or it.batch.activity for it in todo)
        if has_data:
            days = sorted({r.ts // DAY for it in todo for r in it.batch.rows} | {p.ts // DAY for it in todo for p in it.batch.profiles})
            pend = _U64.pack(fid) + struct.pack("<I", at) + native.varint(len(days)) + b"".join(struct.pack("<I", d) for d in days)
            await self._insert("pending", ("fid", "at", "days"), pend)
            rows = self._encode_rows(todo, fid)
            if rows:
                await self._insert("m_in", schema.M_IN_COLUMNS, rows, "Native")
            profiles = self._encode_profiles(todo, fid)
            if profiles:
                await self._insert("p", schema.P_COLUMNS, profiles)
            activity = self._encode_activity(todo, fid)
            if activity:
                await self._insert("activity", [c for c, _t in schema.ACTIVITY_COLUMNS], activity)
        commit = [(k, fid) for k in leaders] + ([("", fid)] if has_data else [])
        if commit:
            tail = _U64.pack(fid) + struct.pack("<I", at)
            await self._insert("ledger", ("key", "fid", "at"), b"".join(_string(k) + tail for k, _ in commit))

    @staticmethod
    def _encode_rows(todo: list[_Item], fid: int) -> bytes:
        """m_in's rows of the flush in Native format, one block per batch."""
        return b"".join(_rows_block(it.batch.rows, fid) for it in todo if it.batch.rows)

    @staticmethod
    def _encode_activity(todo: list[_Item], fid: int) -> bytes:
        out: list[bytes] = []
        head = _U64.pack(fid)
        index = 0
        for it in todo:
            for r in it.batch.activity:
                out.append(_U64.pack(activity_id(fid, index)) + head)
                out.extend(enc(getattr(r, name)) for name, enc in _ACTIVITY_ENCODERS)
                index += 1
        return b"".join(out)

    @staticmethod
    def _encode_profiles(todo: list[_Item], fid: int) -> bytes:
        # Summed per (level, user, order, minute) over the flush, as the SQLite backend
        # keeps them: level 0 all, 1 user, 2 order, 3 user+order.
        deltas: dict[tuple[int, int, int, int], list[int]] = {}
        for it in todo:
            for p in it.batch.profiles:
                for key in ((0, 0, 0, p.ts), (1, p.user_id, 0, p.ts), (2, 0, p.order_id, p.ts), (3, p.user_id, p.order_id, p.ts)):
                    acc = deltas.get(key)
                    if acc is None:
                        deltas[key] = list(p.active)
                    else:
                        for i, v in enumerate(p.active):
                            acc[i] += v
        n = native.varint(SECONDS_PER_MINUTE)
        tail = _U64.pack(fid)
        return b"".join(_P_HEAD.pack(*k) + n + _SECS.pack(*v) + tail for k, v in deltas.items())

    # ---- recovery -----------------------------------------------------------------

    async def _recover(self) -> None:
        """Void every flush that never committed and rebuild the rollup days it touched."""
        orphans = await self._select(
            f"SELECT fid, at, days FROM {self._t('pending')} WHERE fid NOT IN (SELECT fid FROM {self._t('ledger')})"
            f" AND fid NOT IN (SELECT fid FROM {self._t('void')})"
        )
        if orphans:
            data = b"".join(
                _U64.pack(int(f)) + struct.pack("<I", int(at)) + native.varint(len(days)) + b"".join(struct.pack("<I", int(d)) for d in days)
                for f, at, days in orphans
            )
            await self._insert("void", ("fid", "at", "days"), data)
            log.warning("uncommitted flushes voided", extra=kv(flushes=len(orphans)))
        self._voids = frozenset(int(r[0]) for r in await self._select(f"SELECT fid FROM {self._t('void')}"))
        todo = await self._select(
            f"SELECT fid, days FROM {self._t('void')} WHERE fid NOT IN (SELECT fid FROM {self._t('void_done')})"
        )
        days = sorted({int(d) for _f, ds in todo for d in ds})
        for day in days:
            await self._rebuild_day(day)
        if todo:
            await self._insert("void_done", ("fid",), b"".join(_U64.pack(int(f)) for f, _ in todo))
        self._dirty = False

    async def _rebuild_all(self) -> None:
        """Every day of the rollups rebuilt from m, without voided flushes (a migration
        that recreated the rollups)."""
        self._voids = frozenset(int(r[0]) for r in await self._select(f"SELECT fid FROM {self._t('void')}"))
        parts = await self._select(
            "SELECT DISTINCT partition FROM system.parts WHERE active AND database = "
            f"{literal(self.database, 'String')} AND table = 'm'"
        )
        days = sorted(int(p) for (p,) in parts)
        for day in days:
            await self._rebuild_day(day)
        log.info("rollups rebuilt", extra=kv(days=len(days)))

    async def _rebuild_day(self, day: int) -> None:
        src = schema.state_source(
            f"ts >= {literal(day * DAY, 'UInt32')} AND ts < {literal((day + 1) * DAY, 'UInt32')}{self._not_void()}",
            self.database,
        )
        for step, table in schema.ROLLUP_TABLES.items():
            await self._exec(f"ALTER TABLE {self._t(table)} DROP PARTITION {literal(day, 'UInt32', bare=True)}")
            await self._exec(f"INSERT INTO {self._t(table)} " + schema.rollup_select(step, from_states=True).replace("{src}", src))

    # ---- retention ----------------------------------------------------------------

    async def retention(self, now: int) -> dict[str, int]:
        cutoff = floor_to(now - self.retention_days * DAY, MINUTE)
        jobs = [("m", "ts", cutoff), *((t, "ts", floor_to(cutoff, step)) for step, t in schema.ROLLUP_TABLES.items()),
                ("p", "ts", cutoff), ("s", "ts", cutoff)]
        idem = floor_to(now - max(self.idempotency_days, 7) * DAY, DAY)
        # pending before ledger: a pending flush whose ledger row is gone would look
        # uncommitted to the recovery
        jobs += [("pending", "at", idem), ("ledger", "at", idem)]
        deleted: dict[str, int] = {}
        for table, column, before in jobs:
            n = int((await self._select(f"SELECT count() FROM {self._t(table)} WHERE {column} < {literal(before, 'UInt32')}"))[0][0])
            deleted[table] = n
            if not n:
                continue
            parts = await self._select(
                "SELECT DISTINCT partition FROM system.parts WHERE active AND database = "
                f"{literal(self.database, 'String')} AND table = {literal(table, 'String')}"
            )
            for (part,) in parts:
                day = int(part)
                if day < before // DAY:
                    await self._exec(f"ALTER TABLE {self._t(table)} DROP PARTITION {literal(day, 'UInt32', bare=True)}")
            if before % DAY:
                # the cutoff falls inside a day: its earlier rows go by a mutation
                await self._exec(f"ALTER TABLE {self._t(table)} DELETE WHERE {column} < {literal(before, 'UInt32')}")
        deleted["activity"] = await self._activity_retention(now)
        deleted["download_tokens"] = await self._token_retention(now)
        if any(deleted.values()):
            log.info("retention applied", extra=kv(**deleted))
        return deleted

    async def _activity_retention(self, now: int) -> int:
        # Whole UTC days only: a partition drop is immediate, where a mutation (18.16
        # has no synchronous ones) would leave the rows readable for a while. The API
        # refuses windows older than activity_retention_days, so the up to one day
        # kept beyond it is never listed.
        first_kept = max(0, (now - self.activity_retention_days * DAY) * 1_000_000) // schema.DAY_US
        parts = await self._select(
            "SELECT partition, sum(rows) FROM system.parts WHERE active AND database = "
            f"{literal(self.database, 'String')} AND table = 'activity' GROUP BY partition"
        )
        n = 0
        for part, rows in parts:
            if int(part) < first_kept:
                await self._exec(f"ALTER TABLE {self._t('activity')} DROP PARTITION {literal(int(part), 'UInt64', bare=True)}")
                n += int(rows)
        return n

    async def _token_retention(self, now: int) -> int:
        # Only groups whose LATEST token expired go, all their rows with it: deleting an
        # expired latest row alone would bring back the older token it replaced. The
        # id bound keeps a token made after this read (a newer part the mutation may
        # still see) out of the delete.
        async with self._token_lock:
            rows = await self._select(
                f"SELECT user_id, scope, max(id) AS top, argMax(expire_at, id) AS ex FROM {self._t('download_tokens')} "
                "GROUP BY user_id, scope"
            )
            gone = [(int(u), s, int(top)) for u, s, top, ex in rows if int(ex) <= now]
            for u, scope, top in gone:
                await self._exec(
                    f"ALTER TABLE {self._t('download_tokens')} DELETE WHERE user_id = {literal(u, 'Int64')} "
                    f"AND scope = {literal(scope, 'String')} AND id <= {literal(top, 'UInt64')}"
                )
        return len(gone)

    # ---- queries ------------------------------------------------------------------

    @staticmethod
    def _where(filt: Filter) -> str:
        parts = []
        if filt.user_id is not None:
            parts.append(f"user_id = {literal(filt.user_id, 'UInt64')}")
        if filt.order_id is not None:
            parts.append(f"order_id = {literal(filt.order_id, 'UInt64')}")
        if filt.domain is not None:
            parts.append(f"domain = {literal(filt.domain, 'String')}")
        return "".join(" AND " + p for p in parts)

    @staticmethod
    def _family(filt: Filter) -> int:
        """The rollup family answering a chart with this filter (schema.FULL: all keys)."""
        if filt.user_id is not None:
            return schema.FULL
        if filt.order_id is not None:
            return schema.O if filt.domain is None else schema.FULL
        return schema.T if filt.domain is None else schema.N

    def _source(self, seg: Segment, filt: Filter, family: int) -> tuple[str, str, str]:
        """(table, WHERE clause, (first, last) expressions) of one plan segment: the
        family's rows of the rollup at the segment's level (r_m, r_h or r_d; they never
        hold a voided flush, so only m and p need the void filter)."""
        where = f"ts >= {literal(seg.start, 'UInt32')} AND ts < {literal(seg.end, 'UInt32')}{self._where(filt)}"
        table = schema.ROLLUP_TABLES[seg.level]
        # A family's unused leading keys are constants: saying so lets the primary key
        # (fam, order_id, domain, ts, ...) narrow to the filter's range, where `fam`
        # alone would read the whole family (every domain's rows for a domain filter).
        kept = schema.FAMILY_KEYS[family]
        fixed = "".join(f" AND {k} = {z}" for k, z in (("order_id", "toUInt64(0)"), ("domain", "''")) if k not in kept)
        return self._t(table), f"fam = {literal(family, 'UInt8')}{fixed} AND {where}", "minMerge(first_ts), maxMerge(last_ts)"

    async def chart(
        self, plan: ChartPlan, filt: Filter, *, with_latency: bool = False, with_peaks: bool = False
    ) -> dict[int, Totals]:
        if not plan.segments:
            return {}
        parts = []
        family = self._family(filt)
        for seg in plan.segments:
            table, where, spans = self._source(seg, filt, family)
            sums = ", ".join(_clamped(f"sumMerge({c})") for c in schema.SUMS)
            maxes = ", ".join(f"maxMerge({c})" for c in schema.MAXES)
            lat = ", sumMapMerge(lat)" if with_latency else ""
            parts.append(
                f"SELECT {_group_label(seg, plan.edges)} AS b, {sums}, {maxes}, {spans}{lat} "
                f"FROM {table} WHERE {where} GROUP BY b"
            )
        queries = [self._select(" UNION ALL ".join(parts))]
        peaks = with_peaks and filt.domain is None
        if peaks:
            queries.append(self._select(self._peaks_sql(plan.segments, filt, plan.edges)))
        answers = await asyncio.gather(*queries)
        edges = plan.edges
        buckets: dict[int, Totals] = {}

        def bucket(ts: int) -> Totals:
            i = bisect_right(edges, ts) - 1
            t = buckets.get(i)
            if t is None:
                t = buckets[i] = Totals()
            return t

        for row in answers[0]:
            t = bucket(row[0])
            t.add_sums(*row[1:11])
            if with_latency:
                ks, vs = row[11]
                if ks:
                    histogram.add(t.latency, dict(zip(ks, vs)))
        if peaks:
            for ts, peak in answers[1]:
                bucket(ts).add_peak(int(peak))
        return buckets

    def _peaks_sql(self, segments: Iterable[Segment], filt: Filter, edges: Sequence[int]) -> str:
        lvl, u, o = peak_level(filt)
        parts = []
        for seg in segments:
            parts.append(
                f"SELECT {_group_label(seg, edges)} AS b, max(pk) FROM ("
                f"SELECT ts, arrayReduce('max', sumForEach(secs)) AS pk FROM {self._t('p')} "
                f"WHERE lvl = {literal(lvl, 'UInt8')} AND user_id = {literal(u, 'UInt64')} AND order_id = {literal(o, 'UInt64')}"
                f" AND ts >= {literal(seg.start, 'UInt32')} AND ts < {literal(seg.end, 'UInt32')}{self._not_void()} "
                "GROUP BY ts) GROUP BY b"
            )
        return " UNION ALL ".join(parts)

    def _breakdown_family(self, filt: Filter, family: int) -> int:
        """The rollup family a breakdown reads: its own (N, E) unless a filter needs FULL."""
        return family if self._family(filt) in (schema.T, schema.N) else schema.FULL

    def _breakdown_union(
        self, start: int, end: int, filt: Filter, family: int, columns: str, keep: str, group: str
    ) -> str | None:
        parts = []
        for seg in breakdown_cover(start, end):
            table, where, spans = self._source(seg, filt, self._breakdown_family(filt, family))
            parts.append(f"SELECT {columns}, {spans} FROM {table} WHERE {where} AND {keep} GROUP BY {group}")
        return " UNION ALL ".join(parts) if parts else None

    async def domains(
        self, start: int, end: int, filt: Filter, *, order: str, limit: int, offset: int = 0
    ) -> DomainPage:
        union = self._breakdown_union(
            start, end, filt, schema.N,
            "domain, sumMerge(count) AS c, sumMerge(bytes_sent) AS bs, sumMerge(bytes_received) AS br, "
            "sumMerge(error_count) AS e", "domain != ''", "domain",
        )  # fmt: skip
        if union is None:
            return DomainPage([], 0)
        # The outer columns are named apart from the inner ones: ClickHouse aliases
        # are global, so `sum(c) AS c` would refer to itself.
        union = union.replace("minMerge(first_ts), maxMerge(last_ts)", "minMerge(first_ts) AS f, maxMerge(last_ts) AS l")
        rows, total = await self._select_counted(
            f"SELECT domain, {_clamped('sum(c)')} AS cc, {_clamped('sum(bs)')} AS cbs, {_clamped('sum(br)')} AS cbr, "
            f"{_clamped('sum(e)')} AS ce, min(f) AS cf, max(l) AS cl, "
            f"least(sum(bs), {_CLAMP}) + least(sum(br), {_CLAMP}) AS bt "
            f"FROM ({union}) GROUP BY domain ORDER BY {_ORDER_SQL[order]} "
            f"LIMIT {literal(offset, 'UInt64', bare=True)}, {literal(limit, 'UInt64', bare=True)}"
        )
        # The total is the number of groups the ORDER BY saw before the LIMIT: every
        # one, since sorting needs them all (a second query counting them cost as much
        # as the page on two cores). A server that does not say counts them.
        if total is None:
            total = await self._domain_total(union)
        items = [
            (d, Totals(count=c, bytes_sent=bs, bytes_received=br, error_count=e, first_ts=f, last_ts=l))
            for d, c, bs, br, e, f, l, _bt in rows
        ]
        return DomainPage(items, total)

    async def _domain_total(self, union: str) -> int:
        """The distinct domains of a breakdown union, counted by a query of their own."""
        return int((await self._select(f"SELECT uniqExact(domain) FROM ({union})"))[0][0])

    async def errors(self, start: int, end: int, filt: Filter) -> dict[str, ErrorTotals]:
        union = self._breakdown_union(start, end, filt, schema.E, "error, domain, sumMerge(error_count) AS n", "error != ''", "error, domain")
        if union is None:
            return {}
        union = union.replace("minMerge(first_ts), maxMerge(last_ts)", "minMerge(first_ts) AS f, maxMerge(last_ts) AS l")
        pairs = f"SELECT error, domain, {_clamped('sum(n)')} AS en, min(f) AS ef, max(l) AS el FROM ({union}) GROUP BY error, domain"
        # One row per error: its total (the sum of the clamped per-domain counts, in
        # Decimal128 so it cannot wrap) and only its SAMPLE_DOMAINS largest domains, in
        # render's order (count descending, then the domain: tuples sort element-wise,
        # Strings bytewise, which for UTF-8 is Python's str order). The tens of thousands
        # of (error, domain) pairs stay on the server, grouped once.
        rows = await self._select(
            f"SELECT error, toString(sum(toDecimal128(en, 0))), min(ef), max(el), "
            f"arraySlice(arraySort(groupArrayIf((-toInt64(en), domain), domain != '')), 1, {SAMPLE_DOMAINS}) "
            f"FROM ({pairs}) GROUP BY error"
        )
        out: dict[str, ErrorTotals] = {}
        for e, n, first, last, samples in rows:
            out[e] = ErrorTotals(int(n), int(first), int(last), {d: -int(neg) for neg, d in samples})
        return out

    # ---- Webshare-compatible API (/api/v2) ---------------------------------------

    def _activity_where(self, q: ActivityQuery, with_cursor: bool) -> str | None:
        """The WHERE of ActivityQuery's match rules (collector.model), or None when
        nothing can match (a bound outside the columns' ranges, no allowed error)."""
        lo, hi = max(q.start_us, 0), q.end_us
        tie = ""
        if with_cursor and q.after is not None:
            ts, rid = q.after
            # ONE upper bound on ts_us (the window's end or the cursor's time), the
            # (ts_us, id) < after rest spelled out below
            hi = min(hi, ts)
            if rid < 0:  # (T, -1): older than T
                hi = min(hi, ts - 1)
            elif rid <= INT64_MAX and 0 <= ts <= hi:
                tie = f"(ts_us < {literal(ts, 'UInt64')} OR id < {literal(rid, 'UInt64')})"
            # else: every id is below rid, the bound on ts_us says it all
        if hi < lo:
            return None
        parts = [f"ts_us >= {literal(lo, 'UInt64')}", f"ts_us <= {literal(min(hi, (1 << 64) - 1), 'UInt64')}"]
        if tie:
            parts.append(tie)
        for name, v in (("user_id", q.user_id), ("order_id", q.order_id)):
            if v is not None:
                if not 0 <= v <= INT64_MAX:
                    return None
                parts.append(f"{name} = {literal(v, 'UInt64')}")
        if q.search is not None:
            s = literal(q.search, "String")
            # lower() is ASCII-only in ClickHouse, as ActivityQuery wants; a null
            # field's position() is null, which ifNull makes "no match"
            alts = [f"ifNull(position(lower({c}), {s}) > 0, 0)" for c in _SEARCHED]
            if q.search_codes:
                alts.append(f"error IN {literals(q.search_codes, 'String')}")
            alts.append(f"(error != '' AND error NOT IN {literals(_KNOWN_CODES, 'String')} AND position(lower(error), {s}) > 0)")
            parts.append("(" + " OR ".join(alts) + ")")
        if q.errors is not None:
            if not q.errors:
                return None
            parts.append(f"error IN {literals(q.errors, 'String')}")
        if q.any_error:
            parts.append("error != ''")
        # each side is at most 2**53-1, so the UInt64 sum cannot wrap
        if q.bytes_min is not None:
            if q.bytes_min > INT64_MAX:
                return None
            parts.append(f"bytes_sent + bytes_received >= {literal(max(q.bytes_min, 0), 'UInt64')}")
        if q.bytes_max is not None:
            if q.bytes_max < 0:
                return None
            parts.append(f"bytes_sent + bytes_received <= {literal(min(q.bytes_max, INT64_MAX), 'UInt64')}")
        return " AND ".join(parts) + self._not_void()

    async def _activity_items(self, q: ActivityQuery) -> list[tuple[int, Activity]]:
        where = self._activity_where(q, with_cursor=True)
        if where is None or q.limit <= 0:
            return []
        rows = await self._select(
            f"SELECT id, {_ACTIVITY_SELECT} FROM {self._t('activity')} WHERE {where} "
            f"ORDER BY ts_us DESC, id DESC LIMIT {literal(q.limit, 'UInt64', bare=True)}"
        )
        return [(int(r[0]), Activity(*r[1:])) for r in rows]

    async def activity_page(self, q: ActivityQuery) -> ActivityPage:
        where = self._activity_where(q, with_cursor=False)
        if where is None:
            return ActivityPage([], 0)
        items, count = await asyncio.gather(
            self._activity_items(q), self._select(f"SELECT count() FROM {self._t('activity')} WHERE {where}")
        )
        return ActivityPage(items, int(count[0][0]))

    def activity_stream(self, q: ActivityQuery) -> AsyncIterator[list[tuple[int, Activity]]]:
        return keyset_stream(self._activity_items, q)

    async def hourly_stats(self, plan: ChartPlan, filt: Filter) -> dict[int, StatsTotals]:
        # From `s` (schema.py), skipping voided flushes: per minute first, so "latest
        # minute with requests" is decided on a minute's merged count as SQLite decides
        # it on its rows, then per grain, so one row per (grain, error, protocol,
        # ip_out) comes back; Python buckets them with chart's membership rule.
        out: dict[int, StatsTotals] = {}
        a, b = row_span(plan.start, plan.end)
        if b <= a:
            return out
        g = stats_grain(plan.edges)
        where = f"ts >= {literal(max(a, 0), 'UInt32')} AND ts < {literal(min(b, (1 << 32) - 1), 'UInt32')}"
        where += self._where(filt) + self._not_void()
        keys = "error, protocol, ip_out"
        inner = ", ".join(f"sumMerge({c}) AS i_{c}" for c in schema.STATS_SUMS)
        outer = ", ".join(_clamped(f"sum(i_{c})") for c in schema.STATS_SUMS)
        rows = await self._select(
            f"SELECT toUInt32(intDiv(ts, {g}) * {g}) AS b, {keys}, {outer}, maxIf(ts, i_count > 0) AS l, "
            f"countIf(i_count > 0) AS n FROM (SELECT ts, {keys}, {inner} FROM {self._t('s')} WHERE {where} "
            f"GROUP BY ts, {keys}) GROUP BY b, {keys}"
        )
        edges = plan.edges
        for t, err, proto, ip, c, bs, br, ec, cm, last, with_count in rows:
            i = bisect_right(edges, t) - 1
            st = out.get(i)
            if st is None:
                st = out[i] = StatsTotals()
            st.count += c
            st.bytes_sent += bs
            st.bytes_received += br
            st.error_count += ec
            st.conn_ms += cm
            if err and ec:
                st.errors[err] = st.errors.get(err, 0) + ec
            if c:
                st.protocols[proto] = st.protocols.get(proto, 0) + c
            if ip:
                st.proxies[ip] = st.proxies.get(ip, 0) + c
            if with_count and (st.last_ts is None or last > st.last_ts):
                st.last_ts = int(last)
        return out

    _TOKEN_READ = (
        "SELECT user_id, scope, argMax(id, id) AS tid, argMax(key, id) AS tkey, argMax(key_sha256, id) AS tsha, "
        "argMax(expire_at, id) AS tex FROM {t} WHERE {where} GROUP BY user_id, scope"
    )

    @staticmethod
    def _token(row: list[Any]) -> DownloadToken:
        user, scope, tid, key, _sha, expire_at = row
        return DownloadToken(int(tid), key, scope, None if int(user) == _ALL_USERS else int(user), int(expire_at))

    async def download_token(
        self, user_id: int | None, scope: str, now: int, ttl: int, new_key: str, *, reset: bool = False
    ) -> DownloadToken:
        user = _ALL_USERS if user_id is None else user_id
        t = self._t("download_tokens")
        group = f"user_id = {literal(user, 'Int64')} AND scope = {literal(scope, 'String')}"
        async with self._token_lock:
            rows = await self._select(self._TOKEN_READ.format(t=t, where=group))
            if rows and not reset and now < int(rows[0][5]):
                return self._token(rows[0])
            top = await self._select(f"SELECT max(id) FROM {t}")
            # Larger than every id so far, and than any an emptied table (retention)
            # could hand out again: a token id is never reused.
            tid = max(int(top[0][0] or 0) + 1, now << 20)
            row = (struct.pack("<q", user) + _string(scope) + _U64.pack(tid) + _string(new_key)
                   + _string(hashlib.sha256(new_key.encode()).hexdigest()) + struct.pack("<II", now, now + ttl))  # fmt: skip
            await self._insert("download_tokens", ("user_id", "scope", "id", "key", "key_sha256", "created_at", "expire_at"), row)
            return DownloadToken(tid, new_key, scope, user_id, now + ttl)

    async def find_download_token(self, key: str, scope: str, now: int) -> DownloadToken | None:
        # The latest token of its group must hold this key: a reset one is superseded.
        # Compared by SHA-256, so a comparison's timing tells nothing of the key.
        sha = literal(hashlib.sha256(key.encode()).hexdigest(), "String")
        inner = self._TOKEN_READ.format(t=self._t("download_tokens"), where=f"scope = {literal(scope, 'String')}")
        rows = await self._select(f"SELECT * FROM ({inner}) WHERE tsha = {sha}")
        if not rows or now >= int(rows[0][5]):
            return None
        return self._token(rows[0])
