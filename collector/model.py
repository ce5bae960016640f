"""Plain values that cross between the HTTP layer, the query planner and a Store."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.wire import histogram


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
