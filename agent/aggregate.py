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
  first made, so once per row and drain) and counted in `values_fixed`; in profiles at
  drain.
- Profile per (minute, user_id, order_id, worker) (same switched-off defaults): for each
  of the 60 seconds, the number of connections active in it. Additive: a tunnel logged
  hours after it started adds +1 to every second it covered, in every earlier minute.

Strategy: a profile is a 61-slot difference array over the seconds of its minute (+1 at
the first covered second, -1 after the last), so add() costs O(1) per covered minute
whatever the connection's length; drain() turns it into counts with a prefix sum.
Profiles are keyed by flat (minute, user_id, order_id) tuples.

Rows are far more numerous (about one per log line: most rows hold a single request), so
a row's state is built once, when its key first appears, as a list laid out exactly
like `Row`'s fields (ts, the 10 dimensions with the worker in place, the counters,
latency), already fitted to the wire's limits; drain() is then `Row(*state)`. While
aggregating, the max_concurrency slot holds the row's covered-second intervals (packed as
first * 64 + last): one int for a row with one interval (its peak is 1 without any work),
a list once a second one arrives, swept by drain(). Keys are (minute, dimension-values)
tuples built by one operator.attrgetter call; the worker is constant per aggregator and
is put into the state, never into the key. drain() pauses the cyclic garbage collector
while it makes the batch's Row objects (acyclic, alive until encoded).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from dataclasses import fields
from itertools import accumulate, islice
from operator import attrgetter
from typing import Any

from agent.record import Record
from agent.wire import batch as wire
from agent.wire.batch import Batch, Profile, Row
from agent.wire.histogram import SMALL_MS_BUCKETS, bucket_of

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
_PROFILE_DIMENSIONS = ("user_id", "order_id")

# drain() builds Row positionally for speed; fail at import if the contract's order moves.
_ROW_ORDER = ("ts",) + DIMENSIONS + (
    "count", "bytes_sent", "bytes_received", "error_count", "duration_ms",
    "conn_ms", "max_concurrency", "duration_max_ms", "latency",
)  # fmt: skip
if tuple(f.name for f in fields(Row)) != _ROW_ORDER:
    raise ImportError("agent.wire.batch.Row changed its field order; update agent.aggregate.drain")

# Slots of a row's state list: Row's field order (checked above).
_COUNT, _SENT, _RECV, _ERRS, _DUR, _CONN, _ACT, _DMAX, _HIST = range(11, 20)
_WORKER_AT = 1 + DIMENSIONS.index("worker")
_INT_SLOTS = tuple(1 + DIMENSIONS.index(d) for d in wire.INT_DIMENSIONS)
if _INT_SLOTS != (1, 2, 3) or _WORKER_AT != 8:
    raise ImportError("agent.wire.batch.DIMENSIONS changed its order; update agent.aggregate")

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


def _peak(intervals: int | list[int]) -> int:
    """Largest number of packed intervals (first * 64 + last) covering one second."""
    if intervals.__class__ is int:
        return 1
    n = len(intervals)
    if n == 2:  # common in high-cardinality rows; skips the 61-slot sweep
        a, b = intervals
        return 2 if a >> 6 <= b & 63 and b >> 6 <= a & 63 else 1
    diff = [0] * (SECONDS + 1)
    for packed in intervals:
        diff[packed >> 6] += 1
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
        self._all_dims = self._row_names == _KEY_DIMENSIONS
        self._expand = _expander(self._row_names)
        self._prof_both = all(d in dims for d in _PROFILE_DIMENSIONS)
        self._prof_user = "user_id" in dims
        self._prof_order = "order_id" in dims
        # row key -> state list in Row's field order (see the module docstring)
        self._rows: dict[tuple[int, tuple[Any, ...]], list[Any]] = {}
        # (minute, user_id, order_id) -> difference array
        self._profiles: dict[tuple[int, int, int], list[int]] = {}
        # counters for metrics
        self.records_added = 0
        self.records_rejected = 0
        self.rows_drained = 0
        self.profiles_drained = 0
        self.drains = 0
        self.values_fixed = 0  # dimension values cut or zeroed to fit the wire limits
        self.last_drain_ms = 0

    @property
    def pending_rows(self) -> int:
        return len(self._rows)

    @property
    def pending_profiles(self) -> int:
        return len(self._profiles)

    def _new_row(self, minute: int, dims: tuple[Any, ...]) -> list[Any]:
        """A zeroed row state for a key seen for the first time, fitted to the wire."""
        if self._all_dims:
            row = [minute * SECONDS, *dims, 0, 0, 0, 0, 0, 0, [], 0, {}]
            row.insert(_WORKER_AT, self._worker_out)
        else:
            row = [minute * SECONDS, *self._expand(dims, self._worker_out), 0, 0, 0, 0, 0, 0, [], 0, {}]
        self._check(row)
        return row

    def _check(self, row: list[Any]) -> None:
        """Fit a new row's dimensions to the wire's limits (see _fit)."""
        # x | y is negative iff one of them is, and < 2**63 iff both are (ints >= 0);
        # the joined length bounds every string's length from above
        if not (0 <= row[1] | row[2] | row[3] <= MAX_INT and len("".join(row[4:11])) <= MAX_STR):
            row[1:11] = self._fit(tuple(row[1:11]))

    def add(self, rec: Record) -> None:
        """Fold one enriched record in. Raises ValueError (naming the field) for a
        negative duration or one over max_duration_ms; nothing is changed then."""
        start = rec.start_ms
        dur = rec.duration_ms
        if not 0 <= dur <= self.max_duration_ms:
            self.records_rejected += 1
            raise ValueError(f"duration_ms: {dur} is outside 0..{self.max_duration_ms}")
        # x | y is in 0..2**53-1 iff both are (ints): one test for both byte counts
        if not 0 <= rec.bytes_sent | rec.bytes_received <= MAX_COUNTER:
            self.records_rejected += 1
            raise ValueError(f"bytes_sent, bytes_received: {rec.bytes_sent}, {rec.bytes_received} "
                             f"are not both in 0..{MAX_COUNTER}")
        self.records_added += 1
        minute = start // MINUTE_MS
        dims = self._row_get(rec)
        lo = start // 1000 - minute * SECONDS
        hi = (start + dur - 1) // 1000 - minute * SECONDS if dur else lo
        if self._prof_both:
            pkey = (minute, rec.user_id, rec.order_id)
        else:
            pkey = (minute, rec.user_id if self._prof_user else 0, rec.order_id if self._prof_order else 0)
        b = _BUCKETS[dur] if dur < _BUCKETS_LIMIT else bucket_of(dur)
        rows = self._rows
        key = (minute, dims)
        row = rows.get(key)
        if hi < SECONDS:  # the usual case: the connection ends inside its start minute
            if row is None:
                # a new row with this one request (the common case), built in one go
                if self._all_dims:
                    row = [minute * SECONDS, *dims, 1, rec.bytes_sent, rec.bytes_received,
                           1 if rec.error else 0, dur, dur, lo << 6 | hi, dur, {b: 1}]  # fmt: skip
                    row.insert(_WORKER_AT, self._worker_out)
                    # _check inlined: one method call per new row is measurable here
                    if not (0 <= row[1] | row[2] | row[3] <= MAX_INT and len("".join(row[4:11])) <= MAX_STR):
                        row[1:11] = self._fit(tuple(row[1:11]))
                    rows[key] = row
                else:
                    row = rows[key] = self._new_row(minute, dims)
                    row[_COUNT] = 1
                    row[_SENT] = rec.bytes_sent
                    row[_RECV] = rec.bytes_received
                    row[_ERRS] = 1 if rec.error else 0
                    row[_DUR] = row[_CONN] = row[_DMAX] = dur
                    row[_ACT] = lo << 6 | hi
                    row[_HIST] = {b: 1}
            else:
                row[_COUNT] += 1
                row[_SENT] += rec.bytes_sent
                row[_RECV] += rec.bytes_received
                if rec.error:
                    row[_ERRS] += 1
                row[_DUR] += dur
                row[_CONN] += dur
                if dur > row[_DMAX]:
                    row[_DMAX] = dur
                hist = row[_HIST]
                hist[b] = hist.get(b, 0) + 1
                act = row[_ACT]
                if act.__class__ is int:
                    row[_ACT] = [act, lo << 6 | hi]
                else:
                    act.append(lo << 6 | hi)
            profiles = self._profiles
            prof = profiles.get(pkey)
            if prof is None:
                prof = profiles[pkey] = [0] * (SECONDS + 1)
            prof[lo] += 1
            prof[hi + 1] -= 1
            return
        if row is None:
            row = rows[key] = self._new_row(minute, dims)
        row[_COUNT] += 1
        row[_SENT] += rec.bytes_sent
        row[_RECV] += rec.bytes_received
        if rec.error:
            row[_ERRS] += 1
        row[_DUR] += dur
        if dur > row[_DMAX]:
            row[_DMAX] = dur
        hist = row[_HIST]
        hist[b] = hist.get(b, 0) + 1
        self._spread(row, dims, pkey, minute, start, start + dur, lo, hi)

    def _spread(
        self,
        first_row: list[Any],
        dims: tuple[Any, ...],
        pkey: tuple[int, int, int],
        minute: int,
        start: int,
        end: int,
        lo: int,
        hi: int,
    ) -> None:
        """A connection covering several minutes: `lo`/`hi` are its first and last
        covered second counted from the start of `minute`."""
        rows = self._rows
        profiles = self._profiles
        _, user_id, order_id = pkey
        last_minute = minute + hi // SECONDS
        for m in range(minute, last_minute + 1):
            if m == minute:
                row = first_row
                first = lo
            else:
                row = rows.get((m, dims))
                if row is None:
                    row = rows[(m, dims)] = self._new_row(m, dims)
                first = 0
            last = hi - (m - minute) * SECONDS if m == last_minute else SECONDS - 1
            row[_CONN] += min(end, (m + 1) * MINUTE_MS) - max(start, m * MINUTE_MS)
            act = row[_ACT]
            if act.__class__ is int:
                row[_ACT] = [act, first << 6 | last]
            else:
                act.append(first << 6 | last)
            prof = profiles.get((m, user_id, order_id))
            if prof is None:
                prof = profiles[(m, user_id, order_id)] = [0] * (SECONDS + 1)
            prof[first] += 1
            prof[last + 1] -= 1

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
        rows_state, self._rows = self._rows, {}
        profiles_state, self._profiles = self._profiles, {}
        out_rows: list[Row] = []
        append_row = out_rows.append
        for st in rows_state.values():
            act = st[_ACT]
            st[_ACT] = 1 if act.__class__ is int else _peak(act)
            if st[_SENT] | st[_RECV] | st[_DUR] | st[_CONN] > MAX_COUNTER:
                self._cap(st)
            append_row(Row(*st))
        worker = self._worker_out
        out_profiles: list[Profile] = []
        for (minute, user_id, order_id), diff in profiles_state.items():
            active = list(islice(accumulate(diff), SECONDS))
            if not any(active):
                continue
            user_id, order_id, worker_fit = self._fit((user_id, order_id, worker))
            out_profiles.append(Profile(minute * SECONDS, user_id, order_id, worker_fit, active))
        self.rows_drained += len(out_rows)
        self.profiles_drained += len(out_profiles)
        self.drains += 1
        self.last_drain_ms = now_ms
        return Batch(rows=out_rows, profiles=out_profiles)
