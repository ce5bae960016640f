"""FonProxy response shapes from merged totals (pure).

Numbers are strings exactly as the FonProxy doc shows them ("1542"); pagination fields
of /analytics/websites are JSON numbers, as in the doc. Times are "YYYY-MM-DD HH:MM:SS"
in the requested zone. Ordering rules (documented in the README):
- domains: by bytes_total (sortBy=bytes) or total_count (sortBy=count), descending;
  ties by the other measure descending, then by domain name ascending;
- errors: by total_errors descending, ties by error text ascending; sample_domains are
  the (up to 3) domains with the most errors of that kind, ties by name;
- websites: by total_count descending, ties by domain name ascending.
Domains and websites arrive ranked and paged by the store (collector.model.DOMAIN_ORDERS):
only the page is rendered.
Empty buckets are omitted; the empty domain "" is not a website and is left out of
domains/websites.
"""

from __future__ import annotations

import math
from datetime import datetime, tzinfo
from typing import Any

from agent.wire import histogram
from collector.model import SAMPLE_DOMAINS, DomainPage, ErrorTotals, Totals
from collector.plan import ChartPlan

Obj = dict[str, Any]


def fmt_time(epoch_s: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(epoch_s, tz).strftime("%Y-%m-%d %H:%M:%S")


def fmt_ms(value: float) -> str:
    return f"{value:.3f}"


def _bucket(p: ChartPlan, i: int, tz: tzinfo) -> str:
    return fmt_time(p.edges[i], tz)


def traffic(p: ChartPlan, buckets: dict[int, Totals], tz: tzinfo) -> Obj:
    return {
        "data": [
            {
                "bucket": _bucket(p, i, tz),
                "total_bytes_sent": str(t.bytes_sent),
                "total_bytes_received": str(t.bytes_received),
                "bytes_total": str(t.bytes_sent + t.bytes_received),
                "total_count": str(t.count),
            }
            for i, t in sorted(buckets.items())
        ]
    }


def requests(p: ChartPlan, buckets: dict[int, Totals], tz: tzinfo) -> Obj:
    return {
        "data": [
            {"bucket": _bucket(p, i, tz), "total_count": str(t.count), "total_errors": str(t.error_count)}
            for i, t in sorted(buckets.items())
        ]
    }


def peak_of(t: Totals, use_profiles: bool) -> int:
    """Profiles give the exact cross-worker peak; rows' own max is the floor/fallback."""
    if use_profiles and t.peak is not None:
        return max(t.peak, t.max_concurrency)
    return t.max_concurrency


def concurrency(p: ChartPlan, buckets: dict[int, Totals], tz: tzinfo, use_profiles: bool) -> Obj:
    out = []
    for i, t in sorted(buckets.items()):
        seconds = p.bucket_seconds(i)
        avg = t.conn_ms / (seconds * 1000) if seconds > 0 else 0.0
        out.append(
            {
                "bucket": _bucket(p, i, tz),
                "max_concurrency": str(peak_of(t, use_profiles)),
                "total_count": str(t.count),
                "avg_concurrency": fmt_ms(avg),
            }
        )
    return {"data": out}


def latency(p: ChartPlan, buckets: dict[int, Totals], tz: tzinfo) -> Obj:
    out = []
    for i, t in sorted(buckets.items()):
        samples = sum(t.latency.values())
        if samples == 0 and t.duration_max_ms == 0 and t.count == 0:
            continue  # rows without histograms still list their bucket, with null quantiles
        qs = [histogram.quantile(t.latency, q) for q in (0.5, 0.95, 0.99)]
        out.append(
            {
                "bucket": _bucket(p, i, tz),
                "p50": None if qs[0] is None else fmt_ms(qs[0]),
                "p95": None if qs[1] is None else fmt_ms(qs[1]),
                "p99": None if qs[2] is None else fmt_ms(qs[2]),
                "max": str(t.duration_max_ms),
                "samples": str(samples),
                "total_count": str(t.count),
            }
        )
    return {"data": out}


def domains(page: DomainPage) -> Obj:
    return {
        "data": [
            {
                "domain": d,
                "total_count": str(t.count),
                "bytes_total": str(t.bytes_sent + t.bytes_received),
                "total_bytes_sent": str(t.bytes_sent),
                "total_bytes_received": str(t.bytes_received),
                "total_errors": str(t.error_count),
            }
            for d, t in page.items
        ]
    }


def errors(totals: dict[str, ErrorTotals], limit: int, tz: tzinfo) -> Obj:
    items = sorted(((e, t) for e, t in totals.items() if e), key=lambda it: (-it[1].total_errors, it[0]))
    out = []
    for e, t in items[:limit]:
        samples = sorted(((d, n) for d, n in t.by_domain.items() if d), key=lambda it: (-it[1], it[0]))
        out.append(
            {
                "error": e,
                "total_errors": str(t.total_errors),
                "first_seen": fmt_time(t.first_ts or 0, tz),
                "last_seen": fmt_time(t.last_ts or 0, tz),
                "sample_domains": [d for d, _ in samples[:SAMPLE_DOMAINS]],
            }
        )
    return {"data": out}


def websites(page: DomainPage, page_no: int, limit: int, tz: tzinfo) -> Obj:
    return {
        "data": [
            {
                "domain": d,
                "total_count": str(t.count),
                "bytes_total": str(t.bytes_sent + t.bytes_received),
                "first_visit": fmt_time(t.first_ts or 0, tz),
                "last_visit": fmt_time(t.last_ts or 0, tz),
            }
            for d, t in page.items
        ],
        "page": page_no,
        "limit": limit,
        "total": page.total,
        "totalPages": math.ceil(page.total / limit),
    }
