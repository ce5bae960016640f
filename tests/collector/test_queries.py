"""The six FonProxy queries (plus latency) against sums computed here from the ingested rows."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.collector.conftest import ADMIN, USER7, USER42, Api, auth

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 3, 27, tzinfo=UTC)
DOMAINS = ["alpha.com", "beta.org", "gamma.net", "delta.io", "eps.dev", ""]
ERRORS = ["", "", "", "ECONNREFUSED", "ETIMEDOUT", "dns_failure"]


def make_rows(seed: int = 7, n: int = 700) -> list[dict[str, Any]]:
    """Rows over 2026-03-27..2026-03-31 (UTC), across the Europe/Berlin DST change."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        minute = rnd.randrange(4 * 24 * 60)
        ts = START + timedelta(minutes=minute, seconds=rnd.randrange(60))
        err = rnd.choice(ERRORS)
        count = rnd.randrange(1, 50)
        rows.append(
            {
                "ts": ts.strftime("%Y-%m-%d %H:%M:%S"),
                "user_id": rnd.choice([7, 42, 99]),
                "order_id": rnd.choice([1, 2, 3]),
                "port": rnd.choice([80, 443]),
                "protocol": rnd.choice(["HTTP", "HTTPS"]),
                "worker": rnd.choice(["w1", "w2"]),
                "domain": rnd.choice(DOMAINS),
                "error": err,
                "count": count,
                "bytes_sent": rnd.randrange(10_000),
                "bytes_received": rnd.randrange(1_000_000),
                "error_count": rnd.randrange(1, count + 1) if err else 0,
                "duration_ms": rnd.randrange(100_000),
                "conn_ms": rnd.randrange(60_000),
                "max_concurrency": rnd.randrange(20),
            }
        )
    return rows


ROWS = make_rows()


def epoch(row: dict[str, Any]) -> int:
    t = datetime.strptime(row["ts"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return int(t.timestamp()) // 60 * 60


def label(ts: int, tz: Any, interval: str) -> str:
    """The bucket a minute belongs to, by local wall-clock arithmetic (the oracle)."""
    local = datetime.fromtimestamp(ts, tz)
    if interval == "1d":
        return local.strftime("%Y-%m-%d 00:00:00")
    if interval == "1h":
        return local.strftime("%Y-%m-%d %H:00:00")
    step = {"1m": 1, "5m": 5, "15m": 15}[interval]
    return local.replace(minute=local.minute // step * step, second=0).strftime("%Y-%m-%d %H:%M:%S")


def select(rows: list[dict[str, Any]], frm: datetime, to: datetime, **filt: Any) -> list[dict[str, Any]]:
    lo, hi = frm.timestamp(), to.timestamp()
    out = []
    for r in rows:
        if not lo <= epoch(r) < hi:
            continue
        if any(r.get(k, 0 if k != "domain" else "") != v for k, v in filt.items()):
            continue
        out.append(r)
    return out


def sums(rows: list[dict[str, Any]], key) -> dict[Any, dict[str, int]]:
    out: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        acc = out[key(r)]
        for f in ("count", "bytes_sent", "bytes_received", "error_count", "conn_ms"):
            acc[f] += r.get(f, 0)
        acc["max_concurrency"] = max(acc["max_concurrency"], r.get("max_concurrency", 0))
        acc["first"] = min(acc.get("first", 1 << 62), epoch(r))
        acc["last"] = max(acc.get("last", 0), epoch(r))
    return out


def q(frm: datetime, to: datetime, **extra: Any) -> dict[str, Any]:
    return {"from": frm.isoformat(), "to": to.isoformat(), **extra}


@pytest.fixture
async def loaded(api: Api) -> Api:
    for i in range(0, len(ROWS), 100):
        await api.ingest({"logs": ROWS[i : i + 100]}, key=f"load:{i}")
    return api


FILTERS = [{}, {"domain": "alpha.com"}, {"orderId": 2}, {"userId": 42}, {"userId": 7, "orderId": 1, "domain": "beta.org"}]


def row_filter(f: dict[str, Any]) -> dict[str, Any]:
    names = {"domain": "domain", "orderId": "order_id", "userId": "user_id"}
    return {names[k]: v for k, v in f.items()}


@pytest.mark.parametrize("filt", FILTERS)
@pytest.mark.parametrize("interval", ["5m", "1h", "1d"])
async def test_traffic_and_requests_buckets_match_oracle(loaded: Api, filt: dict[str, Any], interval: str) -> None:
    frm, to = datetime(2026, 3, 27, 5, 17, tzinfo=UTC), datetime(2026, 3, 30, 19, 40, tzinfo=UTC)
    sel = select(ROWS, frm, to, **row_filter(filt))
    expect = sums(sel, lambda r: label(epoch(r), UTC, interval))
    assert expect
    traffic = await loaded.get("/analytics/traffic", **q(frm, to, interval=interval, **filt))
    assert traffic["data"] == [
        {
            "bucket": b,
            "total_bytes_sent": str(s["bytes_sent"]),
            "total_bytes_received": str(s["bytes_received"]),
            "bytes_total": str(s["bytes_sent"] + s["bytes_received"]),
            "total_count": str(s["count"]),
        }
        for b, s in sorted(expect.items())
    ]
    requests = await loaded.get("/analytics/requests", **q(frm, to, interval=interval, **filt))
    assert requests["data"] == [
        {"bucket": b, "total_count": str(s["count"]), "total_errors": str(s["error_count"])} for b, s in sorted(expect.items())
    ]


async def test_day_buckets_in_berlin_across_dst(loaded: Api) -> None:
    # Local days 2026-03-28, 29 (23 hours: clocks jump 02:00 -> 03:00) and 30.
    frm = datetime(2026, 3, 28, tzinfo=BERLIN)
    to = datetime(2026, 3, 31, tzinfo=BERLIN)
    assert to.timestamp() - frm.timestamp() == (3 * 24 - 1) * 3600
    sel = select(ROWS, frm, to)
    expect = sums(sel, lambda r: label(epoch(r), BERLIN, "1d"))
    assert sorted(expect) == ["2026-03-28 00:00:00", "2026-03-29 00:00:00", "2026-03-30 00:00:00"]
    hours = {"2026-03-28 00:00:00": 24, "2026-03-29 00:00:00": 23, "2026-03-30 00:00:00": 24}
    # Naive from/to are read in tz.
    got = await loaded.get(
        "/analytics/concurrency", **{"from": "2026-03-28", "to": "2026-03-31T00:00:00", "tz": "Europe/Berlin", "interval": "1d"}
    )
    assert got["data"] == [
        {
            "bucket": b,
            "max_concurrency": str(s["max_concurrency"]),
            "total_count": str(s["count"]),
            "avg_concurrency": f"{s['conn_ms'] / (hours[b] * 3600 * 1000):.3f}",
        }
        for b, s in sorted(expect.items())
    ]
    # Hourly buckets that day: 02:00 local does not exist.
    day = await loaded.get("/analytics/traffic", **q(datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 3, 30, tzinfo=BERLIN), tz="Europe/Berlin", interval="1h"))
    labels = [d["bucket"] for d in day["data"]]
    assert "2026-03-29 02:00:00" not in labels
    expect_h = sums(select(ROWS, datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 3, 30, tzinfo=BERLIN)), lambda r: label(epoch(r), BERLIN, "1h"))
    assert labels == sorted(expect_h)
    assert [int(d["total_count"]) for d in day["data"]] == [expect_h[b]["count"] for b in labels]


async def test_half_hour_zone_uses_local_hours(loaded: Api) -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    frm, to = datetime(2026, 3, 28, tzinfo=kolkata), datetime(2026, 3, 30, tzinfo=kolkata)
    expect = sums(select(ROWS, frm, to), lambda r: label(epoch(r), kolkata, "1h"))
    got = await loaded.get("/analytics/requests", **q(frm, to, tz="Asia/Kolkata", interval="1h"))
    assert [(d["bucket"], d["total_count"]) for d in got["data"]] == [(b, str(s["count"])) for b, s in sorted(expect.items())]
    # Local days start at 18:30 UTC: read from minute rows at the edges, hours inside.
    frm, to = datetime(2026, 3, 27, 12, 7, tzinfo=kolkata), datetime(2026, 3, 31, 3, 0, tzinfo=kolkata)
    expect = sums(select(ROWS, frm, to), lambda r: label(epoch(r), kolkata, "1d"))
    assert len(expect) == 5
    got = await loaded.get("/analytics/traffic", **q(frm, to, tz="Asia/Kolkata", interval="1d"))
    assert [(d["bucket"], d["total_count"], d["total_bytes_received"]) for d in got["data"]] == [
        (b, str(s["count"]), str(s["bytes_received"])) for b, s in sorted(expect.items())
    ]


@pytest.mark.parametrize(
    "hours,step_minutes", [(2, 1), (24, 5), (48, 15), (7 * 24, 60), (60 * 24, 24 * 60)]
)
async def test_default_interval_keeps_at_most_500_points(loaded: Api, hours: int, step_minutes: int) -> None:
    frm = datetime(2026, 3, 28, 10, tzinfo=UTC) if hours <= 48 else datetime(2026, 3, 26, tzinfo=UTC)
    to = frm + timedelta(hours=hours)
    interval = {1: "1m", 5: "5m", 15: "15m", 60: "1h", 1440: "1d"}[step_minutes]
    expect = sums(select(ROWS, frm, to), lambda r: label(epoch(r), UTC, interval))
    got = await loaded.get("/analytics/requests", **q(frm, to))
    assert [(d["bucket"], d["total_count"]) for d in got["data"]] == [(b, str(s["count"])) for b, s in sorted(expect.items())]
    assert math.ceil(hours * 60 / step_minutes) <= 500


@pytest.mark.parametrize("filt", [{}, {"orderId": 3}, {"userId": 99}, {"domain": "gamma.net"}])
@pytest.mark.parametrize("sort_by", ["bytes", "count"])
async def test_domains_top_n(loaded: Api, filt: dict[str, Any], sort_by: str) -> None:
    frm, to = datetime(2026, 3, 27, 13, 3, tzinfo=UTC), datetime(2026, 3, 30, 1, 0, tzinfo=UTC)
    s = sums(select(ROWS, frm, to, **row_filter(filt)), lambda r: r["domain"])
    s.pop("", None)
    assert len(s) >= (1 if "domain" in filt else 3)
    by = (lambda d: s[d]["bytes_sent"] + s[d]["bytes_received"]) if sort_by == "bytes" else (lambda d: s[d]["count"])
    order = sorted(s, key=lambda d: -by(d))[:3]
    got = await loaded.get("/analytics/domains", **q(frm, to, sortBy=sort_by, limit=3, **filt))
    assert got["data"] == [
        {
            "domain": d,
            "total_count": str(s[d]["count"]),
            "bytes_total": str(s[d]["bytes_sent"] + s[d]["bytes_received"]),
            "total_bytes_sent": str(s[d]["bytes_sent"]),
            "total_bytes_received": str(s[d]["bytes_received"]),
            "total_errors": str(s[d]["error_count"]),
        }
        for d in order
    ]


async def test_domain_ties_break_by_name(api: Api) -> None:
    rows = [
        {"ts": "2026-03-15 10:00:00", "domain": d, "count": c, "bytes_sent": b}
        for d, c, b in [("zeta.com", 5, 100), ("acme.com", 5, 100), ("mid.com", 9, 100), ("big.com", 1, 500), ("nil.com", 5, 100)]
    ]
    await api.ingest({"logs": rows})
    day = {"from": "2026-03-15", "to": "2026-03-16"}
    by_bytes = await api.get("/analytics/domains", **day)
    # bytes desc; ties by count desc, then name asc.
    assert [d["domain"] for d in by_bytes["data"]] == ["big.com", "mid.com", "acme.com", "nil.com", "zeta.com"]
    by_count = await api.get("/analytics/domains", **day, sortBy="count", limit=2)
    assert [d["domain"] for d in by_count["data"]] == ["mid.com", "acme.com"]


async def test_errors_breakdown(loaded: Api) -> None:
    frm, to = datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)
    for filt in ({}, {"domain": "alpha.com"}, {"orderId": 1}):
        sel = [r for r in select(ROWS, frm, to, **row_filter(filt)) if r["error"]]
        per: dict[str, dict[str, Any]] = {}
        for r in sel:
            e = per.setdefault(r["error"], {"n": 0, "first": 1 << 62, "last": 0, "dom": defaultdict(int)})
            e["n"] += r["error_count"]
            e["first"] = min(e["first"], epoch(r))
            e["last"] = max(e["last"], epoch(r))
            if r["domain"]:
                e["dom"][r["domain"]] += r["error_count"]
        fmt = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
        expect = [
            {
                "error": err,
                "total_errors": str(e["n"]),
                "first_seen": fmt(e["first"]),
                "last_seen": fmt(e["last"]),
                "sample_domains": sorted(e["dom"], key=lambda d: (-e["dom"][d], d))[:3],
            }
            for err, e in sorted(per.items(), key=lambda it: (-it[1]["n"], it[0]))
        ]
        got = await loaded.get("/analytics/errors", **q(frm, to, **filt))
        assert got["data"] == expect
        assert len(expect) == 3
        limited = await loaded.get("/analytics/errors", **q(frm, to, limit=2, **filt))
        assert limited["data"] == expect[:2]


async def test_websites_pagination(api: Api) -> None:
    rows = [
        {"ts": f"2026-03-15 1{i % 10}:0{i % 7}:00", "domain": f"site{i:02d}.com", "count": 100 - i % 13, "bytes_sent": i}
        for i in range(48)
    ]
    rows += [{"ts": "2026-03-14 23:59:00", "domain": "site00.com", "count": 1}]  # outside the range
    await api.ingest({"logs": rows})
    day = {"from": "2026-03-15T00:00:00Z", "to": "2026-03-16T00:00:00Z"}
    inside = [r for r in rows if r["ts"].startswith("2026-03-15")]
    order = sorted(inside, key=lambda r: (-r["count"], r["domain"]))
    page1 = await api.get("/analytics/websites", **day)
    assert (page1["page"], page1["limit"], page1["total"], page1["totalPages"]) == (1, 25, 48, 2)
    assert [d["domain"] for d in page1["data"]] == [r["domain"] for r in order[:25]]
    page2 = await api.get("/analytics/websites", **day, page=2)
    assert [d["domain"] for d in page2["data"]] == [r["domain"] for r in order[25:]]
    first = page2["data"][0]
    src = order[25]
    assert first == {
        "domain": src["domain"],
        "total_count": str(src["count"]),
        "bytes_total": str(src["bytes_sent"]),
        "first_visit": src["ts"],
        "last_visit": src["ts"],
    }
    page9 = await api.get("/analytics/websites", **day, page=9, limit=10)
    assert (page9["data"], page9["total"], page9["totalPages"]) == ([], 48, 5)
    one = await api.get("/analytics/websites", **day, domain="site07.com")
    assert (one["total"], one["totalPages"], one["data"][0]["domain"]) == (1, 1, "site07.com")


async def test_first_last_visit_across_rollups_and_tz(loaded: Api) -> None:
    frm, to = datetime(2026, 3, 27, 3, 33, tzinfo=UTC), datetime(2026, 3, 30, 22, 2, tzinfo=UTC)
    s = sums(select(ROWS, frm, to), lambda r: r["domain"])
    got = await loaded.get("/analytics/websites", **q(frm, to, tz="Europe/Berlin", limit=100))
    fmt = lambda t: datetime.fromtimestamp(t, BERLIN).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    assert {d["domain"]: (d["first_visit"], d["last_visit"]) for d in got["data"]} == {
        d: (fmt(v["first"]), fmt(v["last"])) for d, v in s.items() if d
    }


async def test_user_token_sees_only_its_own_user(loaded: Api) -> None:
    frm, to = datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)
    own = sums(select(ROWS, frm, to, user_id=42), lambda r: r["domain"])
    got = await loaded.get("/analytics/domains", token=USER42, **q(frm, to, sortBy="count"))
    assert {d["domain"]: int(d["total_count"]) for d in got["data"]} == {d: v["count"] for d, v in own.items() if d}
    same = await loaded.get("/analytics/domains", token=USER42, **q(frm, to, sortBy="count", userId=42))
    assert same == got
    err = await loaded.get("/analytics/domains", token=USER42, expect=403, **q(frm, to, userId=7))
    assert err["error"]["code"] == "forbidden"
    await loaded.get("/analytics/traffic", token=USER7, expect=403, **q(frm, to, userId=42))
    admin = await loaded.get("/analytics/domains", token=ADMIN, **q(frm, to, sortBy="count", userId=42))
    assert admin == got
    # Charts and the other breakdowns are narrowed the same way (oracle: user 42's rows).
    mine = select(ROWS, frm, to, user_id=42)
    daily = sums(mine, lambda r: label(epoch(r), UTC, "1d"))
    traffic = await loaded.get("/analytics/traffic", token=USER42, **q(frm, to, interval="1d"))
    assert [(d["bucket"], d["total_count"], d["total_bytes_sent"]) for d in traffic["data"]] == [
        (b, str(v["count"]), str(v["bytes_sent"])) for b, v in sorted(daily.items())
    ]
    errors = await loaded.get("/analytics/errors", token=USER42, **q(frm, to))
    per_error: dict[str, int] = defaultdict(int)
    for r in mine:
        if r["error"]:
            per_error[r["error"]] += r["error_count"]
    assert {e["error"]: int(e["total_errors"]) for e in errors["data"]} == per_error
    sites = await loaded.get("/analytics/websites", token=USER42, **q(frm, to, limit=100))
    assert {d["domain"]: int(d["total_count"]) for d in sites["data"]} == {d: v["count"] for d, v in own.items() if d}


BAD_PARAMS = [
    ("traffic", {"to": "2026-03-16"}, "from"),
    ("traffic", {"from": "2026-03-15"}, "to"),
    ("traffic", {"from": "yesterday", "to": "2026-03-16"}, "from"),
    ("traffic", {"from": "2026-03-16", "to": "2026-03-16"}, "to"),
    ("traffic", {"from": "2026-03-17", "to": "2026-03-16"}, "to"),
    ("traffic", {"from": "2026-01-01", "to": "2026-03-05"}, "to"),
    ("traffic", {"from": "2026-03-15", "to": "2026-03-16", "interval": "2h"}, "interval"),
    ("traffic", {"from": "2026-01-15", "to": "2026-03-15", "interval": "1m"}, "interval"),
    ("traffic", {"from": "2026-03-15", "to": "2026-03-16", "tz": "Mars/Olympus"}, "tz"),
    ("traffic", {"from": "2026-03-15", "to": "2026-03-16", "orderId": "abc"}, "orderId"),
    ("requests", {"from": "2026-03-15", "to": "2026-03-16", "userId": "-1"}, "userId"),
    ("concurrency", {"from": "2026-03-15", "to": "2026-03-16", "domain": "x" * 300}, "domain"),
    ("domains", {"from": "2026-03-15", "to": "2026-03-16", "limit": "0"}, "limit"),
    ("domains", {"from": "2026-03-15", "to": "2026-03-16", "limit": "101"}, "limit"),
    ("domains", {"from": "2026-03-15", "to": "2026-03-16", "limit": "ten"}, "limit"),
    ("domains", {"from": "2026-03-15", "to": "2026-03-16", "sortBy": "name"}, "sortBy"),
    ("errors", {"from": "2026-03-15", "to": "2026-03-16", "limit": "500"}, "limit"),
    ("websites", {"from": "2026-03-15", "to": "2026-03-16", "page": "0"}, "page"),
    ("latency", {"from": "2026-03-15"}, "to"),
    # Digits int() refuses ("²") or that are not ASCII ("١٢") are not integers here.
    ("domains", {"from": "2026-03-15", "to": "2026-03-16", "limit": "\u00b2"}, "limit"),
    ("websites", {"from": "2026-03-15", "to": "2026-03-16", "page": "\u0661\u0662"}, "page"),
    ("traffic", {"from": "2026-03-15", "to": "2026-03-16", "orderId": "\u00b9"}, "orderId"),
    # Times whose buckets would leave Python's datetime range (year 1 / 9999).
    ("traffic", {"from": "0001-01-01", "to": "0001-01-02", "tz": "Europe/Berlin"}, "from"),
    ("traffic", {"from": "9999-12-30", "to": "9999-12-31T23:00:00", "interval": "1d"}, "from"),
    ("errors", {"from": "1969-12-31T00:00:00Z", "to": "1970-01-02T00:00:00Z"}, "from"),
]


@pytest.mark.parametrize("endpoint,query,field", BAD_PARAMS)
async def test_bad_parameters_are_400_naming_the_parameter(api: Api, endpoint: str, query: dict[str, str], field: str) -> None:
    err = await api.get(f"/analytics/{endpoint}", expect=400, **query)
    assert err["error"]["code"] == "invalid_parameter"
    assert err["error"]["field"] == field
    assert err["error"]["message"]


async def test_two_month_range_is_allowed(api: Api) -> None:
    await api.ingest({"logs": [{"ts": "2026-01-31 12:00:00", "domain": "a.com", "count": 3}]})
    got = await api.get("/analytics/domains", **{"from": "2026-01-01", "to": "2026-03-01"})
    assert got["data"][0]["total_count"] == "3"
    # The limit itself: 62 days exactly is allowed, one second more is not.
    got = await api.get("/analytics/domains", **{"from": "2026-01-01T00:00:00Z", "to": "2026-03-04T00:00:00Z"})
    assert got["data"][0]["total_count"] == "3"
    err = await api.get("/analytics/domains", expect=400, **{"from": "2026-01-01T00:00:00Z", "to": "2026-03-04T00:00:01Z"})
    assert err["error"]["field"] == "to"


async def test_unencoded_plus_in_an_offset_is_read_as_plus(api: Api) -> None:
    # curl 'from=2026-03-15T10:00:00+01:00' sends a raw '+', which a query string decodes
    # as a space; the offset is still understood (09:00 UTC).
    await api.ingest({"logs": [{"ts": "2026-03-15 08:59:00", "count": 1}, {"ts": "2026-03-15 09:00:00", "count": 2}]})
    resp = await api.client.get(
        "/analytics/requests?from=2026-03-15T10:00:00+01:00&to=2026-03-15T11:00:00+0100&interval=1h", headers=auth(ADMIN)
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["data"] == [{"bucket": "2026-03-15 09:00:00", "total_count": "2", "total_errors": "0"}]


async def test_empty_buckets_are_omitted_and_unknown_domain_is_empty(loaded: Api) -> None:
    got = await loaded.get("/analytics/traffic", **{"from": "2026-03-15", "to": "2026-03-16"})
    assert got == {"data": []}
    got = await loaded.get("/analytics/traffic", **{"from": "2026-03-27", "to": "2026-03-28", "domain": "never.seen"})
    assert got == {"data": []}
    got = await loaded.get("/analytics/websites", **{"from": "2026-03-15", "to": "2026-03-16"})
    assert got == {"data": [], "page": 1, "limit": 25, "total": 0, "totalPages": 0}


async def test_autumn_dst_day_is_25_hours_and_the_repeated_hour_is_two_buckets(api: Api) -> None:
    # Europe/Berlin 2026-10-25: 03:00 CEST -> 02:00 CET, local 02:00-03:00 happens twice
    # (00:00-01:00 and 01:00-02:00 UTC).
    minutes = [datetime(2026, 10, 24, 21, 59, tzinfo=UTC) + timedelta(minutes=37 * i) for i in range(80)]
    rows = [
        {"ts": m.strftime("%Y-%m-%d %H:%M:%S"), "domain": "a.com", "count": 1 + i % 7, "conn_ms": 1000 * (i % 5)}
        for i, m in enumerate(minutes)
    ]
    await api.ingest({"logs": rows})
    frm, to = datetime(2026, 10, 24, tzinfo=BERLIN), datetime(2026, 10, 27, tzinfo=BERLIN)
    expect = sums(select(rows, frm, to), lambda r: label(epoch(r), BERLIN, "1d"))
    hours = {"2026-10-24 00:00:00": 24, "2026-10-25 00:00:00": 25, "2026-10-26 00:00:00": 24}
    got = await api.get("/analytics/concurrency", **q(frm, to, tz="Europe/Berlin", interval="1d"))
    assert got["data"] == [
        {"bucket": b, "max_concurrency": "0", "total_count": str(s["count"]),
         "avg_concurrency": f"{s['conn_ms'] / (hours[b] * 3_600_000):.3f}"}
        for b, s in sorted(expect.items())
    ]  # fmt: skip
    # Hourly: buckets keyed by (local hour, offset), the oracle of a repeated hour.
    day = (datetime(2026, 10, 25, tzinfo=BERLIN), datetime(2026, 10, 26, tzinfo=BERLIN))
    per: dict[tuple[str, Any], int] = defaultdict(int)
    for r in select(rows, *day):
        local = datetime.fromtimestamp(epoch(r), BERLIN)
        per[(local.strftime("%Y-%m-%d %H:00:00"), local.utcoffset())] += r["count"]
    ordered = sorted(per.items(), key=lambda it: (it[0][0], -it[0][1].total_seconds()))
    got = await api.get("/analytics/requests", **q(*day, tz="Europe/Berlin", interval="1h"))
    assert [(d["bucket"], int(d["total_count"])) for d in got["data"]] == [(k[0], n) for k, n in ordered]
    assert [d["bucket"] for d in got["data"]].count("2026-10-25 02:00:00") == 2


async def test_ties_in_every_ranking(api: Api) -> None:
    # Day 1, domains: equal counts broken by bytes, equal bytes broken by count, then name.
    domain_rows = [
        {"ts": "2026-03-15 10:00:00", "domain": "c.com", "count": 5, "bytes_sent": 300},
        {"ts": "2026-03-15 10:00:00", "domain": "b.com", "count": 5, "bytes_sent": 700},
        {"ts": "2026-03-15 10:00:00", "domain": "a.com", "count": 5, "bytes_sent": 300},
        {"ts": "2026-03-15 10:00:00", "domain": "d.com", "count": 9, "bytes_sent": 300},
    ]
    # Day 2, errors: E1 and E2 tie at 10 errors (then by text); E1's samples tie at 3.
    error_rows = [
        {"ts": "2026-03-16 11:00:00", "domain": "z.com", "error": "E2", "count": 10, "error_count": 10},
        {"ts": "2026-03-16 11:00:00", "domain": "y.com", "error": "E1", "count": 3, "error_count": 3},
        {"ts": "2026-03-16 11:00:00", "domain": "x.com", "error": "E1", "count": 3, "error_count": 3},
        {"ts": "2026-03-16 11:01:00", "domain": "w.com", "error": "E1", "count": 3, "error_count": 3},
        {"ts": "2026-03-16 11:02:00", "domain": "u.com", "error": "E1", "count": 1, "error_count": 1},
        {"ts": "2026-03-16 11:02:00", "domain": "v.com", "error": "E3", "count": 1, "error_count": 1},
    ]
    await api.ingest({"logs": domain_rows + error_rows})
    day1, day2 = {"from": "2026-03-15", "to": "2026-03-16"}, {"from": "2026-03-16", "to": "2026-03-17"}
    by_count = await api.get("/analytics/domains", **day1, sortBy="count")
    assert [d["domain"] for d in by_count["data"]] == ["d.com", "b.com", "a.com", "c.com"]
    by_bytes = await api.get("/analytics/domains", **day1)
    assert [d["domain"] for d in by_bytes["data"]] == ["b.com", "d.com", "a.com", "c.com"]
    errors = (await api.get("/analytics/errors", **day2))["data"]
    assert [(e["error"], e["total_errors"], e["sample_domains"]) for e in errors] == [
        ("E1", "10", ["w.com", "x.com", "y.com"]),
        ("E2", "10", ["z.com"]),
        ("E3", "1", ["v.com"]),
    ]
    # Websites: count desc, then name: d(9), a, b, c (5); page 2 of 2 per page is b, c.
    sites = await api.get("/analytics/websites", **day1, limit=2, page=2)
    assert ([d["domain"] for d in sites["data"]], sites["total"], sites["totalPages"]) == (["b.com", "c.com"], 4, 2)


async def test_default_limits_are_the_fonproxy_defaults(api: Api) -> None:
    rows = [{"ts": "2026-03-15 10:00:00", "domain": f"d{i:02d}.com", "error": f"E{i:02d}", "count": 100 - i,
             "error_count": 1 + i} for i in range(60)]  # fmt: skip
    await api.ingest({"logs": rows})
    day = {"from": "2026-03-15", "to": "2026-03-16"}
    domains = (await api.get("/analytics/domains", **day, sortBy="count"))["data"]
    assert [d["domain"] for d in domains] == [f"d{i:02d}.com" for i in range(30)]
    errors = (await api.get("/analytics/errors", **day))["data"]
    assert [e["error"] for e in errors] == [f"E{i:02d}" for i in range(59, 9, -1)]
    sites = await api.get("/analytics/websites", **day)
    assert (len(sites["data"]), sites["limit"], sites["total"], sites["totalPages"]) == (25, 25, 60, 3)
    assert len((await api.get("/analytics/domains", **day, limit=100))["data"]) == 60
