"""FonProxy (and, at the end, Webshare) response shapes from merged totals (pure).

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

import csv
import io
import math
from datetime import datetime, tzinfo
from typing import Any

from agent.wire import histogram
from agent.wire.batch import Activity
from agent.wire.errorcodes import ErrorCode, describe, error_reason
from collector.geoip import CountryTable
from collector.model import SAMPLE_DOMAINS, ActivityPage, DomainPage, DownloadToken, ErrorTotals, StatsTotals, Totals
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


# ---- /api/v2 (Webshare-compatible) ------------------------------------------------------
#
# Times are ISO 8601 in the requested zone with its offset and microseconds
# ("2022-08-16T15:29:42.517523-07:00"); durations are seconds (ms / 1000); an error is
# shown as its Webshare-style reason from agent.wire.errorcodes.

US = 1_000_000
CSV_COLUMNS = ("Time", "Hostname", "Destination Port", "Bytes", "Duration", "Proxy", "Your IP Address",
               "Error Reason", "Protocol")  # fmt: skip
# protocols_used keys: Webshare's two protocols (rows say HTTP/HTTPS/SOCKS); any other
# row protocol is shown lowercased.
_PROTOCOL_NAMES = {"HTTP": "http", "HTTPS": "http", "SOCKS": "socks"}


def iso_us(ts_us: int, tz: tzinfo, sep: str = "T") -> str:
    dt = datetime.fromtimestamp(ts_us // US, tz).replace(microsecond=ts_us % US)
    return dt.isoformat(sep=sep, timespec="microseconds")


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def activity_object(rec: Activity, tz: tzinfo) -> Obj:
    """Webshare's activity object, its fields in its order."""
    err = describe(rec.error) if rec.error else None
    return {
        "timestamp": iso_us(rec.ts_us, tz),
        "protocol": rec.protocol,
        "request_duration": rec.duration_ms / 1000,
        "handshake_duration": _seconds(rec.handshake_ms),
        "tunnel_duration": _seconds(rec.tunnel_ms),
        "error_reason": None if err is None else err.error_reason,
        "error_reason_how_to_fix": None if err is None else err.how_to_fix,
        "auth_username": rec.auth_username,
        "proxy_address": rec.proxy_address,
        "bytes": rec.bytes_sent + rec.bytes_received,
        "client_address": rec.client_address,
        "ip_address": rec.ip_address,
        "hostname": rec.hostname,
        "domain": rec.domain,
        "port": rec.port,
        "proxy_port": rec.proxy_port,
        "listen_address": rec.listen_address,
        "listen_port": rec.listen_port,
    }


def activity_list(page: ActivityPage, page_size: int, tz: tzinfo, next_url: str | None) -> Obj:
    """`page` holds up to page_size + 1 items (the extra one only says there is more)."""
    return {
        "count": page.count,
        "next": next_url,
        "previous": None,
        "results": [activity_object(rec, tz) for _id, rec in page.items[:page_size]],
    }


def _cell(value: object) -> str:
    # Webshare's CSV writes a missing value as Python's None does.
    return "None" if value is None else str(value)


def csv_text(items: list[tuple[int, Activity]], tz: tzinfo, header: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    if header:
        w.writerow(CSV_COLUMNS)
    for _id, rec in items:
        reason = error_reason(rec.error)
        w.writerow([
            iso_us(rec.ts_us, tz, " "), _cell(rec.hostname), _cell(rec.port), rec.bytes_sent + rec.bytes_received,
            rec.duration_ms / 1000, _cell(rec.proxy_address), rec.client_address, _cell(reason), rec.protocol,
        ])  # fmt: skip
    return buf.getvalue()


def _error_reasons(errors: dict[str, int]) -> list[Obj]:
    by_reason: dict[str, tuple[ErrorCode, int]] = {}
    for code, n in errors.items():
        e = describe(code)
        prev = by_reason.get(e.error_reason)
        by_reason[e.error_reason] = (e, n + (prev[1] if prev else 0))
    items = sorted(by_reason.items(), key=lambda it: (-it[1][1], it[0]))
    return [
        {"reason": reason, "type": e.type, "how_to_fix": e.how_to_fix, "http_status": e.http_status, "count": n}
        for reason, (e, n) in items
    ]


def countries(proxies: dict[str, int], geo: CountryTable | None) -> dict[str, int]:
    """Requests per country code of the proxy address (none without a GeoIP table;
    an address the table does not place is left out)."""
    out: dict[str, int] = {}
    if geo is not None:
        for ip, n in proxies.items():
            cc = geo.country(ip)
            if cc is not None and n:
                out[cc] = out.get(cc, 0) + n
    return dict(sorted(out.items()))


def stat_fields(t: StatsTotals, seconds: float, tz: tzinfo, geo: CountryTable | None = None) -> Obj:
    """The measures of a stats object over `seconds` of time (an hour, or the window)."""
    total = t.bytes_sent + t.bytes_received
    protocols: dict[str, int] = {}
    for proto, n in t.protocols.items():
        name = _PROTOCOL_NAMES.get(proto, proto.lower())
        protocols[name] = protocols.get(name, 0) + n
    return {
        "bandwidth_total": total,
        # an integer, "bandwidth_total/requests_total" (Webshare's definition and type)
        "bandwidth_average": total // t.count if t.count else 0,
        "requests_total": t.count,
        # max(): a hand-made row may claim more errors than requests; never below 0
        "requests_successful": max(0, t.count - t.error_count),
        "requests_failed": t.error_count,
        "error_reasons": _error_reasons(t.errors),
        "countries_used": countries(t.proxies, geo),
        "number_of_proxies_used": len(t.proxies),
        "protocols_used": dict(sorted(protocols.items())),
        "average_concurrency": t.conn_ms / (seconds * 1000) if seconds > 0 else 0.0,
        "average_rps": t.count / seconds if seconds > 0 else 0.0,
        "last_request_sent_at": None if t.last_ts is None else iso_us(t.last_ts * US, tz),
    }


def hourly_stats(p: ChartPlan, buckets: dict[int, StatsTotals], tz: tzinfo, geo: CountryTable | None = None) -> list[Obj]:
    """One stats object per hour of the window that has rows, oldest first: as Webshare
    says, "hours without proxy usage do not have a proxy stat object"."""
    return [
        {"timestamp": iso_us(p.edges[i] * US, tz), "is_projected": False,
         **stat_fields(buckets[i], p.edges[i + 1] - p.edges[i], tz, geo)}
        for i in sorted(buckets)
    ]  # fmt: skip


def aggregate_stats(buckets: dict[int, StatsTotals], seconds: float, tz: tzinfo, geo: CountryTable | None = None) -> Obj:
    total = StatsTotals()
    for t in buckets.values():
        total.merge(t)
    return stat_fields(total, seconds, tz, geo)


def download_token(tok: DownloadToken, tz: tzinfo) -> Obj:
    return {"id": tok.id, "key": tok.key, "scope": tok.scope, "expire_at": iso_us(tok.expire_at * US, tz)}
