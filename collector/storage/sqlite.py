"""The SQLite backend of Store.

Strategy
- WAL mode; ONE writer connection owned by one thread (a single-worker executor) and one
  fold connection on another; their write transactions take one lock, so writes are
  serialised without SQLITE_BUSY; queries run on a small pool of
  read-only connections (other threads), each query in one read transaction (a
  consistent snapshot). Nothing blocking ever runs on the event loop.
- Strings (domain, error, protocol, IPs, peer, worker) are integer-coded through the
  `strings` dictionary table; the FonProxy dimensions no query filters on (port,
  protocol, ip_out, ip_from, peer_id, worker) are coded together as one `rests` tuple id.
  Id 0 is the empty string. Ids never change, so both sides cache them in memory.
- `m` holds one row per (minute, user, order, domain, error, rest). Every other row
  table is a rollup of `m`, kept equal to it by every fold (a
  test checks every one against sums computed from `m`), at three levels (suffix or
  name: minute, UTC hour, UTC day) so a long range reads few rows:
    h, d        per (order, start, user, domain, error), primary key led by the order
                (order-filtered breakdowns read one contiguous range), index on user;
    t_*         per start: the no-filter charts;
    o_*         per (order, start): orderId charts;
    n_*         per (start, domain), index (domain, start): domain charts and the
                domains/websites breakdowns without a user/order filter;
    e_*         per (start, error, domain) for error rows: the errors breakdown.
  A query with no filter, only orderId or only domain reads t/o/n/e; any other filter
  combination reads h/d (or `m` for minute spans). Hour/day rollups carry the first
  and last minute seen (websites' first/last visit).
- Ingest stages, a fold applies. An ingest appends the body's rows (string ids bound)
  to the `stage` table, a plain rowid table, and records its idempotency key, in one
  transaction: the cheapest durable, exactly-once write SQLite has. A fold then moves
  the staged rows into `m` and every rollup and deletes them from `stage`, in ONE
  transaction, so a row is counted exactly once whatever is killed when. Folds run on
  their own thread and connection: once `fold_rows` rows are staged (the writer starts
  one after answering the ingests; staging waits only when 4x that is staged), every
  `fold_interval` seconds when anything is staged, before retention and on close.
  Queries read the staged rows besides the rollups, in one snapshot (a fold moves rows
  in one transaction), so a query sees every acknowledged row exactly once.
- A fold is set-based, in two phases. Deltas: in a read transaction (the writer goes on
  staging meanwhile), the staged rows are upserted into in-memory deltas keyed by each
  rollup's key (an in-memory B-tree seek per row, far cheaper than GROUP BY's sorter).
  Apply: under the write lock every stored table takes one upsert per distinct key of
  the whole fold, in key order, and the folded rows are deleted. Measured: half of the
  store's CPU per row is outside the write lock (the deltas), so on two free cores
  staging and folding overlap. Latency
  histograms are msgpack streams (see HIST_SUM): merged by concatenation in C, summed
  by Python only when a stream grows long.
- Concurrent ingests are group-committed: the writer takes every batch waiting for it and
  stages them in one transaction, each inside its own SAVEPOINT (a batch that fails
  rolls back alone and its caller gets the error); each caller is answered only after
  the COMMIT, so an acknowledged batch is on disk as far as `synchronous` promises.
- Concurrency profiles: per (minute, level, user, order) the per-second active counts
  summed over workers (`conc_m.secs`, 60 int64 little-endian) and their peak, at four
  filter levels: 0 all, 1 user, 2 order, 3 user+order. A delta adds to the seconds and
  recomputes the minute peak; since counts only grow, hour/day peaks (`conc_h`,
  `conc_d`) are maintained by max().
- WAL checkpoints run off the ingest path: the writer has automatic checkpoints off, and
  a checkpointer thread with its own connection runs a PASSIVE checkpoint (it never
  blocks the writer or readers) every `checkpoint_interval` seconds; copying pages back
  into the database file was about a sixth of the writer's time per row. Should it fall
  behind, the writer checkpoints itself (RESTART) once the WAL is over `max_wal_bytes`,
  so the WAL stays bounded.
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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice, repeat
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from agent.wire import histogram
from agent.wire.batch import SECONDS_PER_MINUTE, Activity, Batch, WireError
from agent.wire.logfmt import kv
from collector.fastdecode import ColumnRows, gc_paused
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
from collector.plan import DAY, HOUR, MINUTE, ChartPlan, breakdown_cover, floor_to, row_span
from collector.storage import sqlite_activity
from collector.storage.base import StoreError, keyset_stream

log = logging.getLogger(__name__)
T = TypeVar("T")

_INT64_MAX = (1 << 63) - 1
_SUMS = ("count", "bytes_sent", "bytes_received", "error_count", "duration_ms", "conn_ms")
_MAXES = ("max_concurrency", "duration_max_ms")
_COUNTERS = ", ".join(_SUMS + _MAXES)
_COUNTER_COLS = """count INTEGER NOT NULL, bytes_sent INTEGER NOT NULL, bytes_received INTEGER NOT NULL,
    error_count INTEGER NOT NULL, duration_ms INTEGER NOT NULL, conn_ms INTEGER NOT NULL,
    max_concurrency INTEGER NOT NULL, duration_max_ms INTEGER NOT NULL"""


@dataclass(frozen=True)
class Table:
    """A row table: its key columns (the primary key, in order), its time level, and
    whether it keeps first/last minute seen (hour/day levels) and latency histograms."""

    name: str
    level: int
    keys: tuple[str, ...]
    index: tuple[str, ...] = ()
    latency: bool = True

    @property
    def spans(self) -> bool:
        return self.level != MINUTE

    def columns(self) -> list[str]:
        cols = [*self.keys, *_SUMS, *_MAXES]
        if self.spans:
            cols += ["first_ts", "last_ts"]
        if self.latency:
            cols.append("latency")
        return cols

    def ddl(self, temp: bool = False, keyed: bool = True) -> str:
        """CREATE TABLE: keyed (primary key, WITHOUT ROWID; a stored table also gets its
        index) unless not keyed (a plain rowid table, appended to in rowid order)."""
        defs = [f"{c} INTEGER NOT NULL" for c in self.keys] + [_COUNTER_COLS]
        if self.spans:
            defs.append("first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL")
        if self.latency:
            defs.append("latency BLOB")
        if not keyed:
            return f"CREATE {'TEMP ' if temp else ''}TABLE {self.name} ({', '.join(defs)})"
        if temp:
            return f"CREATE TEMP TABLE {self.name} ({', '.join(defs)}, PRIMARY KEY ({', '.join(self.keys)})) WITHOUT ROWID"
        out = f"CREATE TABLE {self.name} ({', '.join(defs)}, PRIMARY KEY ({', '.join(self.keys)})) WITHOUT ROWID"
        if self.index:
            out += f";\nCREATE INDEX {self.name}_{self.index[0]} ON {self.name}({', '.join(self.index)})"
        return out


_LEVEL_SUFFIX = {MINUTE: "m", HOUR: "h", DAY: "d"}
_FULL_KEYS = ("order_id", "ts", "user_id", "domain", "error")
M = Table("m", MINUTE, ("ts", "user_id", "order_id", "domain", "error", "rest"))
BASE = {MINUTE: M, HOUR: Table("h", HOUR, _FULL_KEYS, ("user_id", "ts")), DAY: Table("d", DAY, _FULL_KEYS, ("user_id", "ts"))}
# Families of narrow rollups, one table per level: "t" no filter, "o" orderId,
# "n" domain (and the domain breakdowns), "e" the errors breakdown.
FAMILY_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "t": (("ts",), (), True),
    "o": (("order_id", "ts"), (), True),
    "n": (("ts", "domain"), ("domain", "ts"), True),
    "e": (("ts", "error", "domain"), ("domain", "ts"), False),
}
FAMILIES: dict[tuple[str, int], Table] = {
    (fam, level): Table(f"{fam}_{sfx}", level, keys, index, lat)
    for fam, (keys, index, lat) in FAMILY_KEYS.items()
    for level, sfx in _LEVEL_SUFFIX.items()
}
ROLLUPS: tuple[Table, ...] = (BASE[HOUR], BASE[DAY], *FAMILIES.values())

# Staging: ingest appends a body's rows here (rowid order, the cheapest write SQLite
# has) with its idempotency key in one transaction; a fold moves every staged row into
# m and the rollups with set-based statements and deletes them, in one transaction.
STAGE = Table("stage", MINUTE, M.keys)
# In-memory deltas of one fold, each keyed by its rollup's key: the staged rows are
# upserted into them (an in-memory B-tree seek per row: measured 3-4x cheaper than
# GROUP BY, whose sorter copies every row), and each rollup then takes one upsert per
# distinct key, in key order.
_XH = Table("xh", HOUR, _FULL_KEYS)
_XD = Table("xd", DAY, _FULL_KEYS)
_XO = Table("xo", MINUTE, ("order_id", "ts"))
_XT = Table("xt", MINUTE, ("ts",))
_XOH = Table("xoh", HOUR, ("order_id", "ts"))
_XN = Table("xn", MINUTE, ("ts", "domain"))
_XNH = Table("xnh", HOUR, ("ts", "domain"))
_XE = Table("xe", MINUTE, ("ts", "error", "domain"), latency=False)
_XEH = Table("xeh", HOUR, ("ts", "error", "domain"), latency=False)
_TEMPS = (_XH, _XD, _XO, _XOH, _XT, _XN, _XNH, _XE, _XEH)


# The merged histogram of a group. A stored histogram is a msgpack STREAM of maps {bucket index: count}, its sum: merging
# two is then a concatenation, done in C, and only a stream grown past HIST_CAT_BYTES
# is summed into one map by Python (hist_sum / hist_merge). Merging every pair in Python
# (two unpacks, a dict sum, a pack) was a third of the ingest time; a map is ~10-30
# bytes, so Python now runs about once per ten merges and a blob stays small.
# Readers sum the stream (hist_unpack); a single map is a stream of one, so blobs
# written before stay valid. group_concat skips NULLs and keeps every byte; the CAST
# makes the TEXT it (and ||) returns a BLOB again.
HIST_CAT_BYTES = 256
HIST_SUM = (f"CASE WHEN count(latency) <= 1 THEN max(latency) "
            f"WHEN sum(length(latency)) <= {HIST_CAT_BYTES} THEN CAST(group_concat(latency, '') AS BLOB) "
            f"ELSE hist_sum(CAST(group_concat(latency, '') AS BLOB)) END")
HIST_MERGE = (f"CASE WHEN latency IS NULL THEN excluded.latency WHEN excluded.latency IS NULL THEN latency "
              f"WHEN length(latency) + length(excluded.latency) <= {HIST_CAT_BYTES} "
              f"THEN CAST(latency || excluded.latency AS BLOB) "
              f"ELSE hist_merge(latency, excluded.latency) END")
# Into an in-memory delta streams are concatenated up to HIST_DELTA_BYTES (a hot key
# takes hundreds of rows in one fold: unbounded, each append would copy all before it),
# and once it is filled each long one is summed by one Python call (compact_sql), so
# what is derived from a delta row reads it summed.
HIST_DELTA_BYTES = 1024
_HIST_CAT = "CAST(group_concat(latency, '') AS BLOB)"
_HIST_CAT_MERGE = (f"CASE WHEN latency IS NULL THEN excluded.latency WHEN excluded.latency IS NULL THEN latency "
                   f"WHEN length(latency) + length(excluded.latency) <= {HIST_DELTA_BYTES} "
                   f"THEN CAST(latency || excluded.latency AS BLOB) "
                   f"ELSE hist_merge(latency, excluded.latency) END")


def compact_sql(delta: Table) -> str:
    return f"UPDATE {delta.name} SET latency = hist_sum(latency) WHERE length(latency) > {HIST_CAT_BYTES}"
# What migration 2 was written with (hex, comma-separated): an applied migration's text
# never changes, so its function stays registered too.
HIST_SUM_V2 = "CASE WHEN count(latency) <= 1 THEN max(latency) ELSE hist_join(group_concat(hex(latency))) END"


def derive_sql(
    target: Table, src: Table, *, grouped: bool, where: str = "1", upsert: bool = True, hist_sum: str | None = None
) -> str:
    """INSERT INTO target the rows of src rolled up to target's keys and level."""
    stored = target not in _TEMPS  # a table on disk: its histograms are kept short
    if hist_sum is None:
        hist_sum = HIST_SUM if stored else _HIST_CAT
    keys = [f"ts - ts % {target.level}" if k == "ts" and target.level > src.level else k for k in target.keys]
    first, last = ("first_ts", "last_ts") if src.spans else ("ts", "ts")
    if grouped:
        vals = [f"sum({c})" for c in _SUMS] + [f"max({c})" for c in _MAXES]
        if target.spans:
            vals += [f"min({first})", f"max({last})"]
        if target.latency:
            vals.append(hist_sum)
    else:
        vals = [*_SUMS, *_MAXES]
        if target.spans:
            vals += [first, last]
        if target.latency:
            vals.append("latency")
    sql = f"INSERT INTO {target.name} ({', '.join(target.columns())}) SELECT {', '.join(keys + vals)} FROM {src.name} WHERE {where}"
    if grouped:
        sql += f" GROUP BY {', '.join(keys)}"
    if upsert:
        # Saturating: SQLite turns an overflowing integer sum into a REAL, which would
        # be stored and shown as "1.8e+19"; min() keeps the column an exact integer.
        sets = [f"{c} = min({c} + excluded.{c}, {_INT64_MAX})" for c in _SUMS] + [f"{c} = max({c}, excluded.{c})" for c in _MAXES]
        if target.spans:
            sets += ["first_ts = min(first_ts, excluded.first_ts)", "last_ts = max(last_ts, excluded.last_ts)"]
        if target.latency:
            sets.append(f"latency = {HIST_MERGE if stored else _HIST_CAT_MERGE}")
        sql += f" ON CONFLICT ({', '.join(target.keys)}) DO UPDATE SET {', '.join(sets)}"
    return sql


def _fam(fam: str, level: int) -> Table:
    return FAMILIES[(fam, level)]


# The fold, in two phases. DELTAS read the staged rows up to rowid :top and write only
# the fold connection's in-memory deltas: they run in a read transaction, while ingests
# go on staging. APPLY then writes m (the staged rows as they are: an upsert each, a
# minute key rarely repeats) and every rollup from the deltas, one upsert per distinct
# key of the whole fold (however many bodies and rows it came from), and deletes the
# staged rows up to :top, in ONE write transaction.
_STAGED = "rowid <= :top"
FOLD_DELTAS: tuple[str, ...] = (
    derive_sql(_XH, STAGE, grouped=False, where=_STAGED),
    compact_sql(_XH),
    derive_sql(_XD, _XH, grouped=False),
    compact_sql(_XD),
    derive_sql(_XO, STAGE, grouped=False, where=_STAGED),
    compact_sql(_XO),
    derive_sql(_XOH, _XO, grouped=False),
    compact_sql(_XOH),
    derive_sql(_XT, _XO, grouped=False),
    compact_sql(_XT),
    derive_sql(_XN, STAGE, grouped=False, where=_STAGED),
    compact_sql(_XN),
    derive_sql(_XNH, _XN, grouped=False),
    compact_sql(_XNH),
    derive_sql(_XE, STAGE, grouped=False, where=f"{_STAGED} AND error != 0"),
    derive_sql(_XEH, _XE, grouped=False),
)
FOLD_APPLY: tuple[str, ...] = (
    derive_sql(M, STAGE, grouped=False, where=_STAGED),
    derive_sql(BASE[HOUR], _XH, grouped=False),
    derive_sql(BASE[DAY], _XD, grouped=False),
    derive_sql(_fam("o", MINUTE), _XO, grouped=False),
    derive_sql(_fam("o", HOUR), _XOH, grouped=False),
    derive_sql(_fam("o", DAY), _XOH, grouped=True),
    derive_sql(_fam("t", MINUTE), _XT, grouped=False),
    derive_sql(_fam("t", HOUR), _XT, grouped=True),
    derive_sql(_fam("t", DAY), _XT, grouped=True),
    derive_sql(_fam("n", MINUTE), _XN, grouped=False),
    derive_sql(_fam("n", HOUR), _XNH, grouped=False),
    derive_sql(_fam("n", DAY), _XNH, grouped=True),
    derive_sql(_fam("e", MINUTE), _XE, grouped=False),
    derive_sql(_fam("e", HOUR), _XEH, grouped=False),
    derive_sql(_fam("e", DAY), _XEH, grouped=True),
)
# The same without grouping: every staged row is its own saturating upsert into every
# table. Used only when the grouped fold overflows (staged rows of several bodies summing
# past 2**63-1 in one key, which SQLite's sum() refuses): slow, but every stored sum
# saturates as it does for any merge.
FOLD_SQL_SATURATING: tuple[str, ...] = tuple(
    derive_sql(t, STAGE, grouped=False, where=f"{_STAGED} AND error != 0" if t.name.startswith("e_") else _STAGED)
    for t in (M, *ROLLUPS)
)
# A staged row: the Row attributes stored as they are, then the string and rest ids and
# the packed histogram.
_PLAIN_COLS = ("ts", "user_id", "order_id", *_SUMS, *_MAXES)
_PLAIN = attrgetter(*_PLAIN_COLS)
_DOMAIN, _ERROR, _LATENCY = attrgetter("domain"), attrgetter("error"), attrgetter("latency")
_REST_STRS = ("protocol", "ip_out", "ip_from", "peer_id", "worker")
_REST = attrgetter("port", *_REST_STRS)
_STAGE_COLS = (*_PLAIN_COLS, "domain", "error", "rest", "latency")
_STAGE_INSERT = f"INSERT INTO stage ({', '.join(_STAGE_COLS)}) VALUES ({','.join('?' * len(_STAGE_COLS))})"
# A body's own rows summing past int64 in a rollup are refused (a 400). Every rollup key
# lies within one UTC day and counters are never negative, so the body's per-day sums
# are the largest: they overflow exactly when some rollup's would. The body's total is
# checked first (no sort), per day only when that overflows.
_SUM_COLS = ", ".join(f"sum({c})" for c in _SUMS)
_BODY_TOTAL = f"SELECT {_SUM_COLS} FROM stage WHERE rowid > ?"
_BODY_PER_DAY = f"SELECT {_SUM_COLS} FROM stage WHERE rowid > ? GROUP BY ts - ts % {DAY}"
# Fold once this many rows are staged (besides every fold_interval seconds).
FOLD_ROWS = 100_000


def _conc_ddl(name: str, secs: bool) -> str:
    return f"""
CREATE TABLE {name} (
    lvl INTEGER NOT NULL, user_id INTEGER NOT NULL, order_id INTEGER NOT NULL, ts INTEGER NOT NULL,
    {"secs BLOB NOT NULL," if secs else ""} peak INTEGER NOT NULL,
    PRIMARY KEY (lvl, user_id, order_id, ts)
) WITHOUT ROWID;
"""


def _rollup_ddl_v1(name: str) -> str:
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


def _migration_2() -> str:
    """h/d re-keyed by order first; the t/o/n/e families built from the stored minutes."""
    parts = ["DROP INDEX h_user", "DROP INDEX d_user", "ALTER TABLE h RENAME TO h_v1", "ALTER TABLE d RENAME TO d_v1"]
    parts += [t.ddl() for t in ROLLUPS]
    for old, new in (("h_v1", BASE[HOUR]), ("d_v1", BASE[DAY])):
        cols = ", ".join(new.columns())
        parts.append(f"INSERT INTO {new.name} ({cols}) SELECT {cols} FROM {old}")
        parts.append(f"DROP TABLE {old}")
    for (fam, _level), table in FAMILIES.items():
        parts.append(derive_sql(table, M, grouped=True, where="error != 0" if fam == "e" else "1", upsert=False,
                                hist_sum=HIST_SUM_V2))
    return ";\n".join(parts) + ";\n"


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
{_rollup_ddl_v1("h")}
{_rollup_ddl_v1("d")}
{_conc_ddl("conc_m", True)}
{_conc_ddl("conc_h", False)}
{_conc_ddl("conc_d", False)}
CREATE TABLE idem (key TEXT PRIMARY KEY, applied_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX idem_time ON idem(applied_at);
""",
    _migration_2(),
    sqlite_activity.MIGRATION,  # 3: activity records and download tokens (the Webshare API)
    # 4: the staging table (see STAGE).
    STAGE.ddl(keyed=False) + ";\n",
)

CONC_TABLES = {MINUTE: "conc_m", HOUR: "conc_h", DAY: "conc_d"}
_SECS = struct.Struct(f"<{SECONDS_PER_MINUTE}q")


def _peak_upsert(table: str) -> str:
    return f"""
INSERT INTO {table} (lvl, user_id, order_id, ts, peak) VALUES (?,?,?,?,?)
ON CONFLICT (lvl, user_id, order_id, ts) DO UPDATE SET peak = max(peak, excluded.peak)
"""


# Reusable Packers save building one per call: `_packer` packs staged rows (the writer
# thread only), `_udf_packer` the histogram UDFs' results (the fold thread, and the
# writer while migrating at open, before the fold thread starts).
_packer = msgpack.Packer()
_udf_packer = msgpack.Packer()


def hist_pack(h: histogram.Histogram) -> bytes | None:
    """A histogram as a msgpack map {bucket index: count} (C-speed both ways)."""
    return _udf_packer.pack(h) if h else None


def _packed_histograms(cols: dict[str, list[int]]) -> Iterator[bytes | None]:
    """Each row's histogram packed as hist_pack packs the dict of its pairs (a map header,
    then bucket and count of each pair in order), from version 2's flattened columns; a
    row without pairs is None. C-level maps only (the writer thread's `_packer`)."""
    ns, buckets, counts = cols["latency"], cols["latency_bucket"], cols["latency_count"]
    pack = _packer.pack
    pairs = map(bytes.__add__, map(pack, buckets), map(pack, counts))
    headers = {k: _packer.pack_map_header(k) for k in set(ns)}
    if ns.count(1) == len(ns):
        packed = map(headers[1].__add__, pairs)
    else:
        joined = map(b"".join, map(islice, repeat(pairs), ns))
        packed = map(bytes.__add__, map(headers.__getitem__, ns), joined)
    if 0 in headers:  # dict.get(b, b): None for the empty map, b itself otherwise
        packed = list(packed)
        return map({headers[0]: None}.get, packed, packed)
    return packed


def hist_add(acc: histogram.Histogram, blob: bytes | None) -> histogram.Histogram:
    """Add a stored histogram (a msgpack stream of maps, see HIST_SUM) into acc."""
    if not blob:
        return acc
    get = acc.get
    unpacker = msgpack.Unpacker(strict_map_key=False)
    unpacker.feed(blob)
    for hist in unpacker:
        for k, v in hist.items():
            acc[k] = get(k, 0) + v
    return acc


def hist_unpack(blob: bytes | None) -> histogram.Histogram:
    return hist_add({}, blob)


def _hist_merge(a: bytes | None, b: bytes | None) -> bytes | None:
    if not a:
        return b
    if not b:
        return a
    return hist_pack(hist_add(hist_unpack(a), b))


def _hist_sum(stream: bytes) -> bytes | None:
    """hist_sum(CAST(group_concat(latency, '') AS BLOB)): the sum of a group's histograms."""
    return hist_pack(hist_unpack(stream))


def _hist_join(hexes: str) -> bytes | None:
    """hist_join(group_concat(hex(latency))): the sum of a group's histograms."""
    acc: histogram.Histogram = {}
    get = acc.get
    for h in hexes.split(","):
        if not h:  # hex(NULL) is '', not NULL, so group_concat keeps it
            continue
        for k, v in msgpack.unpackb(bytes.fromhex(h), strict_map_key=False).items():
            acc[k] = get(k, 0) + v
    return hist_pack(acc)


# DOMAIN_ORDERS as an ORDER BY over the ranked query's columns (c: count, bt: bytes);
# SQLite's BINARY collation orders UTF-8 by code point, as Python orders str.
_ORDER_COLUMN = {"count": "c", "bytes_total": "bt"}
_ORDER_SQL = {
    order: ", ".join(f"{_ORDER_COLUMN[m]} DESC" for m in measures) + ", name"
    for order, measures in DOMAIN_ORDERS.items()
}


def peak_level(filt: Filter) -> tuple[int, int, int]:
    """(lvl, user_id, order_id) of the profile sums matching a domain-free filter."""
    if filt.user_id is not None and filt.order_id is not None:
        return 3, filt.user_id, filt.order_id
    if filt.user_id is not None:
        return 1, filt.user_id, 0
    if filt.order_id is not None:
        return 2, 0, filt.order_id
    return 0, 0, 0


_OVERFLOW = object()  # a query's sums passed int64


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
        checkpoint_interval: float = 1.0,
        max_wal_bytes: int = 256 * 1024 * 1024,
        activity_retention_days: int = 90,
        fold_rows: int = FOLD_ROWS,
        fold_interval: float = 0.25,
    ) -> None:
        self.path = str(path)
        self.checkpoint_interval = checkpoint_interval
        self.max_wal_bytes = max_wal_bytes
        self._checkpoint_stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self.writer_checkpoints = 0  # times the background checkpoint had fallen behind
        self.retention_days = retention_days
        self.activity_retention_days = activity_retention_days
        self.idempotency_days = idempotency_days
        self.synchronous = synchronous.upper()
        self.cache_kib = cache_mib * 1024
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        # The fold has its own thread and connection: its delta phase only reads the
        # database, so it runs while the writer stages more bodies.
        self._fold_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-fold")
        self._f: sqlite3.Connection | None = None
        # Held by every write transaction (the writer's, the fold's apply phase): one
        # writer at a time is SQLite's rule, and waiting here never ends in SQLITE_BUSY.
        self._write_lock = threading.Lock()
        self._reader_pool = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
        self._w: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._strings: dict[str, int] = {}
        self._rests: dict[tuple[int, str, str, str, str, str], int] = {}
        self._pending: list[tuple[Batch, str | None, int, asyncio.Future[bool]]] = []
        self._pending_lock = threading.Lock()
        self._drain_scheduled = False
        self.fold_rows = fold_rows
        self.fold_interval = fold_interval
        # Rows committed to the staging table and not folded yet: raised by the writer
        # before it answers the ingests that staged them, lowered by a fold after its
        # commit (under _staged_lock); read anywhere (a query that sees it at 0 was
        # answered after the fold that emptied it).
        self._staged = 0
        self._staged_lock = threading.Lock()
        self._fold_task: asyncio.Task[None] | None = None
        self._fold_started: Future[int] | None = None  # by the writer, at fold_rows
        self.folds = 0  # folds run (each one transaction)

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

    async def _fold_staged(self) -> None:
        if self._staged:
            await self._on(self._fold_pool, self._fold)

    async def _query(self, fn: Callable[..., T], *args: Any) -> T:
        """A query sees every acknowledged row: it reads the staged rows besides the
        rollups, in one snapshot. (Folding first instead made a query under a steady
        ingest wait for a fold: measured p50 200 ms, p99 590 ms at 10,000 rows/s.)"""
        out = await self._on(self._reader_pool, self._in_snapshot_summable, fn, *args)
        if out is _OVERFLOW:
            # Staged rows of one key summing past 2**63-1, which SQLite's sum() refuses:
            # folded, they are saturated in the rollups.
            await self._fold_staged()
            return await self._read(fn, *args)
        return out  # type: ignore[no-any-return]

    def _in_snapshot_summable(self, fn: Callable[..., T], *args: Any) -> T | object:
        try:
            return self._in_snapshot(fn, *args)
        except sqlite3.OperationalError as exc:
            if "integer overflow" not in str(exc):
                raise
            return _OVERFLOW

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
            con.execute("PRAGMA temp_store = MEMORY")  # GROUP BY sorts stay off the disk
            self._local.con = con
            self._local.names = {0: ""}
            with self._readers_lock:
                self._readers.append(con)
        return con

    # ---- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        await self._write(self._open_writer)
        await self._on(self._fold_pool, self._open_fold)
        if self.fold_interval > 0:
            self._fold_task = asyncio.get_running_loop().create_task(self._fold_loop())
        if self.checkpoint_interval > 0:
            self._checkpoint_stop.clear()
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True)
            self._checkpointer.start()
        log.info("store opened", extra=kv(path=self.path, strings=len(self._strings), rests=len(self._rests)))

    def _connect(self) -> sqlite3.Connection:
        """A writing connection (the writer's or the fold's)."""
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode = WAL")
        con.execute(f"PRAGMA synchronous = {self.synchronous}")
        con.execute(f"PRAGMA cache_size = -{self.cache_kib}")
        con.execute("PRAGMA journal_size_limit = 67108864")
        con.execute("PRAGMA busy_timeout = 5000")
        con.execute("PRAGMA temp_store = MEMORY")
        if self.checkpoint_interval > 0:
            con.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it
        con.create_function("hist_merge", 2, _hist_merge, deterministic=True)
        con.create_function("hist_join", 1, _hist_join, deterministic=True)
        con.create_function("hist_sum", 1, _hist_sum, deterministic=True)
        return con

    def _open_fold(self) -> None:
        con = self._connect()
        for t in _TEMPS:
            con.execute(t.ddl(temp=True))
        self._f = con

    def _open_writer(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        self._migrate(con)
        # Rows staged by an earlier process (acknowledged, not yet folded) are folded
        # by the first fold, like any other.
        self._staged = con.execute("SELECT count(*) FROM stage").fetchone()[0]
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

    def _checkpoint_loop(self) -> None:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._checkpoint_stop.wait(self.checkpoint_interval):
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # e.g. disk full: the writer's own check still bounds the WAL
                    log.warning("wal checkpoint failed", extra=kv(error=str(exc), path=self.path))
        finally:
            con.close()

    def _bound_wal(self, con: sqlite3.Connection) -> None:
        """On the writer, after a commit: checkpoint here if the checkpointer fell behind."""
        try:
            size = os.path.getsize(self.path + "-wal")
        except OSError:
            return
        if size > self.max_wal_bytes:
            busy, frames, done = con.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            self.writer_checkpoints += 1
            log.info("wal over its limit, checkpointed by the writer",
                     extra=kv(wal_bytes=size, limit=self.max_wal_bytes, frames=frames, copied=done, busy=busy))

    async def _fold_loop(self) -> None:
        """Fold what is staged every fold_interval seconds, so staged rows do not wait
        for the next query or for fold_rows more."""
        while True:
            await asyncio.sleep(self.fold_interval)
            try:
                await self._fold_staged()
            except StoreError:
                pass  # logged by _on; the rows stay staged and the next fold retries

    async def close(self) -> None:
        if self._fold_task is not None:
            self._fold_task.cancel()
            try:
                await self._fold_task
            except asyncio.CancelledError:
                pass
            self._fold_task = None
        if self._f is not None:
            await self._on(self._fold_pool, self._close_fold)
        if self._checkpointer is not None:
            self._checkpoint_stop.set()
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
            self._checkpointer = None
        if self._w is not None:
            await self._write(self._close_writer)
        self._reader_pool.shutdown(wait=True)
        self._writer_pool.shutdown(wait=True)
        self._fold_pool.shutdown(wait=True)
        with self._readers_lock:
            for con in self._readers:
                con.close()
            self._readers.clear()

    def _close_fold(self) -> None:
        assert self._f is not None
        try:
            self._fold()  # a stopped collector leaves nothing staged
        finally:
            self._f.close()
            self._f = None

    def _close_writer(self) -> None:
        assert self._w is not None
        try:
            # Leave the database file whole: the readers may still be open, so closing
            # the writer would not checkpoint by itself.
            self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
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
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        with self._pending_lock:
            self._pending.append((batch, idempotency_key, now, fut))
            schedule = not self._drain_scheduled
            self._drain_scheduled = True
        if schedule:
            # Batches arriving while the writer is busy wait for one drain: group commit.
            loop.run_in_executor(self._writer_pool, self._drain, loop)
        return await fut

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._pending_lock:
            items, self._pending = self._pending, []
            self._drain_scheduled = False
        if not items:
            return
        try:
            with gc_paused():
                results = self._ingest_group([(b, k, n) for b, k, n, _ in items])
        except BaseException as exc:  # the COMMIT itself failed: nothing was stored
            results = [exc] * len(items)
        for (_b, _k, _n, fut), res in zip(items, results):
            if isinstance(res, sqlite3.Error):
                log.error("sqlite failed", extra=kv(error=str(res), path=self.path))
                res = StoreError(f"storage error: {res}")
            loop.call_soon_threadsafe(_settle, fut, res)
        if self._staged >= self.fold_rows:
            # After the answers, on the fold thread: the writer goes on staging.
            started = self._fold_started
            if started is None or started.done():
                self._fold_started = self._fold_pool.submit(self._fold_logged)
            elif self._staged >= 4 * self.fold_rows:
                started.result()  # the folds fell behind: staging waits, the stage stays bounded

    def _fold_logged(self) -> int:
        try:
            return self._fold()
        except sqlite3.Error as exc:  # the staged rows stay; the next fold retries
            log.error("sqlite fold failed", extra=kv(error=str(exc), path=self.path))
            return 0

    def _ingest(self, batch: Batch, key: str | None, now: int) -> bool:
        """One batch in its own transaction, on the calling (writer) thread."""
        res = self._ingest_group([(batch, key, now)])[0]
        if isinstance(res, BaseException):
            raise res
        return res

    def _ingest_group(self, items: list[tuple[Batch, str | None, int]]) -> list[bool | BaseException]:
        """Apply batches in one transaction, each in its own savepoint."""
        con = self._w
        if con is None:
            raise StoreError("store is not open")
        with self._write_lock:
            return self._ingest_group_locked(con, items)

    def _ingest_group_locked(
        self, con: sqlite3.Connection, items: list[tuple[Batch, str | None, int]]
    ) -> list[bool | BaseException]:
        results: list[bool | BaseException] = []
        new_strings: list[str] = []
        new_rests: list[tuple[int, str, str, str, str, str]] = []
        staged = 0
        con.execute("BEGIN IMMEDIATE")
        try:
            for batch, key, now in items:
                mark_s, mark_r = len(new_strings), len(new_rests)
                con.execute("SAVEPOINT batch")
                try:
                    applied = self._ingest_one(con, batch, key, now, new_strings, new_rests)
                    con.execute("RELEASE batch")
                    results.append(applied)
                    if applied:
                        staged += len(batch.rows)
                except Exception as exc:
                    con.execute("ROLLBACK TO batch")
                    con.execute("RELEASE batch")
                    self._forget(new_strings[mark_s:], new_rests[mark_r:])
                    del new_strings[mark_s:], new_rests[mark_r:]
                    if isinstance(exc, sqlite3.OperationalError) and "integer overflow" in str(exc):
                        # the body's own rows sum past int64 in a rollup: its content is
                        # at fault (a 400 the agent sets aside), not the store (a 503
                        # the agent would retry forever)
                        exc = WireError("logs", "the rows of this body sum past 2**63-1 in one rollup")
                    results.append(exc)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            self._forget(new_strings, new_rests)
            raise
        with self._staged_lock:
            self._staged += staged
        try:
            self._bound_wal(con)
        except sqlite3.Error as exc:  # the batches are committed: say so, answer them
            log.warning("wal checkpoint failed", extra=kv(error=str(exc), path=self.path))
        return results

    def _forget(self, strings: list[str], rests: list[tuple[int, str, str, str, str, str]]) -> None:
        # Ids handed out inside a rolled-back transaction do not exist on disk.
        for s in strings:
            self._strings.pop(s, None)
        for r in rests:
            self._rests.pop(r, None)

    def _ingest_one(
        self,
        con: sqlite3.Connection,
        batch: Batch,
        key: str | None,
        now: int,
        new_strings: list[str],
        new_rests: list[tuple[int, str, str, str, str, str]],
    ) -> bool:
        if key is not None:
            cur = con.execute("INSERT OR IGNORE INTO idem (key, applied_at) VALUES (?, ?)", (key, now))
            if cur.rowcount == 0:
                return False
        self._ingest_rows(con, batch, new_strings, new_rests)
        self._ingest_profiles(con, batch)
        sqlite_activity.insert(con, batch.activity)
        return True

    def _sid(self, con: sqlite3.Connection, s: str, new: list[str]) -> int:
        i = self._strings.get(s)
        if i is None:
            i = con.execute("INSERT INTO strings (s) VALUES (?)", (s,)).lastrowid
            assert i is not None
            self._strings[s] = i
            new.append(s)
        return i

    def _rest_or_new(
        self, con: sqlite3.Connection, rk: tuple[int, str, str, str, str, str], new_strings: list[str],
        new_rests: list[tuple[int, str, str, str, str, str]],
    ) -> int:
        rest = self._rests.get(rk)  # the same new key may repeat within one body
        return self._rest_id(con, rk, new_strings, new_rests) if rest is None else rest

    def _rest_id(
        self, con: sqlite3.Connection, rk: tuple[int, str, str, str, str, str], new_strings: list[str],
        new_rests: list[tuple[int, str, str, str, str, str]],
    ) -> int:
        ids = [self._sid(con, s, new_strings) for s in rk[1:]]
        rest = con.execute(
            "INSERT INTO rests (port, protocol, ip_out, ip_from, peer_id, worker) VALUES (?,?,?,?,?,?)", (rk[0], *ids)
        ).lastrowid
        assert rest is not None
        self._rests[rk] = rest
        new_rests.append(rk)
        return rest

    def _ingest_rows(
        self,
        con: sqlite3.Connection,
        batch: Batch,
        new_strings: list[str],
        new_rests: list[tuple[int, str, str, str, str, str]],
    ) -> None:
        rows = batch.rows
        if not rows:
            return
        if isinstance(rows, ColumnRows) and rows.untouched:
            self._stage(con, self._column_tuples(con, rows, new_strings, new_rests))
            return
        # With C-level map()s and zip()s (attribute reads, id lookups, histogram
        # packing, tuple building), no Python code per row: a Python loop building each
        # row's tuple cost about as much as the whole staging write.
        domains = list(map(self._strings.get, map(_DOMAIN, rows)))
        if None in domains:
            domains = [self._sid(con, r.domain, new_strings) if i is None else i for i, r in zip(domains, rows)]
        errors = list(map(self._strings.get, map(_ERROR, rows)))
        if None in errors:
            errors = [self._sid(con, r.error, new_strings) if i is None else i for i, r in zip(errors, rows)]
        rest_keys = list(map(_REST, rows))
        rest_ids = list(map(self._rests.get, rest_keys))
        if None in rest_ids:
            rest_ids = [self._rest_or_new(con, k, new_strings, new_rests) if i is None else i
                        for i, k in zip(rest_ids, rest_keys)]
        pack = _packer.pack
        latencies = [pack(h) if h else None for h in map(_LATENCY, rows)]
        self._stage(con, map(tuple.__add__, map(_PLAIN, rows), zip(domains, errors, rest_ids, latencies)))

    def _column_tuples(
        self,
        con: sqlite3.Connection,
        rows: ColumnRows,
        new_strings: list[str],
        new_rests: list[tuple[int, str, str, str, str, str]],
    ) -> Iterator[tuple[Any, ...]]:
        """A version 2 body's staged rows straight from its columns: ids looked up once per
        distinct string index (and rest tuple) of the body, in first-seen order, so the
        ids handed out are those the Row path would hand out; histograms packed from the
        flattened pairs by C-level maps (the bytes `_packer.pack` makes of the dict)."""
        table, cols = rows.table, rows.columns
        sids: list[list[int]] = []
        for name in ("domain", "error"):
            idx = cols[name]
            local = {i: self._sid(con, table[i], new_strings) for i in dict.fromkeys(idx)}
            sids.append(list(map(local.__getitem__, idx)))
        rest_keys = list(zip(cols["port"], *(cols[c] for c in _REST_STRS)))
        local_rest: dict[tuple[int, ...], int] = {}
        for k in dict.fromkeys(rest_keys):
            rk = (k[0], *map(table.__getitem__, k[1:]))
            rest = self._rests.get(rk)
            local_rest[k] = self._rest_id(con, rk, new_strings, new_rests) if rest is None else rest
        rest_ids = map(local_rest.__getitem__, rest_keys)
        return zip(rows.ts, *(cols[c] for c in _PLAIN_COLS[1:]), *sids, rest_ids, _packed_histograms(cols))

    def _stage(self, con: sqlite3.Connection, staged: Iterator[tuple[Any, ...]]) -> None:
        top = con.execute("SELECT max(rowid) FROM stage").fetchone()[0] or 0
        con.executemany(_STAGE_INSERT, staged)
        try:
            con.execute(_BODY_TOTAL, (top,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "integer overflow" not in str(exc):
                raise
            con.execute(_BODY_PER_DAY, (top,)).fetchall()  # raises it again: a 400

    def _fold(self) -> int:
        """Fold the rows staged so far (up to rowid `top`), on the fold thread.

        Deltas first, in a read transaction (the writer stages on meanwhile: rows up to
        `top` never change, only a fold deletes them, and later ones get higher rowids
        while these exist). Then, in ONE write transaction, m and every rollup from the
        deltas and the deletion of the folded rows: killed at any point before its
        COMMIT, the rows are still staged and nothing of them is in the rollups; after
        it, they are folded and gone from the stage. Each row counts exactly once."""
        con = self._f
        if con is None:
            raise StoreError("store is not open")
        if not self._staged:
            return 0
        con.execute("BEGIN")
        try:
            top = con.execute("SELECT max(rowid) FROM stage").fetchone()[0]
            if top is None:
                return 0
            bound = {"top": top}
            for t in _TEMPS:
                con.execute(f"DELETE FROM temp.{t.name}")
            for sql in FOLD_DELTAS:
                con.execute(sql, bound)
        finally:
            con.execute("COMMIT")  # a read transaction: it ends the snapshot, the deltas stay
        with self._write_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute("SAVEPOINT fold")
                try:
                    for sql in FOLD_APPLY:
                        con.execute(sql, bound)
                except sqlite3.OperationalError as exc:
                    if "integer overflow" not in str(exc):
                        raise
                    con.execute("ROLLBACK TO fold")
                    log.warning("fold sums past 2**63-1, folding row by row (saturating)", extra=kv(rows=self._staged))
                    for sql in FOLD_SQL_SATURATING:
                        con.execute(sql, bound)
                con.execute("RELEASE fold")
                n = con.execute(f"DELETE FROM stage WHERE {_STAGED}", bound).rowcount
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            with self._staged_lock:
                self._staged -= n
            self.folds += 1
            try:
                self._bound_wal(con)
            except sqlite3.Error as exc:  # the fold is committed
                log.warning("wal checkpoint failed", extra=kv(error=str(exc), path=self.path))
        return n

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
        await self._fold_staged()  # old staged rows are deleted like stored ones
        cutoff = floor_to(now - self.retention_days * DAY, MINUTE)
        deleted: dict[str, int] = {}
        jobs: list[tuple[str, str, int, int]] = [(t.name, "ts", floor_to(cutoff, t.level), max(t.level, HOUR)) for t in (M, *ROLLUPS)]
        jobs += [
            ("conc_m", "ts", cutoff, 0),
            ("conc_h", "ts", floor_to(cutoff, HOUR), 0),
            ("conc_d", "ts", floor_to(cutoff, DAY), 0),
            ("idem", "applied_at", now - max(self.idempotency_days, 7) * DAY, 0),
            ("activity", "ts_us", (now - self.activity_retention_days * DAY) * 1_000_000,
             sqlite_activity.RETENTION_CHUNK_US),
            ("download_tokens", "expire_at", now + 1, 0),  # expired: expire_at <= now
        ]
        order_led = {t.name for t in (M, *ROLLUPS) if t.keys[0] == "order_id"}
        for table, column, before, step in jobs:
            # Small transactions (an hour or a day of a time-led table, a few orders of
            # an order-led one), so ingests interleave.
            total = 0
            after: int | None = -1
            while after is not None:
                if table in order_led:
                    n, after = await self._write(self._delete_orders, table, before, after)
                else:
                    n, more = await self._write(self._delete_chunk, table, column, before, step)
                    after = 0 if more else None
                total += n
            deleted[table] = total
        if any(deleted.values()):
            log.info("retention applied", extra=kv(**deleted))
        return deleted

    def _in_write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        con = self._w
        assert con is not None
        with self._write_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                out = fn(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return out

    def _delete_chunk(self, table: str, column: str, before: int, step: int) -> tuple[int, bool]:
        con = self._w
        assert con is not None
        oldest = con.execute(f"SELECT min({column}) FROM {table}").fetchone()[0]
        if oldest is None or oldest >= before:
            return 0, False
        limit = min(before, oldest + step) if step else before
        n = self._in_write_tx(lambda c: c.execute(f"DELETE FROM {table} WHERE {column} < ?", (limit,)).rowcount)
        return n, limit < before

    def _delete_orders(self, table: str, before: int, after: int) -> tuple[int, int | None]:
        """Delete rows before `before` of up to 64 orders above `after` (each a seek)."""

        def run(con: sqlite3.Connection) -> tuple[int, int | None]:
            n, last = 0, after
            for _ in range(64):
                nxt = con.execute(f"SELECT min(order_id) FROM {table} WHERE order_id > ?", (last,)).fetchone()[0]
                if nxt is None:
                    return n, None
                n += con.execute(f"DELETE FROM {table} WHERE order_id = ? AND ts < ?", (nxt, before)).rowcount
                last = nxt
            return n, last

        return self._in_write_tx(run)

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
    def _family(filt: Filter) -> str | None:
        """The narrow rollup family answering this filter, None: the full-key tables."""
        if filt.user_id is not None:
            return None
        if filt.order_id is not None:
            return "o" if filt.domain is None else None
        return "t" if filt.domain is None else "n"

    @staticmethod
    def _span_cols(table: Table, grouped: bool) -> str:
        if not table.spans:
            return "min(ts), max(ts)" if grouped else "ts, ts"
        return "min(first_ts), max(last_ts)" if grouped else "first_ts, last_ts"

    async def chart(
        self, plan: ChartPlan, filt: Filter, *, with_latency: bool = False, with_peaks: bool = False
    ) -> dict[int, Totals]:
        return await self._query(self._chart, plan, filt, with_latency, with_peaks)

    def _chart(self, con: sqlite3.Connection, plan: ChartPlan, filt: Filter, with_latency: bool, with_peaks: bool) -> dict[int, Totals]:
        ok, domain_id = self._domain_id(con, filt)
        buckets: dict[int, Totals] = {}
        if not ok:
            return buckets
        where, args = self._where(filt, domain_id)
        fam = self._family(filt)
        edges = plan.edges

        def bucket(ts: int) -> Totals:
            i = bisect_right(edges, ts) - 1
            t = buckets.get(i)
            if t is None:
                t = buckets[i] = Totals()
            return t

        for seg in plan.segments:
            if fam is not None:
                # One row per minute/hour/day start: no GROUP BY, histograms read in place.
                table = FAMILIES[(fam, seg.level)]
                lat = ", latency" if with_latency else ""
                sql = (
                    f"SELECT ts, {_COUNTERS}, {self._span_cols(table, False)}{lat} FROM {table.name} "
                    f"WHERE ts >= ? AND ts < ?{where}"
                )
                for row in con.execute(sql, (seg.start, seg.end, *args)):
                    t = bucket(row[0])
                    t.add_sums(*row[1:11])
                    if with_latency and row[11]:
                        hist_add(t.latency, row[11])
            else:
                table = BASE[seg.level]
                sql = (
                    f"SELECT ts, sum(count), sum(bytes_sent), sum(bytes_received), sum(error_count), "
                    f"sum(duration_ms), sum(conn_ms), max(max_concurrency), max(duration_max_ms), "
                    f"{self._span_cols(table, True)} FROM {table.name} WHERE ts >= ? AND ts < ?{where} GROUP BY ts"
                )
                for row in con.execute(sql, (seg.start, seg.end, *args)):
                    bucket(row[0]).add_sums(*row[1:])
                if with_latency:
                    sql = f"SELECT ts, latency FROM {table.name} WHERE ts >= ? AND ts < ?{where} AND latency IS NOT NULL"
                    for ts, blob in con.execute(sql, (seg.start, seg.end, *args)):
                        hist_add(bucket(ts).latency, blob)
            if with_peaks and filt.domain is None:
                lvl, u, o = peak_level(filt)
                sql = (
                    f"SELECT ts, max(peak) FROM {CONC_TABLES[seg.level]} "
                    "WHERE lvl = ? AND user_id = ? AND order_id = ? AND ts >= ? AND ts < ? GROUP BY ts"
                )
                for ts, peak in con.execute(sql, (lvl, u, o, seg.start, seg.end)):
                    bucket(ts).add_peak(peak)
        if plan.segments:
            # Rows acknowledged but not folded yet, from the same snapshot: a fold moves
            # rows from the stage to the rollups in one transaction, so each is read once.
            span = (plan.segments[0].start, plan.segments[-1].end, *args)
            sql = (
                "SELECT ts, sum(count), sum(bytes_sent), sum(bytes_received), sum(error_count), "
                "sum(duration_ms), sum(conn_ms), max(max_concurrency), max(duration_max_ms), min(ts), max(ts) "
                f"FROM stage WHERE ts >= ? AND ts < ?{where} GROUP BY ts"
            )
            for row in con.execute(sql, span):
                bucket(row[0]).add_sums(*row[1:])
            if with_latency:
                # One stream per minute: a Python unpack per staged row cost ~5 us, so
                # 40,000 staged rows made a 1-day latency chart 200 ms slower.
                sql = (f"SELECT ts, CAST(group_concat(latency, '') AS BLOB) FROM stage "
                       f"WHERE ts >= ? AND ts < ?{where} AND latency IS NOT NULL GROUP BY ts")
                for ts, blob in con.execute(sql, span):
                    hist_add(bucket(ts).latency, blob)
        for t in buckets.values():  # sums saturate, as stored ones do, however many rows a bucket took
            for name in _SUMS:
                if getattr(t, name) > _INT64_MAX:
                    setattr(t, name, _INT64_MAX)
        return buckets

    def _breakdown_source(
        self, con: sqlite3.Connection, start: int, end: int, filt: Filter, family: str, columns: str, keep: str
    ) -> tuple[str, list[int]] | None:
        """`SELECT columns, f, l` (first and last minute) over the rollup segments that
        cover [start, end) for a breakdown, as one UNION ALL with its parameters; the
        narrow `family` where the filter allows it. None: nothing can match."""
        ok, domain_id = self._domain_id(con, filt)
        if not ok:
            return None
        where, args = self._where(filt, domain_id)
        narrow = self._family(filt) in ("t", "n")
        parts, params = [], []
        for seg in breakdown_cover(start, end):
            table = FAMILIES[(family, seg.level)] if narrow else BASE[seg.level]
            first, last = ("first_ts", "last_ts") if table.spans else ("ts", "ts")
            parts.append(
                f"SELECT {columns}, {first} AS f, {last} AS l FROM {table.name} "
                f"WHERE ts >= ? AND ts < ?{where} AND {keep}"
            )
            params += [seg.start, seg.end, *args]
        if not parts:
            return None
        # Rows acknowledged but not folded yet (see _chart).
        parts.append(f"SELECT {columns}, ts AS f, ts AS l FROM stage WHERE ts >= ? AND ts < ?{where} AND {keep}")
        params += [*row_span(start, end), *args]
        return " UNION ALL ".join(parts), params

    async def domains(
        self, start: int, end: int, filt: Filter, *, order: str, limit: int, offset: int = 0
    ) -> DomainPage:
        return await self._query(self._domains, start, end, filt, order, limit, offset)

    def _domains(
        self, con: sqlite3.Connection, start: int, end: int, filt: Filter, order: str, limit: int, offset: int
    ) -> DomainPage:
        # Only the measures the breakdowns show (see Store.domains): every aggregate
        # costs about a millisecond per 10,000 rows.
        source = self._breakdown_source(
            con, start, end, filt, "n", "domain, count, bytes_sent, bytes_received, error_count", "domain != 0"
        )
        if source is None:
            return DomainPage([], 0)
        union, params = source
        # Grouped, ranked and cut to the page in SQL: a week holds thousands of domains
        # and only the page's rows (and their names) come back to Python.
        grouped = (
            "SELECT domain, sum(count) AS c, sum(bytes_sent) AS bs, sum(bytes_received) AS br, "
            f"sum(error_count) AS e, min(f) AS f, max(l) AS l FROM ({union}) GROUP BY domain"
        )
        sql = (
            f"SELECT s.s AS name, c, bs, br, e, f, l, bs + br AS bt, count(*) OVER () FROM ({grouped}) "
            f"JOIN strings AS s ON s.id = domain ORDER BY {_ORDER_SQL[order]} LIMIT ? OFFSET ?"
        )
        rows = con.execute(sql, (*params, limit, offset)).fetchall()
        if rows:
            total = rows[0][8]
        elif offset:  # a page past the end still tells how many there are
            total = con.execute(f"SELECT count(*) FROM ({grouped})", params).fetchone()[0]
        else:
            total = 0
        items = [
            (name, Totals(count=c, bytes_sent=bs, bytes_received=br, error_count=e, first_ts=f, last_ts=l))
            for name, c, bs, br, e, f, l, _bt, _n in rows
        ]
        return DomainPage(items, total)

    async def errors(self, start: int, end: int, filt: Filter) -> dict[str, ErrorTotals]:
        return await self._query(self._errors, start, end, filt)

    def _errors(self, con: sqlite3.Connection, start: int, end: int, filt: Filter) -> dict[str, ErrorTotals]:
        source = self._breakdown_source(con, start, end, filt, "e", "error, domain, error_count AS n", "error != 0")
        if source is None:
            return {}
        union, params = source
        # Totals per error, and per error only the domains that can be among the
        # samples (rank <= SAMPLE_DOMAINS keeps every tie), all in SQL: a week holds
        # tens of thousands of (error, domain) pairs.
        sql = (
            f"WITH g AS MATERIALIZED (SELECT error, domain, sum(n) AS n, min(f) AS f, max(l) AS l "
            f"FROM ({union}) GROUP BY error, domain) "
            "SELECT 0, error, 0, sum(n), min(f), max(l) FROM g GROUP BY error "
            "UNION ALL SELECT 1, error, domain, n, 0, 0 FROM ("
            "SELECT error, domain, n, rank() OVER (PARTITION BY error ORDER BY n DESC) AS rk FROM g WHERE domain != 0"
            f") WHERE rk <= {SAMPLE_DOMAINS}"
        )
        rows = con.execute(sql, params).fetchall()
        names = self._names(con, [r[1] for r in rows] + [r[2] for r in rows])
        out: dict[str, ErrorTotals] = {}
        for kind, e, d, n, first, last in rows:
            t = out.get(names[e])
            if t is None:
                t = out[names[e]] = ErrorTotals()
            if kind == 0:
                t.total_errors, t.first_ts, t.last_ts = n, first, last
            else:
                t.by_domain[names[d]] = n
        return out

    # ---- Webshare-compatible API: collector.storage.sqlite_activity ---------------

    async def activity_page(self, q: ActivityQuery) -> ActivityPage:
        return await self._read(sqlite_activity.page, q)

    async def _activity_chunk(self, q: ActivityQuery) -> list[tuple[int, Activity]]:
        return await self._read(sqlite_activity.chunk, q)

    def activity_stream(self, q: ActivityQuery) -> AsyncIterator[list[tuple[int, Activity]]]:
        return keyset_stream(self._activity_chunk, q)

    async def hourly_stats(self, plan: ChartPlan, filt: Filter) -> dict[int, StatsTotals]:
        return await self._query(self._hourly_stats, plan, filt)

    def _hourly_stats(self, con: sqlite3.Connection, plan: ChartPlan, filt: Filter) -> dict[int, StatsTotals]:
        ok, domain_id = self._domain_id(con, filt)
        if not ok:
            return {}
        where, args = self._where(filt, domain_id)
        return sqlite_activity.hourly_stats(con, plan, where, args)

    async def download_token(
        self, user_id: int | None, scope: str, now: int, ttl: int, new_key: str, *, reset: bool = False
    ) -> DownloadToken:
        return await self._write(
            self._in_write_tx, lambda con: sqlite_activity.download_token(con, user_id, scope, now, ttl, reset, new_key)
        )

    async def find_download_token(self, key: str, scope: str, now: int) -> DownloadToken | None:
        return await self._read(sqlite_activity.find_download_token, key, scope, now)


def _settle(fut: "asyncio.Future[bool]", res: bool | BaseException) -> None:
    if fut.done():  # the caller went away (client disconnected)
        return
    if isinstance(res, BaseException):
        fut.set_exception(res)
    else:
        fut.set_result(res)
