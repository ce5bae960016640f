"""Query-string parsing and validation for the /analytics and /api/v2 endpoints (pure).

/api/v2 (Webshare-compatible; see parse_activity): unlike /analytics, an unknown
parameter there is a 400, as Webshare's API refuses what it does not know; "now" is an
argument, never read from a clock.

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
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.wire.errorcodes import ERRORS, codes_for_reason
from collector import plan
from collector.model import ActivityQuery, Filter

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
    activity_max_page_size: int = 100
    activity_chunk_rows: int = 1000
    activity_retention_days: int = 90  # how far back timestamp__gte of the activity may go
    retention_days: int = 90  # ... and of the stats (minute rows)


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


# ---- /api/v2 (Webshare-compatible) ------------------------------------------------------

US = 1_000_000
DEFAULT_WINDOW_DAYS = 6  # Webshare's default: the last six days
DEFAULT_PAGE_SIZE = 25
MAX_SEARCH = 255
CURSOR_SEP = "~"  # starting_after = <timestamp>[~<id>]; '~' is never percent-encoded
_WINDOW = ("timestamp__gte", "timestamp__lte", "plan_id", "user_id", "tz")
_FILTERS = ("search", "error_reason", "bytes__gte", "bytes__lte")
ACTIVITY_PARAMS = (*_WINDOW, *_FILTERS, "starting_after", "page_size")
DOWNLOAD_PARAMS = (*_WINDOW, *_FILTERS, "download_token")
STATS_PARAMS = _WINDOW
TOKEN_PARAMS = ("user_id",)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class Window:
    start_us: int  # timestamp__gte, inclusive, UTC epoch microseconds
    end_us: int  # timestamp__lte, inclusive
    tz: tzinfo
    user_id: int | None  # as asked for (the handler scopes it to the token)
    order_id: int | None  # plan_id


@dataclass(frozen=True)
class ActivityParams:
    window: Window
    query: ActivityQuery  # user_id as asked for; limit = page_size
    page_size: int
    download_token: str | None = None


def check_known(q: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    for name in q.keys():
        if name not in allowed:
            raise ParamError(name[:64], f"unknown parameter; expected one of {', '.join(allowed)}")


def parse_time_us(raw: str, name: str, tz: tzinfo) -> int:
    """An ISO 8601 date/time (microseconds kept) as UTC epoch microseconds."""
    text = raw.strip()
    if not text or len(text) > 40:
        raise ParamError(name, "Enter a valid date/time (ISO 8601, e.g. 2026-03-15T10:00:00.123456-07:00).")
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(_SPACE_OFFSET.sub(r"+\1", text))
        except ValueError:
            raise ParamError(name, f"Enter a valid date/time (ISO 8601), not {raw[:40]!r}.") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    try:
        value = (dt - _EPOCH) // timedelta(microseconds=1)
    except (OverflowError, ValueError):
        value = None
    if value is None or not MIN_TIME * US <= value < MAX_TIME * US:
        raise ParamError(name, f"out of range: {raw[:40]!r} (supported: 1970-01-01 to 9000-01-01)")
    return value


def parse_window(q: Mapping[str, str], now_us: int, retention_days: int) -> Window:
    """timestamp__gte/lte (defaults: the last six days up to now), neither older than
    the data kept; gte <= lte."""
    tz = parse_tz(q.get("tz"))
    oldest = now_us - retention_days * plan.DAY * US
    raw_lte, raw_gte = q.get("timestamp__lte"), q.get("timestamp__gte")
    lte = now_us if raw_lte in (None, "") else parse_time_us(raw_lte, "timestamp__lte", tz)
    if lte < oldest:
        raise ParamError("timestamp__lte", f"Cannot be older than {retention_days} days (the data kept).")
    if raw_gte in (None, ""):
        gte = max(min(lte, now_us) - DEFAULT_WINDOW_DAYS * plan.DAY * US, oldest)
    else:
        gte = parse_time_us(raw_gte, "timestamp__gte", tz)
        if gte < oldest:
            raise ParamError("timestamp__gte", f"Cannot be older than {retention_days} days (the data kept).")
    if gte > lte:
        raise ParamError("timestamp__gte", "Must be before timestamp__lte.")
    return Window(
        gte, lte, tz,
        parse_int(q.get("user_id"), "user_id", None, 0, MAX_ID),
        parse_int(q.get("plan_id"), "plan_id", None, 0, MAX_ID),
    )  # fmt: skip


def parse_cursor(raw: str, tz: tzinfo) -> tuple[int, int]:
    """starting_after: a record's timestamp (-> records older than it) or our `next`
    link's <timestamp>~<id> (-> records after that one, equal timestamps included)."""
    text, sep, rid = raw.partition(CURSOR_SEP)
    ts = parse_time_us(text, "starting_after", tz)
    if not sep:
        return ts, -1
    if not (rid.isascii() and rid.isdigit()) or len(rid) > 19 or int(rid) > MAX_ID:
        raise ParamError("starting_after", f"expected <timestamp>[{CURSOR_SEP}<id>], got {raw[:60]!r}")
    return ts, int(rid)


def format_utc_us(ts_us: int) -> str:
    """A time as parse_time_us reads it back exactly: 2026-03-15T10:00:00.123456Z."""
    dt = datetime.fromtimestamp(ts_us // US, timezone.utc).replace(microsecond=ts_us % US)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_cursor(ts_us: int, rid: int) -> str:
    return format_utc_us(ts_us) + CURSOR_SEP + str(rid)


def parse_activity(q: Mapping[str, str], now_us: int, limits: Limits, *, download: bool = False) -> ActivityParams:
    check_known(q, DOWNLOAD_PARAMS if download else ACTIVITY_PARAMS)
    w = parse_window(q, now_us, limits.activity_retention_days)
    search: str | None = None
    codes: tuple[str, ...] = ()
    raw = q.get("search")
    if raw:
        if len(raw) > MAX_SEARCH:
            raise ParamError("search", f"at most {MAX_SEARCH} characters")
        search = raw.translate(_ASCII_LOWER)
        codes = tuple(c for c, e in ERRORS.items() if search in e.error_reason)
    errors: tuple[str, ...] | None = None
    any_error = False
    raw = q.get("error_reason")
    if raw == "*":
        any_error = True
    elif raw:
        if len(raw) > MAX_SEARCH:
            raise ParamError("error_reason", f"at most {MAX_SEARCH} characters")
        errors = codes_for_reason(raw)
    page_size = limits.activity_chunk_rows
    after = None
    if not download:
        page_size = parse_int(q.get("page_size"), "page_size", DEFAULT_PAGE_SIZE, 1, limits.activity_max_page_size) or 1
        raw = q.get("starting_after")
        if raw:
            after = parse_cursor(raw, w.tz)
    query = ActivityQuery(
        start_us=w.start_us, end_us=w.end_us, user_id=w.user_id, order_id=w.order_id,
        search=search, search_codes=codes, errors=errors, any_error=any_error,
        bytes_min=parse_int(q.get("bytes__gte"), "bytes__gte", None, 0, MAX_ID),
        bytes_max=parse_int(q.get("bytes__lte"), "bytes__lte", None, 0, MAX_ID),
        after=after, limit=page_size,
    )  # fmt: skip
    token = q.get("download_token") if download else None
    if token is not None and not 0 < len(token) <= 200:
        raise ParamError("download_token", "expected the key of a download token")
    return ActivityParams(w, query, page_size, token)


def parse_stats(q: Mapping[str, str], now_us: int, limits: Limits) -> Window:
    check_known(q, STATS_PARAMS)
    return parse_window(q, now_us, limits.retention_days)


def stats_span(w: Window) -> tuple[int, int]:
    """[start, end) in UTC epoch seconds holding exactly the minute starts m with
    timestamp__gte <= m <= timestamp__lte (a minute row's time is its start)."""
    return -((-w.start_us) // US), w.end_us // US + 1
