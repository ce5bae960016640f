"""Query planning: bucket edges in a time zone, and which table answers which time span.

Strategy
- Rows are stored per minute (table level MINUTE) and rolled up per UTC hour (HOUR) and
  per UTC day (DAY). A row belongs to a query when its minute start m satisfies
  from <= m < to, i.e. the minute-aligned span [ceil(from), ceil(to)).
- Chart buckets are aligned in the requested zone: sub-day intervals floor the local
  wall-clock time; `1d` buckets run from one local midnight to the next, so a day with a
  DST change is 23 or 25 hours long. The first bucket starts at the aligned floor of
  `from` (its label), its data is still clipped to `from`.
- A span is read from the coarsest level whose granules never straddle a bucket edge:
  the coarsest level dividing every interior edge. `cover` splits [a, b) into a middle
  at that level and minute/hour heads and tails, so a 60-day range reads ~60 day rows
  per key plus at most 2 partial days of hours and 2 partial hours of minutes. `1d`
  buckets are covered one by one instead, so local days whose midnight is not a whole
  UTC hour (half-hour zones) still read hour rollups inside each day.
Pure: no clocks, no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo

MINUTE = 60
HOUR = 3600
DAY = 86400
LEVELS = (DAY, HOUR, MINUTE)
INTERVALS: dict[str, int] = {"1m": MINUTE, "5m": 300, "15m": 900, "1h": HOUR, "1d": DAY}


@dataclass(frozen=True)
class Segment:
    level: int  # MINUTE, HOUR or DAY: the table to read
    start: int  # UTC epoch seconds, multiple of level
    end: int


@dataclass(frozen=True)
class ChartPlan:
    edges: tuple[int, ...]  # bucket i is [edges[i], edges[i+1]); labelled edges[i]
    start: int  # query from (UTC epoch seconds), for clipping
    end: int  # query to
    segments: tuple[Segment, ...]

    def bucket_seconds(self, i: int) -> int:
        """Length of bucket i inside the time the range's rows cover: whole minutes
        [ceil(start), ceil(end)), as a row is in the range by its minute's start (so
        from=10:00:30 covers minute 10:01 whole, and none of minute 10:00)."""
        a, b = row_span(self.start, self.end)
        return max(0, min(self.edges[i + 1], b) - max(self.edges[i], a))


def ceil_to(t: int, step: int) -> int:
    return -((-t) // step) * step


def floor_to(t: int, step: int) -> int:
    return t - t % step


def row_span(start: int, end: int) -> tuple[int, int]:
    """Minute starts m with start <= m < end form [a, b)."""
    return ceil_to(start, MINUTE), ceil_to(end, MINUTE)


def cover(a: int, b: int, coarsest: int = DAY) -> tuple[Segment, ...]:
    out: list[Segment] = []

    def rec(lo: int, hi: int, idx: int) -> None:
        if lo >= hi:
            return
        level = LEVELS[idx]
        if level == MINUTE:
            out.append(Segment(MINUTE, lo, hi))
            return
        x, y = ceil_to(lo, level), floor_to(hi, level)
        if x >= y:
            rec(lo, hi, idx + 1)
            return
        rec(lo, x, idx + 1)
        out.append(Segment(level, x, y))
        rec(y, hi, idx + 1)

    rec(a, b, LEVELS.index(coarsest))
    return tuple(out)


def _offset(t: int, tz: tzinfo) -> int:
    off = datetime.fromtimestamp(t, tz).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def _local_midnight(d: date, tz: tzinfo) -> int:
    # A midnight that falls into a DST gap maps (fold=0) to the instant the gap ends.
    return int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp())


def bucket_floor(t: int, step: int, tz: tzinfo) -> int:
    """Start of the bucket holding instant t."""
    if step >= DAY:
        start = _local_midnight(datetime.fromtimestamp(t, tz).date(), tz)
        return start if start <= t else _local_midnight(datetime.fromtimestamp(t, tz).date() - timedelta(days=1), tz)
    off = _offset(t, tz)
    start = floor_to(t + off, step) - off
    if start < t and _offset(start, tz) != off:
        # The offset changed inside this local bucket, at an instant that is not a bucket
        # edge (Australia/Lord_Howe: at 02:00 +11 clocks go back to 01:30 +10:30): the
        # bucket of t begins at the change, the one before it ends there.
        start = _offset_change(start, t, off, tz)
    return start


def _offset_change(lo: int, hi: int, off: int, tz: tzinfo) -> int:
    """The first second in (lo, hi] with offset `off`, given offset(lo) != off == offset(hi)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, tz) == off:
            hi = mid
        else:
            lo = mid
    return hi


def _next_edge(cur: int, step: int, tz: tzinfo) -> int:
    if step >= DAY:
        nxt = _local_midnight(datetime.fromtimestamp(cur, tz).date() + timedelta(days=1), tz)
    else:
        nxt = bucket_floor(cur + step, step, tz)
    return nxt if nxt > cur else cur + step


def bucket_edges(start: int, end: int, step: int, tz: tzinfo) -> tuple[int, ...]:
    if isinstance(tz, timezone):
        # UTC (the default) or another fixed offset: plain arithmetic, where the general
        # walk below costs a datetime per edge (~60 ms for 10,000 one-minute buckets).
        off = _offset(start, tz)
        first = floor_to(start + off, step) - off
        return tuple(range(first, ceil_to(end - first, step) + first + 1, step))
    edges = [bucket_floor(start, step, tz)]
    while edges[-1] < end:
        edges.append(_next_edge(edges[-1], step, tz))
    return tuple(edges)


def estimate_points(start: int, end: int, step: int) -> int:
    return (end - start) // step + 2


def default_interval(start: int, end: int, target_points: int) -> str:
    """The finest interval giving at most target_points buckets (1d at the coarsest)."""
    for name, step in INTERVALS.items():
        if ceil_to(end - start, step) // step <= target_points:
            return name
    return "1d"


def chart_plan(start: int, end: int, step: int, tz: tzinfo) -> ChartPlan:
    edges = bucket_edges(start, end, step, tz)
    a, b = row_span(start, end)
    if step >= DAY:
        # Local days (at most ~63) are covered one by one: a day starting at 18:30 UTC
        # (Asia/Kolkata) reads minute rows for its two partial hours and hour rollups in
        # between, where one level for the whole range would have to be minutes.
        days = (cover(max(lo, a), min(hi, b)) for lo, hi in zip(edges, edges[1:]))
        return ChartPlan(edges, start, end, _merged(days))
    interior = [e for e in edges if a < e < b]
    coarsest = MINUTE
    for level in (DAY, HOUR):
        if all(e % level == 0 for e in interior):
            coarsest = level
            break
    return ChartPlan(edges, start, end, cover(a, b, coarsest))


def _merged(parts: Iterable[tuple[Segment, ...]]) -> tuple[Segment, ...]:
    """Consecutive segments of one level joined (fewer queries; same rows)."""
    out: list[Segment] = []
    for part in parts:
        for seg in part:
            if out and out[-1].level == seg.level and out[-1].end == seg.start:
                out[-1] = Segment(seg.level, out[-1].start, seg.end)
            else:
                out.append(seg)
    return tuple(out)


def breakdown_cover(start: int, end: int) -> tuple[Segment, ...]:
    a, b = row_span(start, end)
    return cover(a, b, DAY)


# steps a chart's rows can be grouped by before bucketing (zones offset by 30 or 15
# minutes, 5-minute intervals)
_GRAINS = (DAY, HOUR, 1800, 900, 300, MINUTE)


def segment_grain(seg: Segment, edges: Sequence[int]) -> int:
    """The coarsest step (a multiple of the segment's level) dividing every bucket edge
    strictly inside the segment: rows grouped by it never straddle an edge, so one
    group per grain comes back instead of one per rollup row (5-minute buckets over a
    day of minute rows: 288 groups, not 1,440 histograms)."""
    inner = edges[bisect_right(edges, seg.start) : bisect_left(edges, seg.end)]
    for g in _GRAINS:
        if g % seg.level == 0 and all(e % g == 0 for e in inner):
            return g
    return seg.level



def stats_grain(edges: Sequence[int]) -> int:
    """The coarsest step dividing every bucket edge, for the hourly stats' grouping: an
    hour, or 30/15/1 minutes in zones with such offsets."""
    for g in (HOUR, 1800, 900):
        if all(e % g == 0 for e in edges):
            return g
    return MINUTE


UTC = timezone.utc
