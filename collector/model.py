"""Plain values that cross between the HTTP layer, the query planner and a Store."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.wire import histogram
from agent.wire.batch import Activity


@dataclass(frozen=True)
class Filter:
    """Rows a query covers; None means "any"."""

    user_id: int | None = None
    order_id: int | None = None
    domain: str | None = None


@dataclass(slots=True)
class Totals:
    """Merged counters of the rows of one bucket, domain, ... (see the merge rules)."""

    count: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    error_count: int = 0
    duration_ms: int = 0
    conn_ms: int = 0
    max_concurrency: int = 0  # max of the rows' own max_concurrency
    duration_max_ms: int = 0
    first_ts: int | None = None  # earliest minute start (UTC epoch seconds)
    last_ts: int | None = None
    peak: int | None = None  # exact cross-worker peak from concurrency profiles, if any
    latency: histogram.Histogram = field(default_factory=dict)

    def add_sums(
        self,
        count: int,
        bytes_sent: int,
        bytes_received: int,
        error_count: int,
        duration_ms: int,
        conn_ms: int,
        max_concurrency: int,
        duration_max_ms: int,
        first_ts: int,
        last_ts: int,
    ) -> None:
        self.count += count
        self.bytes_sent += bytes_sent
        self.bytes_received += bytes_received
        self.error_count += error_count
        self.duration_ms += duration_ms
        self.conn_ms += conn_ms
        if max_concurrency > self.max_concurrency:
            self.max_concurrency = max_concurrency
        if duration_max_ms > self.duration_max_ms:
            self.duration_max_ms = duration_max_ms
        if self.first_ts is None or first_ts < self.first_ts:
            self.first_ts = first_ts
        if self.last_ts is None or last_ts > self.last_ts:
            self.last_ts = last_ts

    def add_peak(self, peak: int) -> None:
        if self.peak is None or peak > self.peak:
            self.peak = peak


# /analytics/errors lists this many sample domains per error.
SAMPLE_DOMAINS = 3

# How /domains (sortBy=bytes|count) and /websites ("visits") rank domains: most first
# by each measure in turn, then by domain name ascending (code point order): the one
# definition every backend ranks by.
DOMAIN_ORDERS: dict[str, tuple[str, ...]] = {
    "bytes": ("bytes_total", "count"),
    "count": ("count", "bytes_total"),
    "visits": ("count",),
}


@dataclass(slots=True)
class DomainPage:
    """One ranked page of the domain breakdown."""

    items: list[tuple[str, Totals]]  # (domain, totals), in DOMAIN_ORDERS[order] order
    total: int  # distinct non-empty domains the range and filter hold


@dataclass(slots=True)
class ErrorTotals:
    total_errors: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    # error_count per domain; a store may keep only the domains that can be among the
    # SAMPLE_DOMAINS largest (all ties at the last place included)
    by_domain: dict[str, int] = field(default_factory=dict)

    def add(self, domain: str, errors: int, first_ts: int, last_ts: int) -> None:
        self.total_errors += errors
        self.by_domain[domain] = self.by_domain.get(domain, 0) + errors
        if self.first_ts is None or first_ts < self.first_ts:
            self.first_ts = first_ts
        if self.last_ts is None or last_ts > self.last_ts:
            self.last_ts = last_ts


# ---- Webshare-compatible API (/api/v2): activity records, stats, download tokens -------


@dataclass(frozen=True)
class ActivityQuery:
    """Activity records a list/download covers, newest first: ordered by (ts_us, id)
    descending, `id` being the store's unique id of a record (0 <= id < 2**63), so equal
    timestamps still have one fixed order and a cursor can point between them.

    A record matches when all of:
    - start_us <= ts_us <= end_us (both inclusive, UTC epoch microseconds);
    - user_id / order_id equal, where not None;
    - `search` (already ASCII-lowercased; None: no search) is a substring of the
      ASCII-lowercased hostname, domain, ip_address, client_address or auth_username
      (null fields never match), OR the record's error is one of `search_codes` (the
      table's codes whose Webshare reason contains it), OR the error is non-empty, not a
      code of agent.wire.errorcodes.ERRORS (so its reason is the code itself) and
      contains it ASCII-case-insensitively;
    - `errors` None: any; else the error is one of them (empty tuple: none match);
    - `any_error`: the error is not "";
    - bytes_min <= bytes_sent + bytes_received <= bytes_max, where not None;
    - `after` None, or (ts_us, id) < after (strictly later in the order). A cursor
      (T, -1) means "older than T".
    `limit` caps the records of one page (or of one chunk of a stream).
    """

    start_us: int
    end_us: int
    user_id: int | None = None
    order_id: int | None = None
    search: str | None = None
    search_codes: tuple[str, ...] = ()
    errors: tuple[str, ...] | None = None
    any_error: bool = False
    bytes_min: int | None = None
    bytes_max: int | None = None
    after: tuple[int, int] | None = None
    limit: int = 25


@dataclass(slots=True)
class ActivityPage:
    items: list[tuple[int, Activity]]  # (id, record), in ActivityQuery order, at most limit
    count: int  # every record matching the query's filters, whatever its `after`


@dataclass(slots=True)
class StatsTotals:
    """One hour (or window) of /api/v2/stats, from the per-minute rows (complete even
    when activity records are sampled)."""

    count: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    error_count: int = 0
    conn_ms: int = 0
    last_ts: int | None = None  # latest minute start (UTC epoch s) of a row with count > 0
    errors: dict[str, int] = field(default_factory=dict)  # error_count per non-empty stored error
    protocols: dict[str, int] = field(default_factory=dict)  # count per row protocol, as stored
    proxies: dict[str, int] = field(default_factory=dict)  # count per non-empty ip_out

    def merge(self, other: "StatsTotals") -> None:
        self.count += other.count
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.error_count += other.error_count
        self.conn_ms += other.conn_ms
        if other.last_ts is not None and (self.last_ts is None or other.last_ts > self.last_ts):
            self.last_ts = other.last_ts
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        for k, v in other.protocols.items():
            self.protocols[k] = self.protocols.get(k, 0) + v
        for k, v in other.proxies.items():
            self.proxies[k] = self.proxies.get(k, 0) + v


DOWNLOAD_SCOPES = ("activity",)


@dataclass(frozen=True)
class DownloadToken:
    """A key that only downloads one scope's CSV, only of `user_id` (None: every user,
    an admin's), until `expire_at` (UTC epoch s) or until it is reset."""

    id: int
    key: str
    scope: str
    user_id: int | None
    expire_at: int
