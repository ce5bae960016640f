"""The agent's timed flushes fall on wall-clock instants k * flush_interval + grace."""

from __future__ import annotations

import math
import random

import pytest

from agent.flushclock import FLUSH_GRACE, next_flush_at


@pytest.mark.parametrize("interval", [60.0, 10.0, 0.2, 3600.0, 7.0])
def test_next_flush_is_the_first_aligned_instant_not_before(interval: float) -> None:
    grace = min(FLUSH_GRACE, interval / 4)
    rng = random.Random(int(interval * 10))
    for _ in range(2000):
        after = 1_767_225_600 + rng.uniform(-3 * interval, 3 * interval)
        got = next_flush_at(after, interval)
        k = (got - grace) / interval
        assert math.isclose(k, round(k), abs_tol=1e-6)  # on the grid
        assert got >= after - 1e-6 and got - interval < after  # the first one at or after


def test_minute_flushes_wait_for_late_lines_of_the_closed_minute() -> None:
    minute = 1_767_225_600.0  # a minute boundary
    assert next_flush_at(minute - 20, 60) == minute + FLUSH_GRACE
    assert next_flush_at(minute + FLUSH_GRACE, 60) == minute + FLUSH_GRACE
    assert next_flush_at(minute + FLUSH_GRACE + 0.001, 60) == minute + 60 + FLUSH_GRACE
    assert next_flush_at(minute, 0.2) == pytest.approx(minute + 0.05)
