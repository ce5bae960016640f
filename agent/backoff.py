"""Retry delays: exponential backoff with full jitter, honouring Retry-After, capped.

Pure: the random draw (0 <= rand < 1) and the current time are passed in.
Full jitter (delay = rand * min(cap, base * 2**attempt)) spreads a fleet of agents that
all lost the collector at the same moment, so they do not come back in lock-step.
A Retry-After from the collector wins over the computed delay (it knows its load) but
is still capped, so a bogus header cannot park the agent for a day.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

DEFAULT_BASE = 0.5
DEFAULT_CAP = 60.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def delay(
    attempt: int,
    rand: float,
    *,
    base: float = DEFAULT_BASE,
    cap: float = DEFAULT_CAP,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retry number `attempt` (0 = first retry)."""
    if retry_after is not None:
        return min(cap, max(0.0, retry_after))
    ceiling = cap if attempt >= 64 else min(cap, base * (2.0**attempt))
    return rand * ceiling


def http_date(epoch: float) -> str:
    """An IMF-fixdate, for tests and for symmetry with parse_retry_after."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
