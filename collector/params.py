"""Query-string parsing and validation for the /analytics endpoints (pure).

FonProxy parameters: from, to (ISO 8601, required, from < to, range <= max_range_days),
domain (exact), orderId, and per endpoint sortBy, limit, page. Extensions: userId,
interval (1m|5m|15m|1h|1d), tz (IANA name). A `from`/`to` without an offset is read in
`tz` (default UTC); a date alone means its midnight. `to` is exclusive. Parameters this
module does not know are ignored (dashboards add cache-busters). Every problem raises
ParamError naming the parameter; nothing a client can send raises anything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from collector import plan
from collector.model import Filter

MAX_DOMAIN = 255
MAX_PAGE = 1_000_000
MAX_ID = (1 << 63) - 1
CHART_ENDPOINTS = ("traffic", "requests", "concurrency", "latency")
BREAKDOWN_ENDPOINTS = ("domains", "errors", "websites")
DEFAULT_LIMITS = {"domains": 30, "errors": 50, "websites": 25}
# from/to must lie in [1970-01-01, 9000-01-01) UTC: bucket edges are computed up to a
# day (plus a zone offset) beyond both ends, and Python's datetime ends at year 9999.
MIN_TIME = 0
MAX_TIME = 221845392000
# An unencoded "+01:00" in a query string arrives as " 01:00" ('+' means space in a URL
# query): a time followed by " HH:MM" or " HHMM" is read as that positive offset.
_SPACE_OFFSET = re.compile(r"(?<=[0-9]) ([0-9]{2}:?[0-9]{2})$")


class ParamError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_range_days: int = 62
    target_points: int = 500
    max_points: int = 10_000


@dataclass(frozen=True)
class Common:
    start: int  # UTC epoch seconds
    end: int
    tz: tzinfo
    filter: Filter


@dataclass(frozen=True)
class ChartParams:
    common: Common
    interval: str
    step: int


@dataclass(frozen=True)
class BreakdownParams:
    common: Common
    limit: int
    sort_by: Literal["bytes", "count"] = "bytes"
    page: int = 1


def parse_tz(raw: str | None) -> tzinfo:
    if raw is None or raw == "" or raw.upper() == "UTC":
        return plan.UTC
    if len(raw) > 64 or raw.startswith(("/", ".")) or ".." in raw:
        raise ParamError("tz", f"unknown time zone {raw[:64]!r}; use an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ParamError("tz", f"unknown time zone {raw!r}; use an IANA name such as Europe/Berlin") from None


def parse_time(raw: str | None, name: str, tz: tzinfo) -> int:
    if raw is None or raw == "":
        raise ParamError(name, "required (ISO 8601, e.g. 2026-03-15T00:00:00Z)")
    text = raw.strip()
    if len(text) > 40:
        raise ParamError(name, "not an ISO 8601 date/time")
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        fixed = _SPACE_OFFSET.sub(r"+\1", text)
        try:
            dt = datetime.fromisoformat(fixed)
        except ValueError:
            raise ParamError(name, f"not an ISO 8601 date/time: {raw!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    try:
        value = int(dt.timestamp())
    except (OverflowError, OSError, ValueError):
        value = None
    if value is None or not MIN_TIME <= value < MAX_TIME:
        raise ParamError(name, f"out of range: {raw!r} (supported: 1970-01-01 to 9000-01-01)")
    return value


def parse_int(raw: str | None, name: str, default: int | None, lo: int, hi: int) -> int | None:
    if raw is None or raw == "":
        return default
    text = raw.strip()
    # isascii: str.isdigit() is also true for "²" or "١", which int() refuses or reads
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise ParamError(name, f"expected an integer {lo}..{hi}, got {raw[:40]!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise ParamError(name, f"expected an integer {lo}..{hi}, got {value}")
    return value


def parse_filter(q: Mapping[str, str]) -> Filter:
    domain = q.get("domain")
    if domain is not None and len(domain) > MAX_DOMAIN:
        raise ParamError("domain", f"at most {MAX_DOMAIN} characters")
    return Filter(
        user_id=parse_int(q.get("userId"), "userId", None, 0, MAX_ID),
        order_id=parse_int(q.get("orderId"), "orderId", None, 0, MAX_ID),
        domain=domain if domain else None,
    )


def parse_common(q: Mapping[str, str], limits: Limits) -> Common:
    tz = parse_tz(q.get("tz"))
    start = parse_time(q.get("from"), "from", tz)
    end = parse_time(q.get("to"), "to", tz)
    if start >= end:
        raise ParamError("to", "must be after from")
    if end - start > limits.max_range_days * plan.DAY:
        raise ParamError("to", f"range longer than {limits.max_range_days} days (2 months)")
    return Common(start, end, tz, parse_filter(q))


def parse_chart(q: Mapping[str, str], limits: Limits) -> ChartParams:
    common = parse_common(q, limits)
    raw = q.get("interval")
    if raw is None or raw == "":
        interval = plan.default_interval(common.start, common.end, limits.target_points)
    elif raw in plan.INTERVALS:
        interval = raw
    else:
        raise ParamError("interval", f"expected one of {', '.join(plan.INTERVALS)}, got {raw[:20]!r}")
    step = plan.INTERVALS[interval]
    if plan.estimate_points(common.start, common.end, step) > limits.max_points:
        raise ParamError("interval", f"{interval} over this range gives more than {limits.max_points} buckets")
    return ChartParams(common, interval, step)


def parse_breakdown(endpoint: str, q: Mapping[str, str], limits: Limits) -> BreakdownParams:
    common = parse_common(q, limits)
    limit = parse_int(q.get("limit"), "limit", DEFAULT_LIMITS[endpoint], 1, 100)
    assert limit is not None
    sort_by: Literal["bytes", "count"] = "bytes"
    if endpoint == "domains":
        raw = q.get("sortBy")
        if raw in (None, "", "bytes"):
            sort_by = "bytes"
        elif raw == "count":
            sort_by = "count"
        else:
            raise ParamError("sortBy", f"expected bytes or count, got {str(raw)[:20]!r}")
    page = 1
    if endpoint == "websites":
        page = parse_int(q.get("page"), "page", 1, 1, MAX_PAGE) or 1
    return BreakdownParams(common, limit, sort_by, page)
