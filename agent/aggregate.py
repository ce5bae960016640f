"""Per-minute aggregation of records into ingest rows and concurrency profiles.

Pure: no clocks, no I/O. `add()` folds one enriched record in, `drain(now_ms)` hands
back everything added since the previous drain as a `Batch` of deltas and forgets it.

Definitions (what the numbers mean; the README and the collector rely on them):
- A record is one connection [start_ms, end_ms) with end_ms = start_ms + duration_ms.
  Latency IS the request duration: the histogram holds bucket_of(duration_ms).
- A connection is active in second s (UTC epoch seconds) when it overlaps
  [s*1000, (s+1)*1000); a zero-length connection is active in its start second.
  So it covers seconds start_ms//1000 .. max(start_ms, end_ms - 1)//1000.
- Row key: (minute of start_ms, user_id, order_id, port, protocol, ip_out,
  ip_from=client_ip, peer_id, worker, domain, error); a dimension switched off is set to
  its default (0 or "").  The start minute's row gets count 1, the bytes, error_count,
  duration_ms, duration_max_ms and the latency bucket.
- conn_ms: the connection's overlap in ms with each minute it covers goes to the row with
  the same dimensions in THAT minute (count 0 in the later minutes). Summed over minutes,
  conn_ms equals duration_ms.
- max_concurrency of a row: the largest, over the 60 seconds of the row's minute, number
  of the row's connections (those contributing to this row in this drain, i.e. started in
  it or carried over into it) active in that second. It is exact for one drain; rows of
  the same key from different drains merge by max, which is a lower bound of the true
  peak when a row's connections were split across drains. The exact peak per user/order
  comes from the profiles.
- Byte counts must be 0..2**53-1 per record (the wire's counter limit), like durations
  0..max_duration_ms: a record outside either is refused with a ValueError naming the
  field (the service counts it as a parse error) and changes nothing. Row sums over
  the limit (bytes, duration, conn_ms) are cut to it at drain and counted in
  `values_fixed`.
- Dimension values that would break the wire's limits (a string over 255 characters, an
  int outside 0..2**63-1) are cut or set to 0 in every row they reach (when the row is
  drained, so once per row and drain) and counted in `values_fixed`; in profiles at
  drain.
- Profile per (minute, user_id, order_id, worker) (same switched-off defaults): for each
  of the 60 seconds, the number of connections active in it. Additive: a tunnel logged
  hours after it started adds +1 to every second it covered, in every earlier minute.

Strategy (the per-line cost is what matters: add() runs once per log line, drain() once
per row, and a row holds ~1.5-3 lines on a busy proxy)
- Rows live in one dict per minute, keyed by the tuple of the record's dimension values
  (one operator.attrgetter call; the worker is constant per aggregator and is added at
  drain). A row's state is a short list of its sums and maxima plus its "packs": one
  int per connection interval in the row's minute, bucket << 12 | first << 6 | last
  (the latency bucket of the request, or NO_REQUEST for a connection carried over from
  an earlier minute; its first and last covered second). A row with one request keeps
  a bare int, a list once a second interval arrives.
- Profiles are not kept while adding: a profile (minute, user_id, order_id) is the sum
  over the rows of that minute with that user and order of their intervals (every
  covered second of every connection is in exactly one row's packs), so drain() builds
  each one as a 61-slot difference array (+1 at the first covered second, -1 after the
  last) while it walks the rows, and turns it into counts with a prefix sum. The same
  walk gives each row's latency histogram and its peak (the sweep of its intervals).
- drain() works a minute at a time and column by column: the keys and states are
  transposed with zip (C), the wire's limits are checked per column with min/max/len
  (a value that breaks one is fitted, once per row and drain; sums over the counter
  limit are cut), and Python runs per row only for the packs.
- drain() returns the rows as agent.wire.compact.RowColumns: those columns, in Row's
  field order, and the histograms already in version 2's flattened columns, which the
  encoder sends as they are; Row objects are made only if someone reads the rows. The
  cyclic garbage collector is paused meanwhile (acyclic objects, alive until encoded).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from itertools import accumulate, islice
from operator import attrgetter, itemgetter
from typing import Any

from agent.record import Record
from agent.wire import batch as wire
from agent.wire.batch import Batch, Profile, Row
from agent.wire.compact import RowColumns
from agent.wire.histogram import MAX_INDEX, SMALL_MS_BUCKETS, bucket_of

DIMENSIONS: tuple[str, ...] = wire.DIMENSIONS

MAX_INT = wire.MAX_INT
MAX_COUNTER = wire.MAX_COUNTER
MAX_STR = wire.MAX_STR
MINUTE_MS = 60_000
SECONDS = wire.SECONDS_PER_MINUTE
# A duration this long is a parse error, not a tunnel: it would create one row and one
# profile per minute covered.
DEFAULT_MAX_DURATION_MS = 7 * 24 * 3600 * 1000

# Row dimensions in wire order, without "worker" (constant per aggregator), and the
# Record attribute each comes from.
_KEY_DIMENSIONS = tuple(d for d in DIMENSIONS if d != "worker")
_ATTR = {d: d for d in _KEY_DIMENSIONS} | {"ip_from": "client_ip"}

# drain() builds Row positionally for speed; fail at import if the contract's order moves.
_ROW_ORDER = ("ts",) + DIMENSIONS + (
    "count", "bytes_sent", "bytes_received", "error_count", "duration_ms",
    "conn_ms", "max_concurrency", "duration_max_ms", "latency",
)  # fmt: skip
if tuple(f.name for f in fields(Row)) != _ROW_ORDER:
    raise ImportError("agent.wire.batch.Row changed its field order; update agent.aggregate.drain")
if DIMENSIONS[:3] != wire.INT_DIMENSIONS:
    raise ImportError("agent.wire.batch.DIMENSIONS changed its order; update agent.aggregate")

# Columns of _drain_rows_all's dimension list (Row's order, worker included).
_INT_COLUMNS = range(len(wire.INT_DIMENSIONS))
_STR_COLUMNS = range(len(wire.INT_DIMENSIONS), len(DIMENSIONS))
# Slots of a row's state list.
_COUNT, _SENT, _RECV, _ERRS, _DUR, _CONN, _DMAX, _PACKS = range(8)
# The bucket field of a pack for an interval carried over from an earlier minute: the
# connection's request is counted in its start minute's row, not in this one.
NO_REQUEST = MAX_INDEX + 1
_BUCKET_SHIFT = 12  # bits below: first << 6 | last, each 0..59

_BUCKETS = SMALL_MS_BUCKETS
_BUCKETS_LIMIT = len(SMALL_MS_BUCKETS)


def _getter(attrs: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """A fast callable returning the tuple of `attrs` of its argument."""
    if not attrs:
        return lambda _rec: ()
    if len(attrs) == 1:
        one = attrgetter(attrs[0])
        return lambda rec: (one(rec),)
    return attrgetter(*attrs)


def _peak(packs: list[int]) -> int:
    """Largest number of the packed intervals covering one second."""
    n = len(packs)
    if n == 2:  # common in high-cardinality rows; skips the 61-slot sweep
        a, b = packs
        return 2 if (a >> 6) & 63 <= b & 63 and (b >> 6) & 63 <= a & 63 else 1
    if n <= 5:
        # the most intervals covering one second are found at some interval's first
        # second: n * n comparisons beat the sweep below for a few intervals
        best = 1
        for p in packs:
            first = (p >> 6) & 63
            covering = 0
            for q in packs:
                if (q >> 6) & 63 <= first <= q & 63:
                    covering += 1
            if covering > best:
                best = covering
        return best
    diff = [0] * (SECONDS + 1)
    for packed in packs:
        diff[(packed >> 6) & 63] += 1
        diff[(packed & 63) + 1] -= 1
    return max(accumulate(diff))


def _expander(names: tuple[str, ...]) -> Callable[[tuple[Any, ...], str], tuple[Any, ...]]:
    """Turns the key's dimension values (for `names`) plus the worker into all 10 wire
    dimensions in Row's field order, defaults for those switched off."""
    worker_at = DIMENSIONS.index("worker")
    if names == _KEY_DIMENSIONS:
        return lambda dims, worker: dims[:worker_at] + (worker,) + dims[worker_at:]
    template = [0 if d in wire.INT_DIMENSIONS else "" for d in DIMENSIONS]
    slots = [DIMENSIONS.index(d) for d in names]

    def expand(dims: tuple[Any, ...], worker: str) -> tuple[Any, ...]:
        full = template.copy()
        full[worker_at] = worker
        for slot, value in zip(slots, dims):
            full[slot] = value
        return tuple(full)

    return expand


def _profile_key(names: tuple[str, ...]) -> Callable[[tuple[Any, ...]], tuple[int, int]]:
    """(user_id, order_id) of a row key, 0 for a dimension switched off."""
    if "user_id" in names and "order_id" in names:
        return itemgetter(names.index("user_id"), names.index("order_id"))  # type: ignore[return-value]
    if "user_id" in names:
        u = names.index("user_id")
        return lambda dims: (dims[u], 0)
    if "order_id" in names:
        o = names.index("order_id")
        return lambda dims: (0, dims[o])
    return lambda dims: (0, 0)


class Aggregator:
    def __init__(
        self,
        worker: str,
        *,
        dimensions: Iterable[str] = frozenset(DIMENSIONS),
        max_duration_ms: int = DEFAULT_MAX_DURATION_MS,
    ) -> None:
        dims = frozenset(dimensions)
        unknown = sorted(dims - set(DIMENSIONS))
        if unknown:
            raise ValueError(f"dimensions: unknown {', '.join(unknown)}; known: {', '.join(DIMENSIONS)}")
        if max_duration_ms <= 0:
            raise ValueError("max_duration_ms: must be > 0")
        self.worker = worker
        self.dimensions = dims
        self.max_duration_ms = max_duration_ms
        self._worker_out = worker if "worker" in dims else ""
        self._row_names = tuple(d for d in _KEY_DIMENSIONS if d in dims)
        self._row_get = _getter([_ATTR[d] for d in self._row_names])
        self._expand = _expander(self._row_names)
        self._profile_of = _profile_key(self._row_names)
        # minute -> row key (dimension values) -> state list (see the module docstring)
        self._minutes: dict[int, dict[tuple[Any, ...], list[Any]]] = {}
        # counters for metrics
        self._added_drained = 0  # records in rows already drained (see records_added)
        self.records_rejected = 0
        self.rows_drained = 0
        self.profiles_drained = 0
        self.drains = 0
        self.values_fixed = 0  # dimension values cut or zeroed to fit the wire limits
        self.last_drain_ms = 0

    @property
    def records_added(self) -> int:
        # each record adds 1 to exactly one row's count (its start minute's): summing
        # at read time keeps a counter update off the per-line path
        return self._added_drained + sum(st[_COUNT] for rows in self._minutes.values() for st in rows.values())

    @property
    def pending_rows(self) -> int:
        return sum(map(len, self._minutes.values()))

    @property
    def pending_profiles(self) -> int:
        of = self._profile_of
        return sum(len(set(map(of, rows))) for rows in self._minutes.values())

    def add(self, rec: Record) -> None:
        """Fold one enriched record in. Raises ValueError (naming the field) for a
        negative duration or one over max_duration_ms; nothing is changed then."""
        start = rec.start_ms
        dur = rec.duration_ms
        if not 0 <= dur <= self.max_duration_ms:
            self.records_rejected += 1
            raise ValueError(f"duration_ms: {dur} is outside 0..{self.max_duration_ms}")
        sent = rec.bytes_sent
        recv = rec.bytes_received
        # x | y is in 0..2**53-1 iff both are (ints): one test for both byte counts
        if not 0 <= sent | recv <= MAX_COUNTER:
            self.records_rejected += 1
            raise ValueError(f"bytes_sent, bytes_received: {sent}, {recv} are not both in 0..{MAX_COUNTER}")
        minute = start // MINUTE_MS
        lo = start // 1000 - minute * SECONDS
        hi = (start + dur - 1) // 1000 - minute * SECONDS if dur else lo
        b = _BUCKETS[dur] if dur < _BUCKETS_LIMIT else bucket_of(dur)
        rows = self._minutes.get(minute)
        if rows is None:
            rows = self._minutes[minute] = {}
        dims = self._row_get(rec)
        row = rows.get(dims)
        if hi < SECONDS:  # the usual case: the connection ends inside its start minute
            pack = b << _BUCKET_SHIFT | lo << 6 | hi
            if row is None:  # a new row with this one request (the common case)
                rows[dims] = [1, sent, recv, 1 if rec.error else 0, dur, dur, dur, pack]
                return
            row[_COUNT] += 1
            row[_SENT] += sent
            row[_RECV] += recv
            if rec.error:
                row[_ERRS] += 1
            row[_DUR] += dur
            row[_CONN] += dur
            if dur > row[_DMAX]:
                row[_DMAX] = dur
            packs = row[_PACKS]
            if packs.__class__ is int:
                row[_PACKS] = [packs, pack]
            else:
                packs.append(pack)
            return
        # a connection over several minutes: counted in its start minute's row, its
        # overlap with each minute (conn_ms and covered seconds) in that minute's row
        if row is None:
            row = rows[dims] = [0, 0, 0, 0, 0, 0, 0, []]
        row[_COUNT] += 1
        row[_SENT] += sent
        row[_RECV] += recv
        if rec.error:
            row[_ERRS] += 1
        row[_DUR] += dur
        if dur > row[_DMAX]:
            row[_DMAX] = dur
        end = start + dur
        last_minute = minute + hi // SECONDS
        minutes = self._minutes
        for m in range(minute, last_minute + 1):
            if m == minute:
                first = lo
                bucket = b
            else:
                rows = minutes.get(m)
                if rows is None:
                    rows = minutes[m] = {}
                row = rows.get(dims)
                if row is None:
                    row = rows[dims] = [0, 0, 0, 0, 0, 0, 0, []]
                first = 0
                bucket = NO_REQUEST
            last = hi - (m - minute) * SECONDS if m == last_minute else SECONDS - 1
            row[_CONN] += min(end, (m + 1) * MINUTE_MS) - max(start, m * MINUTE_MS)
            pack = bucket << _BUCKET_SHIFT | first << 6 | last
            packs = row[_PACKS]
            if packs.__class__ is int:
                row[_PACKS] = [packs, pack]
            else:
                packs.append(pack)

    def _fit(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """Make dimension values valid on the wire, so one odd log line can never get a
        whole batch rejected: an int outside 0..MAX_INT becomes 0 (unknown), a string is
        cut to MAX_STR characters. Counted in `values_fixed`."""
        out = []
        for value in values:
            if isinstance(value, int):
                if not 0 <= value <= MAX_INT:
                    value = 0
                    self.values_fixed += 1
            elif len(value) > MAX_STR:
                value = value[:MAX_STR]
                self.values_fixed += 1
            out.append(value)
        return tuple(out)

    def _cap(self, st: list[Any]) -> None:
        """Sums over the wire's counter limit (petabytes in one minute: only a broken
        log gets there) are cut to it, so the row, and its batch, stay deliverable."""
        for slot in (_SENT, _RECV, _DUR, _CONN):  # _DMAX <= max_duration_ms already
            if st[slot] > MAX_COUNTER:
                st[slot] = MAX_COUNTER
                self.values_fixed += 1

    def drain(self, now_ms: int) -> Batch:
        """Everything added since the last drain, as deltas; the state is released.

        `now_ms` only stamps `last_drain_ms` (for metrics): what is drained does not
        depend on the time."""
        # Drain makes one Row per pending row, all alive until the batch is encoded and
        # none in a cycle: the cyclic collector would only walk them again and again.
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return self._drain(now_ms)
        finally:
            if paused:
                gc.enable()

    def _drain(self, now_ms: int) -> Batch:
        minutes, self._minutes = self._minutes, {}
        out = RowColumns()
        out_profiles: list[Profile] = []
        added = 0
        drain_rows = self._drain_rows_all if self._row_names == _KEY_DIMENSIONS else self._drain_rows
        worker = self._worker_out
        for minute in sorted(minutes):
            ts = minute * SECONDS
            # (user_id, order_id) -> the minute's difference array (see the docstring)
            diffs: dict[tuple[int, int], list[int]] = {}
            added += drain_rows(ts, minutes[minute], diffs, out)
            for (user_id, order_id), diff in diffs.items():
                active = list(islice(accumulate(diff), SECONDS))
                user_id, order_id, worker_fit = self._fit((user_id, order_id, worker))
                out_profiles.append(Profile(ts, user_id, order_id, worker_fit, active))
        self._added_drained += added
        self.rows_drained += len(out)
        self.profiles_drained += len(out_profiles)
        self.drains += 1
        self.last_drain_ms = now_ms
        return Batch(rows=out, profiles=out_profiles)

    def _drain_rows_all(
        self, ts: int, rows: dict[tuple[Any, ...], list[Any]], diffs: dict[tuple[int, int], list[int]], out: RowColumns
    ) -> int:
        """Rows of one minute with every dimension on (the default), appended to `out`
        column by column. Transposing the keys and states, checking the wire's limits
        and cutting sums run in C per column; Python runs per row only for the packs
        (profile seconds, histogram, peak). Returns the requests drained."""
        if not rows:
            return 0
        n = len(rows)
        user_id, order_id, port, protocol, ip_out, ip_from, peer_id, domain, error = zip(*rows)
        count, sent, recv, errs, dur, conn, dmax, packs = zip(*rows.values())
        lat_n, lat_b, lat_c = out.latency.append, out.latency_bucket.append, out.latency_count.append
        walk = self._walk
        peaks: list[int] = []
        add_peak = peaks.append
        get = diffs.get
        for pkey, packed in zip(zip(user_id, order_id), packs):
            diff = get(pkey)
            if diff is None:
                diff = diffs[pkey] = [0] * (SECONDS + 1)
            if packed.__class__ is int:  # one interval: peak 1, at most one bucket
                diff[(packed >> 6) & 63] += 1
                diff[(packed & 63) + 1] -= 1
                bucket = packed >> _BUCKET_SHIFT
                if bucket != NO_REQUEST:
                    lat_n(1)
                    lat_b(bucket)
                    lat_c(1)
                else:
                    lat_n(0)
                add_peak(1)
            else:
                add_peak(walk(packed, diff, lat_n, lat_b, lat_c))
        dims: list[Sequence[Any]] = [user_id, order_id, port, protocol, ip_out, ip_from, peer_id,
                                     [self._worker_out] * n, domain, error]  # fmt: skip
        for i in _INT_COLUMNS:
            col = dims[i]
            if min(col) < 0 or max(col) > MAX_INT:
                dims[i] = self._fit_column(col, lambda v: 0 <= v <= MAX_INT, lambda v: 0)
        for i in _STR_COLUMNS:
            col = dims[i]
            if max(map(len, col)) > MAX_STR:
                dims[i] = self._fit_column(col, lambda v: len(v) <= MAX_STR, lambda v: v[:MAX_STR])
        sums: list[Sequence[int]] = [sent, recv, dur, conn]
        for i, col in enumerate(sums):
            if max(col) > MAX_COUNTER:  # _DMAX <= max_duration_ms already
                sums[i] = self._fit_column(col, lambda v: v <= MAX_COUNTER, lambda v: MAX_COUNTER)
        sent, recv, dur, conn = sums
        out.extend([[ts] * n, *dims, count, sent, recv, errs, dur, conn, peaks, dmax])
        return sum(count)

    def _fit_column(self, col: Sequence[Any], ok: Callable[[Any], bool], fix: Callable[[Any], Any]) -> list[Any]:
        """A column with the values that are not `ok` replaced by `fix(value)`, each
        counted in `values_fixed` (the rare path of _drain_rows_all: see _fit, _cap)."""
        out = []
        for value in col:
            if not ok(value):
                value = fix(value)
                self.values_fixed += 1
            out.append(value)
        return out

    @staticmethod
    def _walk(packs: list[int], diff: list[int], lat_n: Callable[[int], None], lat_b: Callable[[int], None],
              lat_c: Callable[[int], None]) -> int:  # fmt: skip
        """A row's intervals into its profile's difference array and its histogram into
        the flattened latency columns (buckets increasing); returns the row's peak."""
        hist: dict[int, int] = {}
        for packed in packs:
            diff[(packed >> 6) & 63] += 1
            diff[(packed & 63) + 1] -= 1
            bucket = packed >> _BUCKET_SHIFT
            if bucket != NO_REQUEST:
                hist[bucket] = hist.get(bucket, 0) + 1
        lat_n(len(hist))
        for bucket in sorted(hist):
            lat_b(bucket)
            lat_c(hist[bucket])
        return 1 if len(packs) == 1 else _peak(packs)

    def _drain_rows(
        self, ts: int, rows: dict[tuple[Any, ...], list[Any]], diffs: dict[tuple[int, int], list[int]], out: RowColumns
    ) -> int:
        """Rows of one minute with some dimensions switched off (see _drain_rows_all):
        per row, the plain way."""
        lat_n, lat_b, lat_c = out.latency.append, out.latency_bucket.append, out.latency_count.append
        worker = self._worker_out
        expand = self._expand
        profile_of = self._profile_of
        added = 0
        values: list[tuple[Any, ...]] = []
        for dims, st in rows.items():
            count, sent, recv, errs, dur, conn, dmax, packs = st
            added += count
            pkey = profile_of(dims)
            diff = diffs.get(pkey)
            if diff is None:
                diff = diffs[pkey] = [0] * (SECONDS + 1)
            peak = self._walk([packs] if packs.__class__ is int else packs, diff, lat_n, lat_b, lat_c)
            if sent | recv | dur | conn > MAX_COUNTER:
                self._cap(st)
                sent, recv, dur, conn = st[_SENT], st[_RECV], st[_DUR], st[_CONN]
            full = expand(dims, worker)
            if not (0 <= full[0] | full[1] | full[2] <= MAX_INT and len("".join(full[3:])) <= MAX_STR):
                full = self._fit(full)
            values.append((ts, *full, count, sent, recv, errs, dur, conn, peak, dmax))
        if values:
            out.extend(list(zip(*values)))
        return added
