"""Ingest body version 2: the same Batch as FonProxy's row shape, in columns.

Strategy
- Version 1 (agent.wire.batch) writes every row as a map with 19 named fields and its
  minute as a 19-character string: about 285 bytes per row, more than the log line it
  came from. Version 2 writes each field once per batch as a column (a list with one
  value per row), every string as an index into one per-batch string table, and every
  minute as a small offset from the batch's first minute. msgpack packs the small ints
  in 1 to 3 bytes, so a row costs about 40 bytes, and packing lists of ints runs in C.
- Both versions decode to the same Batch: for any batch b,
  decode_body(encode_compact(b)) == decode_body(encode_msgpack(b)). The collector keeps
  accepting version 1 (FonProxy's shape, and older agents); a body is version 2 iff its
  top level has "v": 2 (version 1 bodies have no "v": it was an unknown field there).
- `batch_from_columns` is the reference validator of version 2, field by field in
  Python, raising the WireError that names the first bad value (logs[3].count,
  logs.domain for a whole column, strings[4] for a table entry).
  collector.fastdecode checks the same rules at C speed and asks this one when in doubt.

Body (msgpack, or JSON with the same structure):
    {"v": 2,
     "strings": [str, ...],       # each <= 255 characters
     "t0": int,                   # epoch MINUTE of the ts offsets below (0 if none)
     "logs": {column: [...]},     # required; every column below, all of one length
     "concurrency": {column: [...]},  # optional
     "activity": {column: [...]}}     # optional
logs columns: "ts" (minute - t0, >= 0), the int dimensions user_id, order_id, port,
    the string dimensions protocol .. error (indices into "strings"), the counters
    count .. duration_max_ms (ranges as in version 1), and the latency histograms as
    "latency" (number of [bucket, count] pairs of each row) plus "latency_bucket" and
    "latency_count" (all rows' pairs, flattened in row order; a row's buckets strictly
    increase).
concurrency columns: "ts", "user_id", "order_id", "worker" (a string index) and
    "active": 60 counts per profile, flattened in profile order.
activity columns: every field of Activity; strings as indices, null where version 1
    allows null.
A ts column's minute may not pass 9999-12-31 23:59 (the last one version 1 can spell).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from itertools import chain
from operator import attrgetter
from typing import Any

import msgpack

from agent.wire import histogram
from agent.wire.batch import (
    ACTIVITY_COUNTERS,
    ACTIVITY_FIELDS,
    ACTIVITY_IDS,
    ACTIVITY_OPT_COUNTERS,
    ACTIVITY_OPT_PORTS,
    ACTIVITY_OPT_STRS,
    ACTIVITY_PROTOCOLS,
    ACTIVITY_STRS,
    COUNTERS,
    INT_DIMENSIONS,
    MAX_COUNTER,
    MAX_INT,
    MAX_PORT,
    MAX_STR,
    SECONDS_PER_MINUTE,
    STR_DIMENSIONS,
    Activity,
    Batch,
    Profile,
    Row,
    WireError,
    _show,
)

VERSION = 2
# 9999-12-31 23:59:00 UTC in epoch minutes: version 1's timestamps end there
MAX_MINUTE = 253402300740 // 60
TOP_FIELDS = ("v", "strings", "t0", "logs", "concurrency", "activity")
ROW_COLUMNS = ("ts",) + INT_DIMENSIONS + STR_DIMENSIONS + COUNTERS + ("latency", "latency_bucket", "latency_count")
PROFILE_COLUMNS = ("ts", "user_id", "order_id", "worker", "active")
ACTIVITY_COLUMNS = ACTIVITY_FIELDS
# Columns whose length is not the number of rows (profiles) of their section.
_FREE_LENGTH = frozenset(("latency_bucket", "latency_count", "active"))

_ROW_VALUES = attrgetter(*(INT_DIMENSIONS + STR_DIMENSIONS + COUNTERS))
# RowColumns' columns: Row's fields without latency, in Row's order
ROW_VALUE_FIELDS = ("ts",) + INT_DIMENSIONS + STR_DIMENSIONS + COUNTERS
if tuple(f.name for f in fields(Row)) != ROW_VALUE_FIELDS + ("latency",):
    raise ImportError("agent.wire.batch.Row changed its fields; update agent.wire.compact.RowColumns")
_PROFILE_VALUES = attrgetter("user_id", "order_id", "worker")
_ACTIVITY_VALUES = attrgetter(*ACTIVITY_FIELDS)
if tuple(f.name for f in fields(Activity)) != ACTIVITY_FIELDS:
    raise ImportError("agent.wire.batch.Activity changed its field order; update ActivityRecords")
_N_ROW_VALUES = len(INT_DIMENSIONS + STR_DIMENSIONS + COUNTERS)
_N_INT = len(INT_DIMENSIONS)
_N_STR = len(STR_DIMENSIONS)
_ACTIVITY_STR_SET = frozenset(ACTIVITY_STRS + ACTIVITY_OPT_STRS + ("protocol",))


# -- encoding -------------------------------------------------------------------------
def _latency_columns(hists: list[histogram.Histogram]) -> tuple[list[int], list[int], list[int]]:
    """Per-row pair counts and the flattened pairs; zero counts are left out (as
    version 1's histogram.to_wire does) and buckets are written in increasing order."""
    ns: list[int] = []
    buckets: list[int] = []
    counts: list[int] = []
    add_n, add_b, add_c = ns.append, buckets.append, counts.append
    for hist in hists:
        if len(hist) == 1:  # most rows hold one request
            ((b, c),) = hist.items()
            if c:
                add_n(1)
                add_b(b)
                add_c(c)
            else:
                add_n(0)
        elif not hist:
            add_n(0)
        else:
            k = 0
            for b, c in sorted(hist.items()):
                if c:
                    add_b(b)
                    add_c(c)
                    k += 1
            add_n(k)
    return ns, buckets, counts


class LazyRows(Sequence[Row]):
    """Rows held as columns, made into Row objects only when someone reads them (then
    once, and from then on those objects are the truth: `untouched` turns False).
    Subclasses keep the columns and build the list in `rows()`; `__len__` must not
    build it."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: list[Row] | None = None

    @property
    def untouched(self) -> bool:
        """True while no Row was made: the columns are then the whole truth."""
        return self._rows is None

    def rows(self) -> list[Row]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return self.rows()[i]

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyRows):
            other = other.rows()
        return self.rows() == other if isinstance(other, list) else NotImplemented

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.rows()!r})"


class RowColumns(LazyRows):
    """A drained batch's rows as the aggregator leaves them: one list per Row field but
    latency (ROW_VALUE_FIELDS, Row's order) and the latency histograms already flattened
    as version 2 writes them. encode_compact sends the columns as they are; nobody pays
    for Row objects unless they look at the rows (then they are built once, and from
    then on they are the truth: the encoder reads them, so a change made to one is sent)."""

    __slots__ = ("columns", "latency", "latency_bucket", "latency_count")

    def __init__(self) -> None:
        super().__init__()
        self.columns: list[list[Any]] = [[] for _ in ROW_VALUE_FIELDS]
        self.latency: list[int] = []
        self.latency_bucket: list[int] = []
        self.latency_count: list[int] = []

    def extend(self, columns: Sequence[Iterable[Any]]) -> None:
        """Append rows given as columns (ROW_VALUE_FIELDS' order, all of one length)."""
        for have, more in zip(self.columns, columns, strict=True):
            have.extend(more)

    def rows(self) -> list[Row]:
        if self._rows is None:
            out = []
            at = 0
            buckets, counts = self.latency_bucket, self.latency_count
            for values, n in zip(zip(*self.columns), self.latency):
                out.append(Row(*values, dict(zip(buckets[at : at + n], counts[at : at + n]))))
                at += n
            self._rows = out
        return self._rows

    def __len__(self) -> int:
        return len(self.columns[0])


class ActivityRecords:
    """Activity records as the agent's ActivityLog leaves them: one tuple per record,
    the values in ACTIVITY_FIELDS' order (Activity's own). A tuple is made in C, an
    Activity runs a Python __init__ of 21 stores, once per log line: encode_compact
    transposes the tuples as they are, and Activity objects are built (once) only if
    someone reads the records; from then on they are the truth, as with RowColumns."""

    __slots__ = ("values", "_records")

    def __init__(self, values: list[tuple[Any, ...]] | None = None) -> None:
        self.values: list[tuple[Any, ...]] = [] if values is None else values
        self._records: list[Activity] | None = None

    @property
    def untouched(self) -> bool:
        """True while no Activity was made: the tuples are then the whole truth."""
        return self._records is None

    def records(self) -> list[Activity]:
        if self._records is None:
            self._records = [Activity(*v) for v in self.values]
        return self._records

    def __len__(self) -> int:
        return len(self.values) if self._records is None else len(self._records)

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return self.records()[i]

    def __iter__(self) -> Iterator[Activity]:
        return iter(self.records())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ActivityRecords):
            other = other.records()
        return self.records() == other if isinstance(other, list) else NotImplemented

    def __repr__(self) -> str:
        return f"ActivityRecords({self.records()!r})"


def batch_to_columns(batch: Batch) -> dict[str, Any]:
    """The version 2 body object of a batch (see the module docstring)."""
    rows, profiles, activity = batch.rows, batch.profiles, batch.activity
    if isinstance(rows, RowColumns) and rows.untouched:
        cols = rows.columns
        row_ts = [t // SECONDS_PER_MINUTE for t in cols[0]]
        row_cols: list[Any] = cols[1:]  # the dimensions, then the counters
        latency = (rows.latency, rows.latency_bucket, rows.latency_count)
    else:
        row_ts = [r.ts // SECONDS_PER_MINUTE for r in rows]
        # transposed by zip in C: one tuple of the row's values per row, then one per column
        row_cols = list(zip(*map(_ROW_VALUES, rows))) if rows else [()] * _N_ROW_VALUES
        latency = _latency_columns([r.latency for r in rows])
    prof_ts = [p.ts // SECONDS_PER_MINUTE for p in profiles]
    t0 = min(chain(row_ts, prof_ts), default=0)
    prof_cols: list[tuple[Any, ...]] = list(zip(*map(_PROFILE_VALUES, profiles))) if profiles else [(), (), ()]
    if not activity:
        act_cols: list[tuple[Any, ...]] = [()] * len(ACTIVITY_FIELDS)
    elif isinstance(activity, ActivityRecords) and activity.untouched:
        act_cols = list(zip(*activity.values))
    else:
        act_cols = list(zip(*map(_ACTIVITY_VALUES, activity)))
    str_row_cols = row_cols[_N_INT : _N_INT + _N_STR]
    act_str_cols = [col for name, col in zip(ACTIVITY_FIELDS, act_cols) if name in _ACTIVITY_STR_SET]
    # the table: every distinct string once, in order of first use
    seen = dict.fromkeys(chain(chain.from_iterable(str_row_cols), prof_cols[2], *act_str_cols))
    seen.pop(None, None)  # an activity record's missing value is null, not a string
    table = list(seen)
    index: dict[Any, Any] = {s: i for i, s in enumerate(table)}
    index[None] = None
    at = index.__getitem__
    if t0:
        minus_t0 = t0.__rsub__
        row_ts = list(map(minus_t0, row_ts))
        prof_ts = list(map(minus_t0, prof_ts))
    logs: dict[str, Any] = {"ts": row_ts}
    for name, col in zip(INT_DIMENSIONS, row_cols):
        logs[name] = col if col.__class__ is list else list(col)  # RowColumns: lists already
    for name, col in zip(STR_DIMENSIONS, str_row_cols):
        logs[name] = list(map(at, col))
    for name, col in zip(COUNTERS, row_cols[_N_INT + _N_STR :]):
        logs[name] = col if col.__class__ is list else list(col)
    logs["latency"], logs["latency_bucket"], logs["latency_count"] = latency
    obj: dict[str, Any] = {"v": VERSION, "strings": table, "t0": t0, "logs": logs}
    if profiles:
        obj["concurrency"] = {
            "ts": prof_ts,
            "user_id": list(prof_cols[0]),
            "order_id": list(prof_cols[1]),
            "worker": list(map(at, prof_cols[2])),
            "active": list(chain.from_iterable(p.active for p in profiles)),
        }
    if activity:
        obj["activity"] = {
            name: list(map(at, col)) if name in _ACTIVITY_STR_SET else list(col)
            for name, col in zip(ACTIVITY_FIELDS, act_cols)
        }
    return obj


def encode_compact(batch: Batch) -> bytes:
    """A version 2 msgpack body. The cyclic GC is paused meanwhile: the columns are many
    acyclic objects alive until packed (see agent.wire.batch._without_gc)."""
    if not gc.isenabled():
        return msgpack.packb(batch_to_columns(batch), use_bin_type=True)
    gc.disable()
    try:
        return msgpack.packb(batch_to_columns(batch), use_bin_type=True)
    finally:
        gc.enable()


# -- the reference decoder -------------------------------------------------------------
def _section(obj: dict[str, Any], name: str, columns: tuple[str, ...], required: bool) -> dict[str, Any] | None:
    """The column map `name`, every column a list, no unknown or missing column, all
    columns (except the flattened ones) of one length."""
    sec = obj.get(name)
    if sec is None:
        if required:
            raise WireError(name, "required column map is missing")
        return None
    if not isinstance(sec, dict):
        raise WireError(name, "expected a map of columns")
    known = frozenset(columns)
    for key in sec:
        if key not in known:
            raise WireError(f"{name}.{key}" if isinstance(key, str) else name, f"unknown column {_show(key)}")
    n = None
    for col in columns:
        if col not in sec:
            raise WireError(f"{name}.{col}", "required column is missing")
        values = sec[col]
        if not isinstance(values, list):
            raise WireError(f"{name}.{col}", "expected a list")
        if col in _FREE_LENGTH:
            continue
        if n is None:
            n = len(values)
        elif len(values) != n:
            raise WireError(f"{name}.{col}", f"expected {n} values (as many as {name}.{columns[0]}), got {len(values)}")
    return sec


def _ints(values: list[Any], name: str, field: str, hi: int, what: str, nullable: bool = False) -> None:
    for i, v in enumerate(values):
        if v is None and nullable:
            continue
        if type(v) is not int or not 0 <= v <= hi:
            raise WireError(f"{name}[{i}].{field}", f"expected {what}{' or null' if nullable else ''}, got {_show(v)}")


def _strs(values: list[Any], name: str, field: str, table: list[str], nullable: bool = False) -> list[Any]:
    n = len(table)
    for i, v in enumerate(values):
        if v is None and nullable:
            continue
        if type(v) is not int or not 0 <= v < n:
            raise WireError(f"{name}[{i}].{field}",
                            f"expected an index into strings (0..{n - 1}){' or null' if nullable else ''}, got {_show(v)}")
    return [None if v is None else table[v] for v in values]


def _minutes(values: list[Any], name: str, t0: int) -> list[int]:
    _ints(values, name, "ts", MAX_MINUTE - t0, f"a minute offset 0..{MAX_MINUTE - t0} from t0")
    return [(t0 + v) * SECONDS_PER_MINUTE for v in values]


def _latencies(logs: dict[str, Any]) -> list[histogram.Histogram]:
    ns, buckets, counts = logs["latency"], logs["latency_bucket"], logs["latency_count"]
    total = 0
    for i, k in enumerate(ns):
        if type(k) is not int or not 0 <= k <= histogram.MAX_INDEX + 1:
            raise WireError(f"logs[{i}].latency", f"expected a number of pairs 0..{histogram.MAX_INDEX + 1}, got {_show(k)}")
        total += k
    for col, values in (("latency_bucket", buckets), ("latency_count", counts)):
        if len(values) != total:
            raise WireError(f"logs.{col}", f"expected {total} values (the sum of logs.latency), got {len(values)}")
    out: list[histogram.Histogram] = []
    at = 0
    for i, k in enumerate(ns):
        hist: histogram.Histogram = {}
        prev = -1
        for j in range(k):
            b, c = buckets[at + j], counts[at + j]
            if (type(b) is not int or type(c) is not int or not prev < b <= histogram.MAX_INDEX
                    or not 0 <= c <= histogram.MAX_COUNT):
                raise WireError(f"logs[{i}].latency[{j}]",
                                f"expected [bucket, count] with buckets increasing, 0 <= bucket <= {histogram.MAX_INDEX} "
                                f"and 0 <= count <= {histogram.MAX_COUNT}, got [{_show(b)}, {_show(c)}]")
            hist[b] = c
            prev = b
        at += k
        out.append(hist)
    return out


def batch_from_columns(obj: dict[str, Any], max_rows: int | None = None) -> Batch:
    """Validate a version 2 body object field by field; the Batch, or the WireError
    naming the first bad value."""
    for key in obj:
        if key not in TOP_FIELDS:
            raise WireError(str(key), f"unknown top-level field (version 2 has {', '.join(TOP_FIELDS)})")
    if obj.get("v") != VERSION or type(obj.get("v")) is not int:
        raise WireError("v", f"unsupported body version {_show(obj.get('v'))} (this collector reads 2, or none for 1)")
    table = obj.get("strings")
    if not isinstance(table, list):
        raise WireError("strings", "required list of strings is missing" if table is None else "expected a list")
    for i, s in enumerate(table):
        if not isinstance(s, str) or len(s) > MAX_STR:
            raise WireError(f"strings[{i}]", f"expected a string of at most {MAX_STR} characters, got {_show(s)}")
    t0 = obj.get("t0")
    if type(t0) is not int or not 0 <= t0 <= MAX_MINUTE:
        raise WireError("t0", f"expected an epoch minute 0..{MAX_MINUTE}, got {_show(t0)}")
    logs = _section(obj, "logs", ROW_COLUMNS, True)
    assert logs is not None
    prof = _section(obj, "concurrency", PROFILE_COLUMNS, False)
    act = _section(obj, "activity", ACTIVITY_COLUMNS, False)
    n_rows = len(logs["ts"])
    n_prof = len(prof["ts"]) if prof else 0
    n_act = len(act["ts_us"]) if act else 0
    if max_rows is not None and n_rows + n_prof + n_act > max_rows:
        raise WireError("logs", f"too many rows: {n_rows + n_prof + n_act} > limit {max_rows}")

    ts = _minutes(logs["ts"], "logs", t0)
    for name in INT_DIMENSIONS:
        _ints(logs[name], "logs", name, MAX_INT, "an integer >= 0")
    strs = {name: _strs(logs[name], "logs", name, table) for name in STR_DIMENSIONS}
    for name in COUNTERS:
        _ints(logs[name], "logs", name, MAX_COUNTER, f"an integer 0..{MAX_COUNTER} (2**53-1)")
    lats = _latencies(logs)
    rows = [
        Row(ts[i], *(logs[d][i] for d in INT_DIMENSIONS), *(strs[d][i] for d in STR_DIMENSIONS),
            *(logs[c][i] for c in COUNTERS), lats[i])
        for i in range(n_rows)
    ]  # fmt: skip

    profiles: list[Profile] = []
    if prof:
        pts = _minutes(prof["ts"], "concurrency", t0)
        for name in ("user_id", "order_id"):
            _ints(prof[name], "concurrency", name, MAX_INT, "an integer >= 0")
        workers = _strs(prof["worker"], "concurrency", "worker", table)
        active = prof["active"]
        if len(active) != n_prof * SECONDS_PER_MINUTE:
            raise WireError("concurrency.active", f"expected {SECONDS_PER_MINUTE} counts per profile "
                                                  f"({n_prof * SECONDS_PER_MINUTE}), got {len(active)}")
        for j, v in enumerate(active):
            if type(v) is not int or not 0 <= v <= MAX_COUNTER:
                i, s = divmod(j, SECONDS_PER_MINUTE)
                raise WireError(f"concurrency[{i}].active[{s}]", f"expected an integer 0..{MAX_COUNTER} (2**53-1), got {_show(v)}")
        for i in range(n_prof):
            profiles.append(Profile(pts[i], prof["user_id"][i], prof["order_id"][i], workers[i],
                                    active[i * SECONDS_PER_MINUTE : (i + 1) * SECONDS_PER_MINUTE]))

    activity: list[Activity] = []
    if act:
        cols: dict[str, list[Any]] = {}
        for i, v in enumerate(act["ts_us"]):
            if type(v) is not int or not 0 <= v <= MAX_INT:
                raise WireError(f"activity[{i}].ts_us", f"expected epoch microseconds (an integer >= 0), got {_show(v)}")
        cols["ts_us"] = act["ts_us"]
        cols["protocol"] = _strs(act["protocol"], "activity", "protocol", table)
        for i, v in enumerate(cols["protocol"]):
            if v not in ACTIVITY_PROTOCOLS:
                raise WireError(f"activity[{i}].protocol", f"expected one of {', '.join(ACTIVITY_PROTOCOLS)}, got {_show(v)}")
        for name in ACTIVITY_COUNTERS + ACTIVITY_OPT_COUNTERS:
            _ints(act[name], "activity", name, MAX_COUNTER, f"an integer 0..{MAX_COUNTER} (2**53-1)",
                  nullable=name in ACTIVITY_OPT_COUNTERS)
            cols[name] = act[name]
        for name in ACTIVITY_STRS + ACTIVITY_OPT_STRS:
            cols[name] = _strs(act[name], "activity", name, table, nullable=name in ACTIVITY_OPT_STRS)
        for name in ACTIVITY_OPT_PORTS:
            _ints(act[name], "activity", name, MAX_PORT, f"a port 0..{MAX_PORT}", nullable=True)
            cols[name] = act[name]
        for name in ACTIVITY_IDS:
            _ints(act[name], "activity", name, MAX_INT, "an integer >= 0")
            cols[name] = act[name]
        activity = [Activity(*(cols[f][i] for f in ACTIVITY_FIELDS)) for i in range(n_act)]
    return Batch(rows=rows, profiles=profiles, activity=activity)

