from datetime import datetime, timezone

import pytest

from agent import backoff


@pytest.mark.parametrize(
    "attempt,rand,expected",
    [
        (0, 0.0, 0.0),
        (0, 0.5, 0.25),  # 0.5 * min(60, 0.5 * 1)
        (3, 0.5, 2.0),  # 0.5 * 0.5 * 8
        (3, 0.999, 0.999 * 4.0),
        (10, 0.5, 30.0),  # 0.5 * 512 capped to 60 -> 30
        (1000, 1.0, 60.0),  # huge attempt does not overflow
    ],
)
def test_full_jitter_exponential_capped(attempt: int, rand: float, expected: float) -> None:
    assert backoff.delay(attempt, rand, base=0.5, cap=60.0) == pytest.approx(expected)


def test_retry_after_wins_and_is_capped() -> None:
    assert backoff.delay(0, 0.1, cap=60.0, retry_after=7.0) == 7.0
    assert backoff.delay(5, 0.9, cap=60.0, retry_after=3600.0) == 60.0
    assert backoff.delay(5, 0.9, cap=60.0, retry_after=-3.0) == 0.0


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 3, 15, 10, 0, 0, tzinfo=timezone.utc).timestamp()
    assert backoff.parse_retry_after("120", now) == 120.0
    assert backoff.parse_retry_after(" 5 ", now) == 5.0
    assert backoff.parse_retry_after("Sun, 15 Mar 2026 10:00:30 GMT", now) == 30.0
    assert backoff.parse_retry_after(backoff.http_date(now + 90), now) == 90.0
    # a date in the past means "now"
    assert backoff.parse_retry_after("Sun, 15 Mar 2026 09:00:00 GMT", now) == 0.0
    for bad in (None, "", "soon", "-5", "1.5"):
        assert backoff.parse_retry_after(bad, now) is None
