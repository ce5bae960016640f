"""POST /analytics/ingest: the FonProxy body, idempotency, limits and every error path."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import msgpack
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agent.wire import histogram
from collector.app import errors_middleware
from tests.collector.conftest import ADMIN, AGENT, USER42, Api, auth

FONPROXY_BODY = """{
  "logs": [
    {
      "ts": "2026-03-15 10:15:00",
      "user_id": 1,
      "order_id": 3,
      "port": 443,
      "protocol": "HTTPS",
      "ip_out": "185.199.100.10",
      "ip_from": "78.100.50.12",
      "peer_id": "peer-001",
      "worker": "worker-01",
      "domain": "google.com",
      "error": "",
      "count": 12,
      "bytes_sent": 10240,
      "bytes_received": 524800,
      "error_count": 0,
      "duration_ms": 15000,
      "max_concurrency": 5
    }
  ]
}"""

DAY = {"from": "2026-03-15T00:00:00Z", "to": "2026-03-16T00:00:00Z"}


def row(ts: str, **fields: object) -> dict[str, object]:
    return {"ts": ts, **fields}


async def test_fonproxy_example_body_is_accepted_verbatim(api: Api) -> None:
    resp = await api.client.post(
        "/analytics/ingest",
        data=FONPROXY_BODY.encode(),
        headers=auth(AGENT) | {"Content-Type": "application/json"},
    )
    assert resp.status == 204
    assert await resp.read() == b""
    traffic = await api.get("/analytics/traffic", **DAY, interval="1h")
    assert traffic == {
        "data": [
            {
                "bucket": "2026-03-15 10:00:00",
                "total_bytes_sent": "10240",
                "total_bytes_received": "524800",
                "bytes_total": str(10240 + 524800),
                "total_count": "12",
            }
        ]
    }
    domains = await api.get("/analytics/domains", **DAY)
    assert domains == {
        "data": [
            {
                "domain": "google.com",
                "total_count": "12",
                "bytes_total": "535040",
                "total_bytes_sent": "10240",
                "total_bytes_received": "524800",
                "total_errors": "0",
            }
        ]
    }
    # Every other endpoint answers from the same row (its values copied from the doc).
    hour = DAY | {"interval": "1h"}
    assert (await api.get("/analytics/requests", **hour))["data"] == [
        {"bucket": "2026-03-15 10:00:00", "total_count": "12", "total_errors": "0"}
    ]
    assert (await api.get("/analytics/concurrency", **hour))["data"] == [
        {"bucket": "2026-03-15 10:00:00", "max_concurrency": "5", "total_count": "12", "avg_concurrency": "0.000"}
    ]
    assert (await api.get("/analytics/latency", **hour))["data"] == [
        {"bucket": "2026-03-15 10:00:00", "p50": None, "p95": None, "p99": None, "max": "0", "samples": "0",
         "total_count": "12"}
    ]  # fmt: skip
    assert await api.get("/analytics/errors", **DAY) == {"data": []}  # its error is ""
    assert await api.get("/analytics/websites", **DAY) == {
        "data": [{"domain": "google.com", "total_count": "12", "bytes_total": "535040",
                  "first_visit": "2026-03-15 10:15:00", "last_visit": "2026-03-15 10:15:00"}],
        "page": 1, "limit": 25, "total": 1, "totalPages": 1,
    }  # fmt: skip
    # The row's user (1) and order (3) filter it; other ids see nothing.
    assert len((await api.get("/analytics/traffic", **DAY, orderId=3, userId=1))["data"]) == 1
    assert (await api.get("/analytics/traffic", **DAY, orderId=4))["data"] == []


async def test_msgpack_body_equals_json_body(make_api) -> None:
    rows = [row("2026-03-15 10:15:00", domain="a.com", count=3, bytes_sent=7), row("2026-03-15 10:16:30", domain="b.com", count=1)]
    a = await make_api(sub="json")
    b = await make_api(sub="msgpack")
    await a.ingest({"logs": rows})
    resp = await b.client.post(
        "/analytics/ingest",
        data=msgpack.packb({"logs": rows}),
        headers=auth(AGENT) | {"Content-Type": "application/msgpack"},
    )
    assert resp.status == 204
    ra = await a.get("/analytics/traffic", **DAY, interval="1m")
    rb = await b.get("/analytics/traffic", **DAY, interval="1m")
    assert ra == rb
    assert [d["bucket"] for d in ra["data"]] == ["2026-03-15 10:15:00", "2026-03-15 10:16:00"]


async def test_same_idempotency_key_is_applied_once(api: Api) -> None:
    body = {"logs": [row("2026-03-15 10:00:00", domain="a.com", count=5, bytes_sent=100)]}
    await api.ingest(body, key="agent-1:1")
    await api.ingest(body, key="agent-1:1")  # a retry: 204, not applied again
    await api.ingest(body, key="agent-1:2")  # a new batch with equal content: applied
    data = (await api.get("/analytics/requests", **DAY, interval="1d"))["data"]
    assert data == [{"bucket": "2026-03-15 00:00:00", "total_count": "10", "total_errors": "0"}]
    metrics = await (await api.client.get("/metrics")).text()
    assert "proxymeter_collector_duplicate_batches_total 1\n" in metrics
    assert "proxymeter_collector_batches_ingested_total 2\n" in metrics


async def test_concurrent_ingests_from_several_clients_all_count(api: Api) -> None:
    # 8 agents x 5 batches, each batch 20 rows over 3 minutes and 4 domains.
    expected: dict[str, int] = {}
    bodies = []
    for agent in range(8):
        for seq in range(5):
            rows = []
            for n in range(20):
                domain = f"d{(agent + n) % 4}.com"
                count = 1 + (agent * 7 + seq * 3 + n) % 5
                rows.append(row(f"2026-03-15 10:0{n % 3}:00", domain=domain, count=count, worker=f"w{agent}"))
                expected[domain] = expected.get(domain, 0) + count
            bodies.append((agent, f"agent-{agent}:{seq}", {"logs": rows}))
    # One HTTP session (own connections) per agent, even agents sending msgpack; each
    # batch is sent twice concurrently as well: retries racing their originals.
    sessions = [aiohttp.ClientSession() for _ in range(8)]

    async def send(agent: int, key: str, body: dict[str, object]) -> int:
        if agent % 2:
            data, ctype = json.dumps(body).encode(), "application/json"
        else:
            data, ctype = msgpack.packb(body), "application/msgpack"
        headers = auth(AGENT) | {"Content-Type": ctype, "Idempotency-Key": key}
        async with sessions[agent].post(api.client.make_url("/analytics/ingest"), data=data, headers=headers) as resp:
            return resp.status

    try:
        statuses = await asyncio.gather(*(send(*b) for b in bodies + bodies))
    finally:
        for session in sessions:
            await session.close()
    assert statuses == [204] * 80
    data = (await api.get("/analytics/domains", **DAY, sortBy="count", limit=100))["data"]
    assert {d["domain"]: int(d["total_count"]) for d in data} == expected
    metrics = await (await api.client.get("/metrics")).text()
    assert "proxymeter_collector_batches_ingested_total 40\n" in metrics
    assert "proxymeter_collector_duplicate_batches_total 40\n" in metrics


async def test_late_rows_merge_into_stored_minutes_and_rollups(api: Api) -> None:
    await api.ingest({"logs": [row("2026-03-15 10:15:00", domain="a.com", count=2, bytes_sent=10, max_concurrency=3, duration_max_ms=50)]})
    await api.ingest({"logs": [row("2026-03-15 10:30:00", domain="a.com", count=1, bytes_sent=1)]})
    # Late delta for the stored 10:15 minute: adds counters, max for the max fields.
    await api.ingest({"logs": [row("2026-03-15 10:15:40", domain="a.com", count=4, bytes_sent=5, max_concurrency=2, duration_max_ms=90)]})
    minute = (await api.get("/analytics/traffic", **DAY, interval="1m"))["data"]
    assert [(d["bucket"], d["total_count"], d["total_bytes_sent"]) for d in minute] == [
        ("2026-03-15 10:15:00", "6", "15"),
        ("2026-03-15 10:30:00", "1", "1"),
    ]
    # Whole-day query: read from the day rollup.
    day = (await api.get("/analytics/concurrency", **DAY, interval="1d"))["data"]
    assert day[0]["max_concurrency"] == "3" and day[0]["total_count"] == "7"
    hour = (await api.get("/analytics/latency", **DAY, interval="1h"))["data"]
    assert hour[0]["max"] == "90"


async def test_late_rows_merge_every_field_by_its_rule(api: Api) -> None:
    key = {"user_id": 5, "order_id": 2, "domain": "a.com", "error": "timeout", "worker": "w1"}
    first = row("2026-03-15 10:20:00", **key, count=3, bytes_sent=10, bytes_received=100, error_count=1,
                duration_ms=300, conn_ms=20_000, max_concurrency=4, duration_max_ms=200, latency=[[10, 2], [40, 1]])
    # Same minute and key, arriving later (a long tunnel ending): every counter adds, the
    # maxima take the larger, histograms add bucket by bucket.
    late = row("2026-03-15 10:20:59", **key, count=2, bytes_sent=5, bytes_received=50, error_count=2,
               duration_ms=700, conn_ms=40_000, max_concurrency=3, duration_max_ms=500, latency=[[40, 1], [60, 1]])
    # Earlier and later minutes of the same hour, after the hour was rolled up.
    earlier = row("2026-03-15 10:05:00", **key, count=1, error_count=1, latency=[[10, 1]])
    later = row("2026-03-15 10:50:00", **key, count=1, conn_ms=60_000)
    for body in (first, late, earlier, later):
        await api.ingest({"logs": [body]})
    minute = {"from": "2026-03-15T10:20:00Z", "to": "2026-03-15T10:21:00Z", "interval": "1m"}
    assert (await api.get("/analytics/traffic", **minute))["data"] == [
        {"bucket": "2026-03-15 10:20:00", "total_bytes_sent": "15", "total_bytes_received": "150",
         "bytes_total": "165", "total_count": "5"}
    ]  # fmt: skip
    assert (await api.get("/analytics/concurrency", **minute))["data"] == [
        {"bucket": "2026-03-15 10:20:00", "max_concurrency": "4", "total_count": "5", "avg_concurrency": "1.000"}
    ]
    lat = (await api.get("/analytics/latency", **minute))["data"][0]
    # 5 samples in buckets 10, 10, 40, 40, 60: the median is bucket 40's value.
    assert (lat["max"], lat["samples"], lat["p50"]) == ("500", "5", f"{histogram.bucket_value(40):.3f}")
    # Whole day (hour and day rollups): first/last seen are the earliest/latest minutes.
    errors = (await api.get("/analytics/errors", **DAY))["data"]
    assert errors == [{"error": "timeout", "total_errors": "4", "first_seen": "2026-03-15 10:05:00",
                       "last_seen": "2026-03-15 10:50:00", "sample_domains": ["a.com"]}]  # fmt: skip
    sites = (await api.get("/analytics/websites", **DAY))["data"]
    assert [(d["total_count"], d["first_visit"], d["last_visit"]) for d in sites] == [
        ("7", "2026-03-15 10:05:00", "2026-03-15 10:50:00")
    ]
    day = (await api.get("/analytics/concurrency", **DAY, interval="1d"))["data"]
    assert day == [{"bucket": "2026-03-15 00:00:00", "max_concurrency": "4", "total_count": "7",
                    "avg_concurrency": f"{120_000 / 86_400_000:.3f}"}]  # fmt: skip
    day_lat = (await api.get("/analytics/latency", **DAY, interval="1d"))["data"][0]
    assert (day_lat["samples"], day_lat["max"]) == ("6", "500")


BAD_BODIES = [
    ({"logs": [row("2026-03-15 10:00:00"), row("2026-03-15 10:00:00", bytes_sent=-1)]}, "logs[1].bytes_sent"),
    ({"logs": [row("2026-03-15 10:00:00"), row("2026-03-15 10:00:00"), row("2026-03-15 10:00:00"), row("x")]}, "logs[3].ts"),
    ({"logs": [{"user_id": 1}]}, "logs[0].ts"),
    ({"logs": [row("2026-03-15 10:00:00", colour="red")]}, "logs[0].colour"),
    ({"logs": [row("2026-03-15 10:00:00", domain=5)]}, "logs[0].domain"),
    ({"logs": [row("2026-03-15 10:00:00", latency=[[1, 2], [9999, 1]])]}, "logs[0].latency[1]"),
    ({"logs": [], "concurrency": [{"ts": "2026-03-15 10:00:00", "user_id": 1, "order_id": 1, "worker": "w", "active": [1] * 59}]}, "concurrency[0].active"),
    ({"rows": []}, "rows"),
    ({}, "logs"),
    # A lone surrogate cannot be stored as text (json.dumps writes it as "\\ud800").
    ({"logs": [row("2026-03-15 10:00:00"), row("2026-03-15 10:00:00", domain="x\ud800.com")]}, "logs[1].domain"),
    ({"logs": [], "concurrency": [{"ts": "2026-03-15 10:00:00", "user_id": 1, "order_id": 1, "worker": "\udfff", "active": [1] * 60}]}, "concurrency[0].worker"),
]
# Raw bodies: (bytes, Content-Type, field named or None).
BAD_RAW = [
    (b"{not json", "application/json", None),
    (b"\xc1", "application/msgpack", None),
    (b"{}", "text/csv", None),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", None),  # deeper than the parser's stack
    ('{"logs": [{"ts": "2026-03-15 10:00:00", "error": "\udcff"}]}'.encode("utf-8", "surrogatepass"), "application/json", "logs[0].error"),
]


async def test_bad_bodies_are_400_naming_the_field_and_store_nothing(api: Api) -> None:
    await api.ingest({"logs": [row("2026-03-15 09:00:00", domain="keep.com", count=1)]}, key="k0")
    # A query first: a store may move acknowledged rows between its tables in the
    # background (SQLite folds its staging table) until a query has seen them.
    await api.get("/analytics/traffic", **DAY)
    before = api.snapshot()
    for n, (body, field) in enumerate(BAD_BODIES):
        # A good first row followed by a bad one: nothing of the body may be stored.
        err = await api.ingest(body, key=f"bad-{n}", expect=400)
        assert err["error"]["code"] == "invalid_body"
        assert err["error"]["field"] == field, err
        assert isinstance(err["error"]["message"], str) and err["error"]["message"]
    for raw, ctype, field in BAD_RAW:
        resp = await api.client.post("/analytics/ingest", data=raw, headers=auth(AGENT) | {"Content-Type": ctype})
        assert resp.status == 400, await resp.text()
        err = (await resp.json())["error"]
        assert (err["code"], err["field"]) == ("invalid_body", field)
    too_long_key = {"logs": [row("2026-03-15 09:00:00", domain="keep.com", count=1)]}
    err = await api.ingest(too_long_key, key="k" * 201, expect=400)
    assert err["error"] == {"code": "invalid_header", "message": "Idempotency-Key must be 1..200 characters", "field": "Idempotency-Key"}
    assert api.snapshot() == before
    # A rejected body did not burn its idempotency key: the fixed body is applied.
    await api.ingest({"logs": [row("2026-03-15 09:00:00", domain="keep.com", count=2)]}, key="bad-0")
    data = (await api.get("/analytics/domains", **DAY))["data"]
    assert data[0]["total_count"] == "3"
    metrics = await (await api.client.get("/metrics")).text()
    assert f'proxymeter_collector_ingest_rejects_total{{reason="invalid_body"}} {len(BAD_BODIES) + len(BAD_RAW) + 1}\n' in metrics


async def test_a_valid_surrogate_pair_is_text(api: Api) -> None:
    # "\ud83d\ude00" in JSON is one character (U+1F600), not a lone surrogate.
    await api.ingest({"logs": [row("2026-03-15 10:00:00", domain="\U0001f600.example", count=2)]})
    data = (await api.get("/analytics/websites", **DAY))["data"]
    assert [(d["domain"], d["total_count"]) for d in data] == [("\U0001f600.example", "2")]


async def test_auth_paths(api: Api) -> None:
    body = json.dumps({"logs": [row("2026-03-15 10:00:00", domain="a.com", count=1)]}).encode()
    before = api.snapshot()
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Basic abc"}, 401),
        ({"Authorization": "Bearer "}, 401),
        (auth("wrong-token"), 401),
        (auth(ADMIN), 403),
        (auth(USER42), 403),
    ):
        resp = await api.client.post("/analytics/ingest", data=body, headers=headers | {"Content-Type": "application/json"})
        assert resp.status == status
        err = await resp.json()
        assert err["error"]["code"] == ("unauthorized" if status == 401 else "forbidden")
    assert api.snapshot() == before  # a refused token stores nothing
    metrics = await (await api.client.get("/metrics")).text()
    assert 'proxymeter_collector_ingest_rejects_total{reason="unauthorized"} 4\n' in metrics
    assert 'proxymeter_collector_ingest_rejects_total{reason="forbidden"} 2\n' in metrics
    resp = await api.client.post("/analytics/ingest", data=body, headers=auth(AGENT) | {"Content-Type": "application/json"})
    assert resp.status == 204
    for headers, status in (({}, 401), (auth("nope"), 401), (auth(AGENT), 403)):
        resp = await api.client.get("/analytics/traffic", params=DAY, headers=headers)
        assert resp.status == status
        assert (await resp.json())["error"]["code"] == ("unauthorized" if status == 401 else "forbidden")


async def test_body_over_limit_is_413_and_stores_nothing(make_api) -> None:
    api = await make_api(extra="max_body_bytes = 2000")
    await api.ingest({"logs": [row("2026-03-15 09:00:00", domain="keep.com", count=1)]})
    await api.get("/analytics/traffic", **DAY)  # folded first (see the test above)
    before = api.snapshot()
    big = {"logs": [row("2026-03-15 10:00:00", domain=f"d{i}.example.com", count=1) for i in range(60)]}
    data = json.dumps(big).encode()
    assert len(data) > 2000
    resp = await api.client.post("/analytics/ingest", data=data, headers=auth(AGENT) | {"Content-Type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"

    # Without a Content-Length (chunked), the limit holds while reading.
    async def chunks():
        for i in range(0, len(data), 500):
            yield data[i : i + 500]

    resp = await api.client.post("/analytics/ingest", data=chunks(), headers=auth(AGENT) | {"Content-Type": "application/json"})
    assert resp.status == 413
    assert api.snapshot() == before
    # The limit itself is allowed: a body of exactly 2000 bytes (padded with spaces).
    exact = json.dumps({"logs": [row("2026-03-15 11:00:00", domain="edge.com", count=1)]}).encode()
    exact += b" " * (2000 - len(exact))
    await api.ingest(exact)
    await api.ingest(exact + b" ", expect=413)
    metrics = await (await api.client.get("/metrics")).text()
    assert 'proxymeter_collector_ingest_rejects_total{reason="too_large"} 3\n' in metrics


async def test_too_many_rows_is_400(make_api) -> None:
    api = await make_api(extra="max_rows = 3")
    err = await api.ingest({"logs": [row("2026-03-15 10:00:00")] * 4}, expect=400)
    assert err["error"]["field"] == "logs" and "limit 3" in err["error"]["message"]


async def test_an_unexpected_failure_is_a_json_500() -> None:
    # The app's own middleware around a handler that fails the way a bug would: the
    # client still gets the documented error object, never aiohttp's text page.
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/broken", broken)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/broken")
        assert resp.status == 500
        assert resp.headers["Content-Type"].startswith("application/json")
        assert await resp.json() == {
            "error": {"code": "internal_error", "message": "internal error (see the collector's log)", "field": None}
        }


async def test_sums_past_int64_are_refused_or_saturate_never_turn_to_floats(api: Api) -> None:
    big = 2**53 - 1
    # 1,100 rows at the counter limit in one body: their day total passes 2**63-1
    rows = [{"ts": "2026-03-15 10:00:00", "domain": f"d{i}.com", "count": 1, "bytes_sent": big} for i in range(1100)]
    before = api.snapshot()
    err = await api.ingest({"logs": rows}, key="overflow", expect=400)
    assert err["error"] == {"code": "invalid_body", "field": "logs",
                            "message": "the rows of this body sum past 2**63-1 in one rollup"}
    assert api.snapshot() == before
    # Across bodies the stored sums saturate at 2**63-1 and stay integers.
    eight = [{"ts": "2026-03-15 10:00:00", "domain": "a.com", "count": 1, "bytes_sent": big}] * 8
    for n in range(129):  # 1,032 rows of 2**53-1: past 2**63-1 after the 1,024th
        await api.ingest({"logs": eight}, key=f"b{n}")
    data = (await api.get("/analytics/traffic", **{"from": "2026-03-15", "to": "2026-03-16", "interval": "1d"}))["data"]
    assert [(d["total_count"], d["total_bytes_sent"]) for d in data] == [("1032", str(2**63 - 1))]
    minute = (await api.get("/analytics/domains", **DAY))["data"]
    assert [(d["domain"], d["total_bytes_sent"]) for d in minute] == [("a.com", str(2**63 - 1))]
