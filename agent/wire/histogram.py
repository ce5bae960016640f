"""The latency histogram: one fixed log-scale bucket scheme, mergeable by addition.

Scheme (fixed forever; changing it breaks stored data):
- values are milliseconds (int or float, >= 0);
- bucket 0 holds values below 1 ms;
- bucket i >= 1 holds values in [2**((i-1)/8), 2**(i/8)) ms, i.e. 8 buckets per doubling;
- a bucket is reported as its geometric middle 2**((i-0.5)/8), so any quantile read
  from a histogram is within 2**(1/16) - 1 = 4.43 % of a value in the true bucket
  (RELATIVE_ERROR); bucket 0 reports 0.5 ms.
A histogram is a `dict[int, int]` (bucket index -> count), sparse; on the wire it is a
list of `[index, count]` pairs so it survives JSON (whose object keys are strings).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

BUCKETS_PER_DOUBLING = 8
RELATIVE_ERROR = 2 ** (1 / (2 * BUCKETS_PER_DOUBLING)) - 1
MAX_INDEX = 8 * 64  # 2**64 ms is far beyond any duration
MAX_COUNT = (1 << 53) - 1  # a bucket's count on the wire (= batch.MAX_COUNTER)

Histogram = dict[int, int]

# Integer milliseconds below this use a table: the agent calls bucket_of per request.
_TABLE_LIMIT = 1 << 16


def _bucket_slow(value_ms: float) -> int:
    if value_ms < 1:
        return 0
    return min(MAX_INDEX, 1 + int(math.floor(math.log2(value_ms) * BUCKETS_PER_DOUBLING)))


def _build_table() -> list[int]:
    # Exact boundaries: value v is in bucket i iff 2**((i-1)/8) <= v, i.e. v**8 >= 2**(i-1).
    table = [0] * _TABLE_LIMIT
    i = 1
    for v in range(1, _TABLE_LIMIT):
        while v**BUCKETS_PER_DOUBLING >= 2**i:
            i += 1
        table[v] = i
    return table


_TABLE = tuple(_build_table())
# bucket_of for an int 0 <= ms < len(SMALL_MS_BUCKETS), as a lookup a hot loop can inline
SMALL_MS_BUCKETS: tuple[int, ...] = _TABLE


def bucket_of(value_ms: float) -> int:
    """Bucket index of a duration in milliseconds."""
    if isinstance(value_ms, int) and 0 <= value_ms < _TABLE_LIMIT:
        return _TABLE[value_ms]
    if value_ms < 0:
        return 0
    return _bucket_slow(value_ms)


def bucket_lower(index: int) -> float:
    return 0.0 if index <= 0 else 2 ** ((index - 1) / BUCKETS_PER_DOUBLING)


def bucket_upper(index: int) -> float:
    return 1.0 if index <= 0 else 2 ** (index / BUCKETS_PER_DOUBLING)


def bucket_value(index: int) -> float:
    """The value a bucket stands for when a quantile falls into it."""
    return 0.5 if index <= 0 else 2 ** ((index - 0.5) / BUCKETS_PER_DOUBLING)


def add(into: Histogram, other: Mapping[int, int]) -> Histogram:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v
    return into


def quantile(hist: Mapping[int, int], q: float) -> float | None:
    """Smallest bucket value with at least q of the observations at or below it."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bucket_value(index)
    return bucket_value(max(hist))


def to_wire(hist: Mapping[int, int]) -> list[list[int]]:
    if len(hist) == 1:  # most rows hold one request: skip the sort
        ((k, v),) = hist.items()
        return [[k, v]] if v else []
    return [[k, v] for k, v in sorted(hist.items()) if v]


def from_wire(pairs: Iterable[object], where: str) -> Histogram:
    """Validate `[[index, count], ...]`; raise ValueError naming `where` on bad input."""
    out: Histogram = {}
    if not isinstance(pairs, list):
        raise ValueError(f"{where}: expected a list of [bucket, count] pairs")
    for n, pair in enumerate(pairs):
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not all(type(x) is int for x in pair)
            or not 0 <= pair[0] <= MAX_INDEX
            or not 0 <= pair[1] <= MAX_COUNT
        ):
            raise ValueError(
                f"{where}[{n}]: expected [bucket, count] with 0 <= bucket <= {MAX_INDEX} and 0 <= count <= {MAX_COUNT}"
            )
        out[pair[0]] = out.get(pair[0], 0) + pair[1]
    return out
