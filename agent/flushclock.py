"""When the agent's timed flushes happen: pure arithmetic, no clock is read here.

Timed flushes fall on wall-clock instants k * flush_interval + grace (k an integer,
counted from the epoch), so that with a 60 s interval every flush comes shortly after a
minute closed and each minute's rows leave about once. The grace (FLUSH_GRACE, at most
a quarter of the interval) waits for the lines of the period just closed that are
logged late: squid and haproxy write a request's line when it ends.
"""

from __future__ import annotations

import math

FLUSH_GRACE = 5.0  # seconds after an aligned instant before its flush


def next_flush_at(after: float, interval: float) -> float:
    """The first aligned flush instant at or after `after` (epoch seconds)."""
    grace = min(FLUSH_GRACE, interval / 4)
    return math.ceil((after - grace) / interval) * interval + grace
