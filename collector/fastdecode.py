"""Ingest body decoding at C speed for the common shape, same answers as decode_body.

Strategy
- `agent.wire.batch.decode_body` is the reference: it validates field by field in Python
  (~15 us per row). Agents send every row with ts and all 18 other fields (+ latency when non-empty),
  so here each row is read with one `itemgetter` and the whole body is validated column by
  column with C-level builtins (`map(type, ...)`, `min`, `max`, `len`), timestamps are
  parsed once per distinct string, and histograms are built with `dict(pairs)`.
- Version 2 bodies (columns and a string table, agent.wire.compact) are checked column
  by column the same way: one type set, one min and one max per column, every string
  index against the table's length; the rows stay columns (ColumnRows: no Row object,
  string or histogram per row unless someone reads the rows).
- Rule: any doubt means "ask the reference". A body that is not exactly the common shape
  (missing or unknown fields, a bad type or range anywhere, a histogram with a repeated
  bucket, ...) is decoded again by decode_body, which either accepts it (the same Batch)
  or raises the WireError naming the field. So this module can only be faster, never
  more or less permissive, and a whole body is still validated before anything is stored.
Pure: bytes in, Batch out.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import accumulate, compress, count, islice
from operator import itemgetter
from typing import Any

import msgpack

from agent.wire import compact, histogram
from agent.wire.compact import LazyRows
from agent.wire.batch import (
    ACTIVITY_COUNTERS,
    ACTIVITY_FIELDS,
    ACTIVITY_IDS,
    ACTIVITY_OPT_COUNTERS,
    ACTIVITY_OPT_PORTS,
    ACTIVITY_OPT_STRS,
    ACTIVITY_PROTOCOLS,
    ACTIVITY_STRS,
    CONTENT_TYPE_JSON,
    MAX_COUNTER,
    MAX_INT,
    MAX_PORT,
    MAX_STR,
    MSGPACK_TYPES,
    Activity,
    Batch,
    Profile,
    Row,
    WireError,
    activity_from_obj,
    decode_body,
    first_unencodable,
    may_hold_surrogates,
    parse_ts,
    profile_from_obj,
)

# Row fields after ts, in Row's positional order.
_FIELDS = (
    "user_id", "order_id", "port", "protocol", "ip_out", "ip_from", "peer_id", "worker", "domain", "error",
    "count", "bytes_sent", "bytes_received", "error_count", "duration_ms", "conn_ms", "max_concurrency",
    "duration_max_ms",
)  # fmt: skip
_STR_POS = range(3, 10)
_ID_POS = (0, 1, 2)
_COUNTER_POS = tuple(range(10, 18))
_ALL = frozenset(("ts", *_FIELDS, "latency"))
_get = itemgetter(*_FIELDS)


class _Slow(Exception):
    """The body is not the common shape: let the reference decoder answer."""


def decode(body: bytes, content_type: str, max_rows: int | None = None) -> Batch:
    """decode_body's answer for every body; fast for the agents' common shape."""
    with gc_paused():
        return _decode(body, content_type, max_rows)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic-GC passes while a body's objects are built. A 10,000-row body makes
    ~300,000 objects, none in a cycle; with the default thresholds the collector would
    scan every live object dozens of times meanwhile (measured: 2-3x slower decoding).
    Reference counting still frees everything; only cycle collection waits. Threads
    may overlap: whoever found GC enabled re-enables it, so it always ends enabled."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _decode(body: bytes, content_type: str, max_rows: int | None) -> Batch:
    ctype = content_type.split(";", 1)[0].strip().lower()
    try:
        if ctype in MSGPACK_TYPES:
            obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
        elif ctype in (CONTENT_TYPE_JSON, ""):
            obj = json.loads(body)
        else:
            raise _Slow
        batch = _fast(obj, max_rows)
        if ctype not in MSGPACK_TYPES and may_hold_surrogates(body) and first_unencodable(batch) is not None:
            raise _Slow  # a lone surrogate: the reference names the field
        return batch
    except Exception:  # _Slow, or anything the parsers raise: the reference decides
        return decode_body(body, content_type, max_rows)


def _fast(obj: Any, max_rows: int | None) -> Batch:
    if type(obj) is dict and "v" in obj:
        return _fast_v2(obj, max_rows)
    if type(obj) is not dict or not obj.keys() <= {"logs", "concurrency", "activity"}:
        raise _Slow
    logs = obj.get("logs")
    profiles_in = obj.get("concurrency", [])
    if type(logs) is not list or type(profiles_in) is not list:
        raise _Slow
    activity_in = obj.get("activity", [])
    if type(activity_in) is not list:
        raise _Slow
    if max_rows is not None and len(logs) + len(profiles_in) + len(activity_in) > max_rows:
        raise _Slow
    values: list[tuple[Any, ...]] = []
    stamps: list[Any] = []
    lats: list[histogram.Histogram] = []
    lat_keys: list[Any] = []
    lat_counts: list[Any] = []
    add_value, add_stamp, add_lat = values.append, stamps.append, lats.append
    for r in logs:
        if type(r) is not dict:
            raise _Slow
        n = len(r)
        if n == 20:
            pairs = r["latency"]
            if type(pairs) is not list:
                raise _Slow
            lat = dict(pairs)
            if len(lat) != len(pairs):
                raise _Slow  # a repeated bucket (summed by the reference) or a bad pair
            lat_keys.extend(lat)
            lat_counts.extend(lat.values())
        elif n == 19 and "latency" not in r:
            lat = {}
        else:
            raise _Slow
        if not r.keys() <= _ALL:
            raise _Slow
        add_value(_get(r))
        add_stamp(r["ts"])
        add_lat(lat)
    if values:
        columns = list(zip(*values))
        for i in _ID_POS:
            col = columns[i]
            if set(map(type, col)) != {int} or min(col) < 0 or max(col) > MAX_INT:
                raise _Slow
        for i in _COUNTER_POS:
            col = columns[i]
            if set(map(type, col)) != {int} or min(col) < 0 or max(col) > MAX_COUNTER:
                raise _Slow
        for i in _STR_POS:
            col = columns[i]
            if set(map(type, col)) != {str} or max(map(len, col)) > MAX_STR:
                raise _Slow
    if lat_keys:
        if set(map(type, lat_keys)) != {int} or set(map(type, lat_counts)) != {int}:
            raise _Slow
        if (min(lat_keys) < 0 or max(lat_keys) > histogram.MAX_INDEX or min(lat_counts) < 0
                or max(lat_counts) > histogram.MAX_COUNT):
            raise _Slow
    minutes: dict[Any, int] = {}
    for s in set(stamps) if stamps else ():
        if type(s) is not str:
            raise _Slow
        try:
            minutes[s] = parse_ts(s, "ts")
        except WireError:
            raise _Slow from None
    rows = [Row(minutes[s], *v, lat) for s, v, lat in zip(stamps, values, lats)]
    profiles: list[Profile] = []
    for i, p in enumerate(profiles_in):
        try:
            profiles.append(profile_from_obj(p, f"concurrency[{i}]"))
        except WireError:
            raise _Slow from None
    activity: list[Activity] = []
    for i, a in enumerate(activity_in):
        try:
            activity.append(activity_from_obj(a, f"activity[{i}]"))
        except WireError:
            raise _Slow from None
    return Batch(rows=rows, profiles=profiles, activity=activity)


_V2_ROW_INTS = ("user_id", "order_id", "port")
_V2_ROW_STRS = ("protocol", "ip_out", "ip_from", "peer_id", "worker", "domain", "error")
_V2_ROW_COUNTERS = ("count", "bytes_sent", "bytes_received", "error_count", "duration_ms", "conn_ms",
                    "max_concurrency", "duration_max_ms")  # fmt: skip
_INT_SET = {int}
_STR_SET = {str}
_SIXTY = 60


def _increasing_per_row(ns: list[int], buckets: list[int]) -> bool:
    """Each row's buckets strictly increase (at C speed): every position whose bucket is
    not above the one before must start a row."""
    drops = compress(count(1), map(int.__ge__, buckets, islice(buckets, 1, None)))
    return set(drops) <= set(accumulate(ns, initial=0))


class ColumnRows(LazyRows):
    """A version 2 body's rows as the decoder checked them: the logs columns as sent
    (strings as indices into `table`, the latency pairs flattened) and the minutes in
    epoch seconds. The SQLite store binds these columns directly (string ids once per
    distinct string, histograms packed from the pairs); whoever reads the rows gets Row
    objects, built once, and from then on they are the truth (`untouched` is False)."""

    __slots__ = ("table", "ts", "columns")

    def __init__(self, table: list[str], ts: list[int], columns: dict[str, list[Any]]) -> None:
        super().__init__()
        self.table = table
        self.ts = ts
        self.columns = columns

    def strings(self, name: str) -> list[str]:
        return list(map(self.table.__getitem__, self.columns[name]))

    def histograms(self) -> list[histogram.Histogram]:
        cols = self.columns
        ns, buckets, counts = cols["latency"], cols["latency_bucket"], cols["latency_count"]
        if ns.count(1) == len(ns):  # one pair per row
            return [{b: c} for b, c in zip(buckets, counts)]
        out: list[histogram.Histogram] = []
        at = 0
        for k in ns:
            out.append(dict(zip(buckets[at : at + k], counts[at : at + k])))
            at += k
        return out

    def rows(self) -> list[Row]:
        if self._rows is None:
            cols = self.columns
            self._rows = list(map(Row, self.ts, cols["user_id"], cols["order_id"], cols["port"],
                                  *map(self.strings, _V2_ROW_STRS),
                                  *(cols[name] for name in _V2_ROW_COUNTERS), self.histograms()))  # fmt: skip
        return self._rows

    def __len__(self) -> int:
        return len(self.ts)


def _ints_in(col: Any, hi: int) -> None:
    """`col` is a list of ints in 0..hi (an empty one passes)."""
    if type(col) is not list:
        raise _Slow
    if col and (set(map(type, col)) != _INT_SET or min(col) < 0 or max(col) > hi):
        raise _Slow


def _columns(obj: Any, names: tuple[str, ...], n_of: str) -> tuple[dict[str, Any], int]:
    if type(obj) is not dict or obj.keys() != set(names):
        raise _Slow
    n = len(obj[n_of]) if type(obj[n_of]) is list else -1
    for name in names:
        col = obj[name]
        if type(col) is not list or (name not in compact._FREE_LENGTH and len(col) != n):
            raise _Slow
    return obj, n


def _fast_v2(obj: dict[str, Any], max_rows: int | None) -> Batch:
    if not obj.keys() <= set(compact.TOP_FIELDS) or obj.get("v") != compact.VERSION or type(obj["v"]) is not int:
        raise _Slow
    table = obj.get("strings")
    t0 = obj.get("t0")
    if type(table) is not list or type(t0) is not int or not 0 <= t0 <= compact.MAX_MINUTE:
        raise _Slow
    if table and (set(map(type, table)) != _STR_SET or max(map(len, table)) > MAX_STR):
        raise _Slow
    n_table = len(table) - 1  # the largest valid index
    logs, n = _columns(obj.get("logs"), compact.ROW_COLUMNS, "ts")
    prof, n_prof = _columns(obj["concurrency"], compact.PROFILE_COLUMNS, "ts") if "concurrency" in obj else ({}, 0)
    act, n_act = _columns(obj["activity"], compact.ACTIVITY_COLUMNS, "ts_us") if "activity" in obj else ({}, 0)
    if max_rows is not None and n + n_prof + n_act > max_rows:
        raise _Slow
    max_off = compact.MAX_MINUTE - t0
    _ints_in(logs["ts"], max_off)
    for name in _V2_ROW_INTS:
        _ints_in(logs[name], MAX_INT)
    at = table.__getitem__
    for name in _V2_ROW_STRS:
        _ints_in(logs[name], n_table)
    for name in _V2_ROW_COUNTERS:
        _ints_in(logs[name], MAX_COUNTER)
    ns, buckets, counts = logs["latency"], logs["latency_bucket"], logs["latency_count"]
    _ints_in(ns, histogram.MAX_INDEX + 1)
    _ints_in(buckets, histogram.MAX_INDEX)
    _ints_in(counts, histogram.MAX_COUNT)
    if len(buckets) != len(counts) or sum(ns) != len(buckets):
        raise _Slow
    if ns.count(1) != n and not _increasing_per_row(ns, buckets):
        raise _Slow  # buckets must increase within a row
    base = t0 * 60
    rows = ColumnRows(table, list(map(base.__add__, map(_SIXTY.__mul__, logs["ts"]))), logs)
    profiles: list[Profile] = []
    if n_prof:
        _ints_in(prof["ts"], max_off)
        _ints_in(prof["user_id"], MAX_INT)
        _ints_in(prof["order_id"], MAX_INT)
        _ints_in(prof["worker"], n_table)
        active = prof["active"]
        _ints_in(active, MAX_COUNTER)
        if len(active) != 60 * n_prof:
            raise _Slow
        workers = list(map(at, prof["worker"]))
        profiles = [Profile(base + 60 * m, u, o, w, active[i * 60 : i * 60 + 60])
                    for i, (m, u, o, w) in enumerate(zip(prof["ts"], prof["user_id"], prof["order_id"], workers))]
    elif prof and any(prof[c] for c in compact.PROFILE_COLUMNS):
        raise _Slow  # flattened values without profiles
    activity = _activity_v2(act, n_act, table) if n_act else []
    return Batch(rows=rows, profiles=profiles, activity=activity)


_NONE = type(None)
_INT_OR_NONE = {int, _NONE}


def _nullable_ints_in(col: list[Any], hi: int) -> None:
    """`col` holds ints in 0..hi and nulls."""
    kinds = set(map(type, col))
    if not kinds <= _INT_OR_NONE:
        raise _Slow
    if int in kinds:
        values = [v for v in col if v is not None] if _NONE in kinds else col
        if min(values) < 0 or max(values) > hi:
            raise _Slow


def _activity_v2(act: dict[str, Any], n: int, table: list[str]) -> list[Activity]:
    """Version 2 activity columns, checked per column as the rows are (see _fast_v2)."""
    n_table = len(table) - 1
    at = table.__getitem__
    cols: dict[str, list[Any]] = {}
    _ints_in(act["ts_us"], MAX_INT)
    cols["ts_us"] = act["ts_us"]
    for name in ACTIVITY_COUNTERS:
        _ints_in(act[name], MAX_COUNTER)
        cols[name] = act[name]
    for name in ACTIVITY_IDS:
        _ints_in(act[name], MAX_INT)
        cols[name] = act[name]
    for name in ACTIVITY_OPT_COUNTERS:
        _nullable_ints_in(act[name], MAX_COUNTER)
        cols[name] = act[name]
    for name in ACTIVITY_OPT_PORTS:
        _nullable_ints_in(act[name], MAX_PORT)
        cols[name] = act[name]
    for name in ACTIVITY_STRS + ("protocol",):
        _ints_in(act[name], n_table)
        cols[name] = list(map(at, act[name]))
    if not set(cols["protocol"]) <= set(ACTIVITY_PROTOCOLS):
        raise _Slow
    for name in ACTIVITY_OPT_STRS:
        col = act[name]
        _nullable_ints_in(col, n_table)
        cols[name] = [None if i is None else table[i] for i in col]
    return list(map(Activity, *(cols[f] for f in ACTIVITY_FIELDS)))
