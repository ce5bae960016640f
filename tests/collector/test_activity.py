"""The Webshare-compatible API (/api/v2) against what the test itself ingested.

Every expectation is computed here from the records and rows the test sends (the
oracle): which records a filter selects, the order of the pages, the CSV cells, the
hourly sums. Error reasons are spelled out literally below, as the README's table lists
them, rather than read from the collector's table.
"""

from __future__ import annotations

import csv
import io
import random
import re
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent import errors as agent_errors
from agent.wire.batch import Activity, Batch, Row
from agent.wire.errorcodes import ERRORS, describe
from collector.app import STATE, create_app
from collector.model import ActivityQuery
from collector.storage import sqlite_activity
from collector.storage.sqlite import SQLiteStore
from tests.collector.conftest import ADMIN, AGENT, NOW, USER7, USER42, Api, Backend, make_config

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1_000_000
NOW_US = int(NOW) * US
DAY_US = 86400 * US
LA = ZoneInfo("America/Los_Angeles")
KOLKATA = ZoneInfo("Asia/Kolkata")
ACTIVITY = "/api/v2/proxy/activity/"
DOWNLOAD = "/api/v2/proxy/activity/download/"
TOKEN = "/api/v2/download_token/activity/"
STATS = "/api/v2/stats/"
AGGREGATE = "/api/v2/stats/aggregate/"
# Our code -> (error_reason, type, http_status), as the README's table has it.
REASONS = {
    "timeout": ("target_connect_timeout", "connection", 504),
    "auth_failed": ("client_connect_invalid_credentials", "configuration", 407),
    "forbidden_host": ("client_connect_forbidden_host", "configuration", 403),
    "other:ERR_X/1": ("other:ERR_X/1", "connection", 502),
}
ERROR_CHOICES = ["", "", "", "timeout", "auth_failed", "forbidden_host", "other:ERR_X/1"]
HOSTS = ["api.Example.com", "www.google.com", "cdn.webshare.io", None]
USERS = [42, 42, 7, 99]


def reason(code: str) -> str | None:
    return REASONS[code][0] if code else None


def record(tag: int, ts_us: int, rnd: random.Random) -> dict[str, Any]:
    """One activity record of the wire format; `proxy_port` = tag tells records apart."""
    host = rnd.choice(HOSTS)
    return {
        "ts_us": ts_us, "protocol": rnd.choice(["http", "socks"]), "duration_ms": rnd.randrange(10_000),
        "handshake_ms": rnd.choice([None, rnd.randrange(500)]), "tunnel_ms": rnd.choice([None, rnd.randrange(9000)]),
        "error": rnd.choice(ERROR_CHOICES), "auth_username": rnd.choice([None, "alice", "Bob-2"]),
        "proxy_address": rnd.choice([None, "192.168.5.1", "192.168.5.2"]),
        "client_address": f"10.1.{rnd.randrange(3)}.{rnd.randrange(250)}",
        "ip_address": rnd.choice([None, "93.184.216.34", "142.250.1.1"]), "hostname": host,
        "domain": None if host is None else ".".join(host.lower().split(".")[-2:]),
        "port": rnd.choice([None, 80, 443]), "proxy_port": tag, "listen_address": "192.168.5.24",
        "listen_port": rnd.choice([None, 6455, 8080]), "user_id": rnd.choice(USERS), "order_id": rnd.choice([1, 2]),
        "worker": rnd.choice(["w1", "w2"]), "bytes_sent": rnd.randrange(5000), "bytes_received": rnd.randrange(50_000),
    }  # fmt: skip


def tied_records(n: int = 3000, seed: int = 5) -> list[dict[str, Any]]:
    """n records on only 60 distinct timestamps in the last 3 days: ~50 share each one."""
    rnd = random.Random(seed)
    stamps = [NOW_US - rnd.randrange(1, 3 * 86400) * US - rnd.choice([0, 123_456]) for _ in range(60)]
    return [record(i, rnd.choice(stamps), rnd) for i in range(n)]


RECORDS = tied_records()


async def ingest_activity(api: Api, records: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None) -> None:
    for n in range(0, max(len(records), 1), 1000):
        body: dict[str, Any] = {"logs": rows if n == 0 and rows else [], "activity": records[n : n + 1000]}
        await api.ingest(body, key=f"activity-{n}")


def token_auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


async def v2(api: Api, path: str, *, token: str | None = ADMIN, expect: int = 200, method: str = "GET",
             **query: Any) -> Any:  # fmt: skip
    headers = token_auth(token) if token else {}
    resp = await api.client.request(method, path, params={k: str(v) for k, v in query.items()}, headers=headers)
    text = await resp.text()
    assert resp.status == expect, text
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    return await resp.json()


def epoch_us(text: str) -> int:
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1)


async def walk(api: Api, token: str = ADMIN, **query: Any) -> tuple[list[dict[str, Any]], list[int]]:
    """Every result of every page, following `next` (a full URL) to the end; the counts seen."""
    doc = await v2(api, ACTIVITY, token=token, **query)
    results, counts = [], []
    while True:
        assert set(doc) == {"count", "next", "previous", "results"} and doc["previous"] is None
        results += doc["results"]
        counts.append(doc["count"])
        if doc["next"] is None:
            return results, counts
        assert doc["next"].startswith("http://127.0.0.1:"), doc["next"]
        resp = await api.client.session.get(doc["next"], headers=token_auth(token))
        assert resp.status == 200, await resp.text()
        doc = await resp.json()


def matches(r: dict[str, Any], *, user: int | None = None, order: int | None = None, search: str | None = None,
            error: str | None = None, bmin: int | None = None, bmax: int | None = None,
            gte: int = NOW_US - 6 * DAY_US, lte: int = NOW_US) -> bool:  # fmt: skip
    """The filter of the list endpoint, written out from the README's rules."""
    if not gte <= r["ts_us"] <= lte:
        return False
    if user is not None and r["user_id"] != user or order is not None and r["order_id"] != order:
        return False
    if search is not None:
        fields = [r["hostname"], r["domain"], r["ip_address"], r["client_address"], r["auth_username"], reason(r["error"])]
        if not any(f is not None and search.lower() in f.lower() for f in fields):
            return False
    if error == "*" and not r["error"] or error not in (None, "*") and reason(r["error"]) != error:
        return False
    size = r["bytes_sent"] + r["bytes_received"]
    return (bmin is None or size >= bmin) and (bmax is None or size <= bmax)


def check_walk(results: list[dict[str, Any]], counts: list[int], expected: list[dict[str, Any]]) -> None:
    tags = [r["proxy_port"] for r in results]
    assert len(tags) == len(set(tags)), "a record was repeated"
    assert sorted(tags) == sorted(r["proxy_port"] for r in expected), "a record was skipped or foreign"
    stamps = [epoch_us(r["timestamp"]) for r in results]
    assert stamps == sorted((r["ts_us"] for r in expected), reverse=True), "not newest first"
    assert set(counts) <= {len(expected)}


async def test_paging_returns_every_record_once_in_order_across_ties(api: Api) -> None:
    await ingest_activity(api, RECORDS)
    results, counts = await walk(api, page_size=100)
    assert len(counts) == 30  # 3000 records, ~50 per timestamp: most pages end inside a tie
    check_walk(results, counts, RECORDS)
    # A user token sees only its own user, with Webshare's Token scheme, in pages of 7.
    results, counts = await walk(api, token=USER42, page_size=7)
    check_walk(results, counts, [r for r in RECORDS if r["user_id"] == 42])
    # Webshare's own cursor, a result's timestamp: the records older than it.
    doc = await v2(api, ACTIVITY, page_size=100)
    middle = doc["results"][60]["timestamp"]
    results, counts = await walk(api, page_size=100, starting_after=middle)
    check_walk(results, [], [r for r in RECORDS if r["ts_us"] < epoch_us(middle)])
    assert set(counts) == {len(RECORDS)}  # count is of the filters; the cursor only moves through them


FILTERS: list[dict[str, Any]] = [
    {"search": "EXAMPLE"}, {"search": "10.1.2."}, {"search": "alice"}, {"search": "bob"},
    {"search": "connect_timeout"}, {"search": "err_x"}, {"search": "client_connect"}, {"search": "webshare.io"},
    {"error_reason": "*"}, {"error_reason": "target_connect_timeout"}, {"error_reason": "other:ERR_X/1"},
    {"error_reason": "client_connect_invalid_credentials"}, {"error_reason": "timeout"}, {"error_reason": "nope"},
    {"bytes__gte": 20000}, {"bytes__lte": 9000}, {"bytes__gte": 10000, "bytes__lte": 30000},
    {"plan_id": 2, "error_reason": "*", "search": "google"},
    {"timestamp__gte": "2026-03-30T00:00:00Z", "timestamp__lte": "2026-03-31T12:00:00.5Z"},
    {"timestamp__gte": "2026-03-30 17:00:00", "tz": "America/Los_Angeles", "bytes__gte": 100},
]  # fmt: skip
_ORACLE_KEYS = {"search": "search", "error_reason": "error", "bytes__gte": "bmin", "bytes__lte": "bmax",
                "plan_id": "order"}  # fmt: skip


def _oracle(query: dict[str, Any]) -> dict[str, Any]:
    out = {_ORACLE_KEYS[k]: v for k, v in query.items() if k in _ORACLE_KEYS}
    tz = ZoneInfo(query.get("tz", "UTC"))
    for name in ("gte", "lte"):
        raw = query.get(f"timestamp__{name}")
        if raw is not None:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            out[name] = epoch_us((moment if moment.tzinfo else moment.replace(tzinfo=tz)).isoformat())
    return out


async def test_filters_select_what_the_rules_say(api: Api) -> None:
    await ingest_activity(api, RECORDS)
    for query in FILTERS:
        results, counts = await walk(api, page_size=100, **query)
        expected = [r for r in RECORDS if matches(r, **_oracle(query))]
        check_walk(results, counts, expected)
        assert expected or query["error_reason"] in ("timeout", "nope"), query  # the filters select something
    # A user token's filters stay inside its user.
    results, counts = await walk(api, token=USER7, page_size=100, error_reason="*")
    check_walk(results, counts, [r for r in RECORDS if matches(r, user=7, error="*")])


async def test_an_activity_object_is_webshares_field_for_field(api: Api) -> None:
    ts = epoch_us("2026-03-30T22:29:42.517523+00:00")
    rec = {"ts_us": ts, "protocol": "http", "duration_ms": 500, "handshake_ms": 300, "tunnel_ms": None,
           "error": "forbidden_host", "auth_username": None, "proxy_address": "192.168.5.1", "client_address": "10.1.0.1",
           "ip_address": "10.1.0.2", "hostname": "ipv4.webshare.io", "domain": "webshare.io", "port": 443,
           "proxy_port": None, "listen_address": "192.168.5.24", "listen_port": 6455, "user_id": 42, "order_id": 3,
           "worker": "w1", "bytes_sent": 700, "bytes_received": 11}  # fmt: skip
    fine = rec | {"ts_us": 0 + ts - 5 * US, "error": "", "handshake_ms": None, "auth_username": "bob"}
    await ingest_activity(api, [rec, fine])
    doc = await v2(api, ACTIVITY, tz="America/Los_Angeles")
    assert doc["count"] == 2 and doc["next"] is None
    assert doc["results"][0] == {
        "timestamp": "2026-03-30T15:29:42.517523-07:00", "protocol": "http", "request_duration": 0.5,
        "handshake_duration": 0.3, "tunnel_duration": None, "error_reason": "client_connect_forbidden_host",
        "error_reason_how_to_fix": ERRORS["forbidden_host"].how_to_fix, "auth_username": None,
        "proxy_address": "192.168.5.1", "bytes": 711, "client_address": "10.1.0.1", "ip_address": "10.1.0.2",
        "hostname": "ipv4.webshare.io", "domain": "webshare.io", "port": 443, "proxy_port": None,
        "listen_address": "192.168.5.24", "listen_port": 6455,
    }  # fmt: skip
    seed_order = ["timestamp", "protocol", "request_duration", "handshake_duration", "tunnel_duration", "error_reason",
                  "error_reason_how_to_fix", "auth_username", "proxy_address", "bytes", "client_address",
                  "ip_address", "hostname", "domain", "port", "proxy_port", "listen_address", "listen_port"]  # fmt: skip
    assert list(doc["results"][0]) == seed_order
    second = doc["results"][1]
    assert (second["timestamp"], second["error_reason"], second["error_reason_how_to_fix"]) == (
        "2026-03-30T15:29:37.517523-07:00", None, None)
    # UTC by default, with its offset; whole seconds keep their six digits.
    doc = await v2(api, ACTIVITY, timestamp__gte="2026-03-30T22:29:42.517523Z")
    assert [r["timestamp"] for r in doc["results"]] == ["2026-03-30T22:29:42.517523+00:00"]
    assert ERRORS["forbidden_host"].how_to_fix  # the text exists (agent's error table)


def csv_cells(r: dict[str, Any]) -> list[str]:
    """A list result as the CSV's row: the README's columns, None for a missing value."""
    def cell(v: Any) -> str:
        return "None" if v is None else str(v)

    return [r["timestamp"].replace("T", " "), cell(r["hostname"]), cell(r["port"]), str(r["bytes"]),
            str(r["request_duration"]), cell(r["proxy_address"]), r["client_address"], cell(r["error_reason"]),
            r["protocol"]]  # fmt: skip


async def test_csv_download_streams_the_same_records_as_the_list(make_api: Callable[..., Any]) -> None:
    api = await make_api(extra="[query]\nactivity_chunk_rows = 64")
    rnd = random.Random(11)
    # 89 days of records, also many on one instant, across the Los Angeles DST change.
    stamps = [NOW_US - rnd.randrange(1, 89 * 86400) * US - rnd.randrange(US) for _ in range(1500)]
    records = [record(i, rnd.choice(stamps) if i % 3 else stamps[0], rnd) for i in range(2500)]
    await ingest_activity(api, records)
    window = {"timestamp__gte": "2026-01-02T00:00:00Z", "tz": "America/Los_Angeles"}
    listed, _ = await walk(api, page_size=100, **window)
    check_walk(listed, [len(listed)], [r for r in records if r["ts_us"] >= epoch_us("2026-01-02T00:00:00+00:00")])
    resp = await api.client.get(DOWNLOAD, params=window, headers=token_auth(ADMIN))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in resp.headers
    rows = list(csv.reader(io.StringIO((await resp.read()).decode())))
    assert rows[0] == ["Time", "Hostname", "Destination Port", "Bytes", "Duration", "Proxy", "Your IP Address",
                       "Error Reason", "Protocol"]  # fmt: skip
    assert rows[1:] == [csv_cells(r) for r in listed]
    assert any(r[0].endswith("-08:00") for r in rows[1:]) and any(r[0].endswith("-07:00") for r in rows[1:])
    # The same filters apply; a user's download token gets that user's records only.
    tok = await v2(api, TOKEN, token=USER42)
    query = window | {"error_reason": "*", "download_token": tok["key"]}
    resp = await api.client.get(DOWNLOAD, params=query)
    assert resp.status == 200, await resp.text()
    rows = list(csv.reader(io.StringIO((await resp.read()).decode())))
    listed, _ = await walk(api, token=USER42, page_size=100, error_reason="*", **window)
    assert rows[1:] == [csv_cells(r) for r in listed] and len(listed) > 100


async def test_the_store_streams_in_bounded_chunks(backend: Backend, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = backend.make(cfg)
    await store.open()
    try:
        recs = [Activity(**r) for r in RECORDS]
        assert await store.ingest(Batch(activity=recs), "k", int(NOW))
        assert not await store.ingest(Batch(activity=recs), "k", int(NOW))  # a resent batch appends nothing
        q = ActivityQuery(start_us=0, end_us=NOW_US, user_id=42, limit=64)
        chunks = [c async for c in store.activity_stream(q)]
        mine = [r for r in recs if r.user_id == 42]
        assert all(0 < len(c) <= 64 for c in chunks) and len(chunks) == -(-len(mine) // 64)
        got = [rec for c in chunks for _id, rec in c]
        assert sorted(got, key=lambda r: r.proxy_port or 0) == sorted(mine, key=lambda r: r.proxy_port or 0)
        ids = [i for c in chunks for i, _rec in c]
        assert len(set(ids)) == len(ids)
        keys = [(rec.ts_us, i) for c in chunks for i, rec in c]
        assert keys == sorted(keys, reverse=True)
        page = await store.activity_page(q)
        assert page.count == len(mine) and page.items == chunks[0]
    finally:
        await store.close()


async def test_activity_retention_is_its_own(backend: Backend, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, storage="activity_retention_days = 2")
    store = backend.make(cfg)
    await store.open()
    try:
        rnd = random.Random(3)
        old = Activity(**record(1, NOW_US - 3 * DAY_US, rnd))
        new = Activity(**record(2, NOW_US - DAY_US, rnd))
        row = Row(ts=int(NOW) - 3 * 86400, domain="a.com", count=1)
        assert await store.ingest(Batch(rows=[row], activity=[old, new]), "k", int(NOW))
        deleted = await store.retention(int(NOW))
        assert deleted["activity"] == 1 and deleted["m"] == 0  # rows are kept 90 days
        page = await store.activity_page(ActivityQuery(start_us=0, end_us=NOW_US))
        assert [r.proxy_port for _i, r in page.items] == [2] and page.count == 1
    finally:
        await store.close()


async def test_download_tokens_download_only_their_user_until_reset_or_expiry(make_api: Callable[..., Any]) -> None:
    clock = [NOW]
    api = await make_api(sub="db", clock=lambda: clock[0])
    await ingest_activity(api, RECORDS)
    first = await v2(api, TOKEN, token=USER42)
    assert set(first) == {"id", "key", "scope", "expire_at"} and first["scope"] == "activity"
    assert first["expire_at"] == "2026-04-08T00:00:00.000000+00:00"  # 7 days (query.download_token_days)
    assert await v2(api, TOKEN, token=USER42, method="POST") == first  # the same token until reset
    assert (await v2(api, TOKEN, token=USER7))["key"] != first["key"]

    async def download(key: str, expect: int = 200, **query: Any) -> Any:
        resp = await api.client.get(DOWNLOAD, params={"download_token": key, **query})
        text = await resp.text()
        assert resp.status == expect, text
        return list(csv.reader(io.StringIO(text))) if expect == 200 else await resp.json()

    got = await download(first["key"])
    assert len(got) - 1 == sum(1 for r in RECORDS if matches(r, user=42))
    await download(first["key"], 403, user_id=7)  # only its own user
    # The key is no API token: it opens nothing else.
    await v2(api, ACTIVITY, token=first["key"], expect=401)
    await v2(api, TOKEN, token=first["key"], expect=401)
    # It survives a restart...
    await api.client.close()
    api = await make_api(sub="db", clock=lambda: clock[0])
    assert await v2(api, TOKEN, token=USER42) == first
    # ...stops working when reset...
    second = await v2(api, TOKEN + "reset/", token=USER42, method="POST")
    assert second["key"] != first["key"] and second["id"] != first["id"]
    assert await download(first["key"], 401) == {"detail": "invalid or expired download token"}
    assert len(await download(second["key"])) == len(got)
    # ...and when it expires.
    clock[0] = NOW + 7 * 86400 - 1
    await download(second["key"])
    clock[0] = NOW + 7 * 86400
    await download(second["key"], 401)
    third = await v2(api, TOKEN, token=USER42)
    assert third["key"] not in (first["key"], second["key"])
    # An admin's token downloads everyone, or one user_id.
    admin = await v2(api, TOKEN, token=ADMIN)
    clock[0] = NOW
    assert len(await download(admin["key"], user_id=7)) - 1 == sum(1 for r in RECORDS if matches(r, user=7))


# ---- stats ------------------------------------------------------------------------------

PROTOCOL_NAMES = {"HTTP": "http", "HTTPS": "http", "SOCKS": "socks"}


def stats_rows(seed: int = 9, n: int = 900) -> list[dict[str, Any]]:
    """Minute rows over 2026-03-28..2026-03-30 (UTC)."""
    rnd = random.Random(seed)
    start = datetime(2026, 3, 28, tzinfo=UTC)
    rows = []
    for _ in range(n):
        count = rnd.randrange(0, 40)
        err = rnd.choice(["", "", "timeout", "auth_failed", "other:ERR_X/1"])
        rows.append({
            "ts": (start + timedelta(minutes=rnd.randrange(3 * 24 * 60))).strftime("%Y-%m-%d %H:%M:%S"),
            "user_id": rnd.choice([7, 42]), "order_id": rnd.choice([1, 2]), "port": rnd.choice([80, 443]),
            "protocol": rnd.choice(["HTTP", "HTTPS", "SOCKS"]), "ip_out": rnd.choice(["", "1.1.1.1", "2.2.2.2", "3.3.3.3"]),
            "worker": rnd.choice(["w1", "w2"]), "domain": rnd.choice(["a.com", "b.org"]), "error": err if count else "",
            "count": count, "bytes_sent": rnd.randrange(10_000), "bytes_received": rnd.randrange(100_000),
            "error_count": rnd.randrange(0, count + 1) if err and count else 0, "conn_ms": rnd.randrange(60_000),
        })  # fmt: skip
    return rows


STATS_ROWS = stats_rows()


def minute_of(row: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(row["ts"]).replace(tzinfo=UTC).timestamp())


def expected_stats(rows: list[dict[str, Any]], seconds: float, tz: Any) -> dict[str, Any]:
    count = sum(r["count"] for r in rows)
    failed = sum(r["error_count"] for r in rows)
    total = sum(r["bytes_sent"] + r["bytes_received"] for r in rows)
    errors: dict[str, int] = {}
    for r in rows:
        if r["error_count"]:
            errors[r["error"]] = errors.get(r["error"], 0) + r["error_count"]
    protocols: dict[str, int] = {}
    for r in rows:
        if r["count"]:
            name = PROTOCOL_NAMES[r["protocol"]]
            protocols[name] = protocols.get(name, 0) + r["count"]
    last = max((minute_of(r) for r in rows if r["count"]), default=None)
    return {
        "bandwidth_total": total,
        "bandwidth_average": total // count if count else 0,
        "requests_total": count, "requests_successful": count - failed, "requests_failed": failed,
        "error_reasons": [
            {"reason": REASONS[e][0], "type": REASONS[e][1], "how_to_fix": describe(e).how_to_fix,
             "http_status": REASONS[e][2], "count": n}
            for e, n in sorted(errors.items(), key=lambda it: (-it[1], REASONS[it[0]][0]))
        ],
        "countries_used": {},
        "number_of_proxies_used": len({r["ip_out"] for r in rows if r["ip_out"]}),
        "protocols_used": dict(sorted(protocols.items())),
        "average_concurrency": pytest.approx(sum(r["conn_ms"] for r in rows) / (seconds * 1000), rel=1e-12),
        "average_rps": pytest.approx(count / seconds, rel=1e-12),
        "last_request_sent_at": None if last is None else datetime.fromtimestamp(last, tz).isoformat(timespec="microseconds"),
    }  # fmt: skip


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata"])
async def test_hourly_and_aggregate_stats_are_the_rows_sums_even_when_activity_is_sampled(api: Api, tz: str) -> None:
    rnd = random.Random(4)
    # Activity is a 1-in-10 sample with its own figures: the stats must not read it.
    sample = [record(i, minute_of(r) * US + 1000, rnd) for i, r in enumerate(STATS_ROWS) if i % 10 == 0]
    await ingest_activity(api, sample, STATS_ROWS)
    zone = ZoneInfo(tz)
    gte, lte = "2026-03-28T00:00:00Z", "2026-03-30T23:59:59.999999Z"
    lo, hi = epoch_us(gte.replace("Z", "+00:00")) // US, epoch_us(lte.replace("Z", "+00:00")) / US
    for token, user, plan in ((ADMIN, None, None), (USER42, 42, None), (ADMIN, 7, 2)):
        query: dict[str, Any] = {"timestamp__gte": gte, "timestamp__lte": lte, "tz": tz}
        if plan is not None:
            query |= {"plan_id": plan, "user_id": user}
        rows = [r for r in STATS_ROWS if (user is None or r["user_id"] == user) and (plan is None or r["order_id"] == plan)]
        hours = await v2(api, STATS, token=token, **query)
        # Every hour (in tz) between the one holding timestamp__gte and the one holding
        # __lte that holds rows: an hour without any has no stats object.
        offset = int(datetime.fromtimestamp(lo, zone).utcoffset().total_seconds())  # fixed-offset zones here
        first = (lo + offset) // 3600 * 3600 - offset
        starts = [s for s in range(first, int(hi) + 1, 3600) if any(s <= minute_of(r) < s + 3600 for r in rows)]
        assert [h["timestamp"] for h in hours] == [datetime.fromtimestamp(s, zone).isoformat(timespec="microseconds")
                                                    for s in starts]  # fmt: skip
        for h, s in zip(hours, starts):
            assert h.pop("is_projected") is False
            h.pop("timestamp")
            assert h == expected_stats([r for r in rows if s <= minute_of(r) < s + 3600], 3600, zone), s
        agg = await v2(api, AGGREGATE, token=token, **query)
        assert agg == expected_stats(rows, hi - lo, zone)
        assert agg["requests_total"] > 0 and agg["error_reasons"] and agg["number_of_proxies_used"] == 3


async def test_an_hour_without_rows_has_no_stats_object(api: Api) -> None:
    rows = [{"ts": "2026-03-29 10:05:00", "count": 4, "bytes_sent": 10, "bytes_received": 13},
            {"ts": "2026-03-29 12:59:00", "count": 1, "bytes_received": 7}]  # fmt: skip
    await api.ingest({"logs": rows})
    hours = await v2(api, STATS, timestamp__gte="2026-03-29T09:00:00Z", timestamp__lte="2026-03-29T13:59:59Z")
    assert [(h["timestamp"], h["requests_total"], h["bandwidth_total"], h["bandwidth_average"]) for h in hours] == [
        ("2026-03-29T10:00:00.000000+00:00", 4, 23, 5),
        ("2026-03-29T12:00:00.000000+00:00", 1, 7, 7),
    ]


async def test_bad_input_is_a_400_naming_the_parameter(api: Api) -> None:
    cases: list[tuple[str, dict[str, str], str]] = [
        (ACTIVITY, {"foo": "1"}, "foo"),
        (ACTIVITY, {"timestamp__gte": "yesterday"}, "timestamp__gte"),
        (ACTIVITY, {"timestamp__lte": "2026-13-01"}, "timestamp__lte"),
        (ACTIVITY, {"timestamp__gte": "2026-03-30", "timestamp__lte": "2026-03-29"}, "timestamp__gte"),
        (ACTIVITY, {"timestamp__gte": "2025-12-31T23:59:59Z"}, "timestamp__gte"),  # older than 90 days
        (ACTIVITY, {"timestamp__lte": "2025-01-01"}, "timestamp__lte"),
        (ACTIVITY, {"page_size": "0"}, "page_size"),
        (ACTIVITY, {"page_size": "101"}, "page_size"),
        (ACTIVITY, {"page_size": "ten"}, "page_size"),
        (ACTIVITY, {"starting_after": "nope"}, "starting_after"),
        (ACTIVITY, {"starting_after": "2026-03-30T00:00:00Z~x"}, "starting_after"),
        (ACTIVITY, {"starting_after": "2026-03-30T00:00:00Z~99999999999999999999"}, "starting_after"),
        (ACTIVITY, {"bytes__gte": "-1"}, "bytes__gte"),
        (ACTIVITY, {"bytes__lte": "1e3"}, "bytes__lte"),
        (ACTIVITY, {"plan_id": "x"}, "plan_id"),
        (ACTIVITY, {"user_id": "-3"}, "user_id"),
        (ACTIVITY, {"tz": "Mars/Olympus"}, "tz"),
        (ACTIVITY, {"search": "x" * 256}, "search"),
        (DOWNLOAD, {"page_size": "5"}, "page_size"),
        (DOWNLOAD, {"timestamp__gte": "x"}, "timestamp__gte"),
        (STATS, {"search": "a"}, "search"),
        (STATS, {"timestamp__gte": "2026-03-31T00:00:00-01:00", "timestamp__lte": "2026-03-31T00:59:59Z"}, "timestamp__gte"),
        (AGGREGATE, {"timestamp__lte": "9999-12-31T23:59:59"}, "timestamp__lte"),
        (TOKEN, {"page_size": "1"}, "page_size"),
    ]  # fmt: skip
    for path, query, name in cases:
        body = await v2(api, path, expect=400, **query)
        assert list(body) == [name] and len(body[name]) == 1 and isinstance(body[name][0], str), (path, query, body)
    body = await v2(api, TOKEN + "reset/", method="POST", expect=400, user_id="x")
    assert list(body) == ["user_id"]
    # Every other error is {"detail": ...}, under /api/v2 only.
    for path, token, query, status in (
        (ACTIVITY, None, {}, 401), (STATS, AGENT, {}, 403), (AGGREGATE, USER42, {"user_id": "7"}, 403),
        (TOKEN, "not-a-token", {}, 401), (DOWNLOAD, None, {"download_token": "pm_unknown"}, 401),
        ("/api/v2/nope/", ADMIN, {}, 404),
    ):  # fmt: skip
        body = await v2(api, path, token=token, expect=status, **query)
        assert list(body) == ["detail"] and isinstance(body["detail"], str), (path, body)
    body = await v2(api, ACTIVITY, method="DELETE", expect=405)
    assert list(body) == ["detail"]


async def test_both_auth_schemes_work_everywhere(api: Api) -> None:
    day = {"from": "2026-03-15", "to": "2026-03-16"}
    for scheme in ("Bearer", "Token", "token"):
        headers = {"Authorization": f"{scheme} {ADMIN}"}
        for path, query in (("/analytics/traffic", day), (ACTIVITY, {}), (STATS, {}), (AGGREGATE, {}), (TOKEN, {})):
            resp = await api.client.get(path, params=query, headers=headers)
            assert resp.status == 200, (scheme, path, await resp.text())
    resp = await api.client.get(ACTIVITY, headers={"Authorization": f"Basic {ADMIN}"})
    assert resp.status == 401


NASTY = ["", " ", "\x00", "9" * 30, "-1", "+", "%", "~", "~1", "*", "2026-02-30", "2026-03-01T25:00:00",
         "2026-03-30T00:00:00Z~", "2026-03-30T00:00:00Z~-1", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
         "٣", "x" * 5000, "%ED%A0%80", "\ud800", "../../etc", "Europe/../../x", "1e9", "0x10", "NaN"]  # fmt: skip


async def test_no_parameter_value_makes_a_500(api: Api) -> None:
    await ingest_activity(api, RECORDS[:50])
    endpoints = [(ACTIVITY, "GET"), (DOWNLOAD, "GET"), (STATS, "GET"), (AGGREGATE, "GET"), (TOKEN, "GET"),
                 (TOKEN + "reset/", "POST")]  # fmt: skip
    names = ["timestamp__gte", "timestamp__lte", "plan_id", "user_id", "tz", "search", "error_reason", "bytes__gte",
             "bytes__lte", "starting_after", "page_size", "download_token", "\ud800", "x" * 300]  # fmt: skip
    for path, method in endpoints:
        for name in names:
            for value in NASTY:
                resp = await api.client.request(method, path, params={name: value}, headers=token_auth(ADMIN))
                text = await resp.text()
                assert resp.status in (200, 400, 401), (path, name, value, resp.status, text)
                if resp.status != 200:
                    body = await resp.json()
                    assert list(body) in ([name[:64]], ["detail"]) or resp.status == 400, (path, name, value, body)


async def test_a_rejected_body_stores_none_of_its_activity(api: Api) -> None:
    before = api.snapshot()
    body = {"logs": [{"ts": "2026-03-30 10:00:00", "count": -1}], "activity": RECORDS[:10]}
    await api.ingest(body, key="bad", expect=400)
    bad_record = {"logs": [], "activity": RECORDS[:10] + [RECORDS[10] | {"port": 70000}]}
    got = await api.ingest(bad_record, key="bad", expect=400)
    assert got["error"]["field"] == "activity[10].port"
    assert api.snapshot() == before
    await api.ingest({"logs": [], "activity": RECORDS[:10]}, key="good")
    await api.ingest({"logs": [], "activity": RECORDS[:10]}, key="good")  # a resent batch
    assert (await v2(api, ACTIVITY))["count"] == 10
    metrics = await (await api.client.get("/metrics")).text()
    assert "proxymeter_collector_activity_ingested_total 10\n" in metrics


def test_every_code_a_parser_produces_has_one_webshare_reason() -> None:
    parsers = Path(__file__).resolve().parents[2] / "agent" / "parsers"
    used = {name for f in parsers.glob("*.py") for name in re.findall(r"\bE\.([A-Z_]+)\b", f.read_text())}
    codes = {getattr(agent_errors, name) for name in used}
    assert codes == set(ERRORS) == set(REASONS) - {"other:ERR_X/1"} | {
        "dns_failure", "connection_refused", "upstream_error", "client_aborted", "invalid_request", "proxy_error"}
    reasons = [describe(c).error_reason for c in ERRORS]
    assert len(set(reasons)) == len(reasons)  # one-to-one: an error_reason filter finds exactly one code
    for code in (*ERRORS, agent_errors.unknown_error("TCP_X/503")):
        e = describe(code)
        assert e.type in ("configuration", "connection") and 400 <= e.http_status <= 599 and len(e.how_to_fix) > 20
    assert describe("other:TCP_X/503").error_reason == "other:TCP_X/503"
    for code, (why, kind, status) in REASONS.items():
        assert (describe(code).error_reason, describe(code).type, describe(code).http_status) == (why, kind, status)


def test_readme_error_reason_table_is_the_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("**Error reasons.**"):]
    rows = re.findall(r"^\| `([a-z_]+)` \| `([a-z_]+)` \| (\w+) \| (\d+) \|$", section, re.M)
    assert rows == [(e.code, e.reason, e.type, str(e.http_status)) for e in ERRORS.values()]


async def test_hourly_stats_follow_local_hours_across_a_dst_change(api: Api) -> None:
    # Los Angeles skips 02:00-03:00 local on 2026-03-08 (10:00 UTC).
    base = int(datetime(2026, 3, 8, 8, 0, tzinfo=UTC).timestamp())
    rows = [{"ts": datetime.fromtimestamp(base + m * 60, UTC).strftime("%Y-%m-%d %H:%M:%S"), "count": 1 + m % 7,
             "conn_ms": 1000 * m} for m in range(0, 5 * 60, 13)]  # fmt: skip
    await api.ingest({"logs": rows})
    hours = await v2(api, STATS, timestamp__gte="2026-03-08T00:00:00-08:00", timestamp__lte="2026-03-08T05:59:59-07:00",
                     tz="America/Los_Angeles")  # fmt: skip
    labels = [datetime.fromtimestamp(minute_of(r), LA).strftime("%Y-%m-%dT%H:00:00.000000%z") for r in rows]
    expected: dict[str, list[dict[str, Any]]] = {}
    for label, r in zip(labels, rows):
        expected.setdefault(label[:-2] + ":" + label[-2:], []).append(r)
    assert [h["timestamp"] for h in hours] == [
        "2026-03-08T00:00:00.000000-08:00", "2026-03-08T01:00:00.000000-08:00", "2026-03-08T03:00:00.000000-07:00",
        "2026-03-08T04:00:00.000000-07:00", "2026-03-08T05:00:00.000000-07:00"]  # fmt: skip
    for h in hours:
        got = expected.get(h["timestamp"], [])
        assert h["requests_total"] == sum(r["count"] for r in got), h["timestamp"]
        assert h["average_concurrency"] == pytest.approx(sum(r["conn_ms"] for r in got) / 3_600_000, rel=1e-12)


async def test_a_client_leaving_a_download_leaves_the_collector_well(make_api: Callable[..., Any]) -> None:
    api = await make_api(extra="[query]\nactivity_chunk_rows = 16")
    await ingest_activity(api, RECORDS)
    resp = await api.client.get(DOWNLOAD, headers=token_auth(ADMIN))
    assert resp.status == 200
    assert len(await resp.content.read(200)) > 0
    resp.close()  # gone mid-stream
    resp = await api.client.get(DOWNLOAD, headers=token_auth(ADMIN))
    assert len((await resp.text()).splitlines()) == 1 + len(RECORDS)
    assert (await api.client.get("/healthz")).status == 200
    assert (await api.client.head(DOWNLOAD, headers=token_auth(ADMIN))).status == 405


async def test_sqlite_reads_a_late_chunk_as_cheaply_as_the_first(tmp_path: Path) -> None:
    # SQLite's own instruction count (deterministic, not a timing): a page deep inside
    # a stream must start at its cursor, not re-skip what came before it.
    store = SQLiteStore(tmp_path / "a.db")
    await store.open()
    try:
        recs = [Activity(**r) for r in RECORDS]
        assert await store.ingest(Batch(activity=recs * 4), "k", int(NOW))
    finally:
        await store.close()
    con = sqlite3.connect(tmp_path / "a.db")
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    q = ActivityQuery(start_us=0, end_us=NOW_US, limit=50)
    stop_id, stop = sqlite_activity.chunk(con, replace(q, limit=11_000))[-1]  # 11,000 records in
    con.set_progress_handler(tick, 100)
    first = sqlite_activity.chunk(con, q)
    cost_first, steps[0] = steps[0], 0
    deep = sqlite_activity.chunk(con, replace(q, after=(stop.ts_us, stop_id)))
    assert len(first) == 50 and len(deep) == 50
    assert steps[0] <= 2 * cost_first, (steps[0], cost_first)
    con.close()


def test_a_reload_applies_query_limits_but_not_the_storage_ones(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path))
    state = app[STATE]
    state.apply_config(make_config(tmp_path, extra="[query]\nactivity_max_page_size = 7",
                                   storage="activity_retention_days = 3"))  # fmt: skip
    assert (state.limits.activity_max_page_size, state.limits.activity_retention_days) == (7, 90)
