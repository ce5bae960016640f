"""Real responses of every endpoint conform to the schemas of /openapi.json.

The schema checker below is deliberately tiny (no third-party validator): it supports
the subset the document uses: $ref, type, nullable, properties, required,
additionalProperties: false, items, minItems/maxItems, enum, pattern, minimum/maximum,
maxLength.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from collector.openapi import build_openapi
from tests.collector.conftest import ADMIN, AGENT, USER42, Api, auth

TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def check(doc: dict[str, Any], schema: dict[str, Any], value: Any, path: str = "$") -> None:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return check(doc, doc["components"]["schemas"][name], value, path)
    if value is None:
        assert schema.get("nullable"), f"{path}: null not allowed"
        return
    t = schema.get("type")
    if t == "integer":
        assert type(value) is int, f"{path}: expected integer, got {value!r}"
    elif t == "number":
        assert type(value) in (int, float), f"{path}: expected number"
    elif t is not None:
        assert isinstance(value, TYPES[t]) and type(value) is not bool or t == "boolean", f"{path}: expected {t}, got {value!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if "pattern" in schema:
        assert re.search(schema["pattern"], value), f"{path}: {value!r} !~ {schema['pattern']}"
    if "maxLength" in schema:
        assert len(value) <= schema["maxLength"], path
    if "minimum" in schema:
        assert value >= schema["minimum"], path
    if "maximum" in schema:
        assert value <= schema["maximum"], path
    if t == "object":
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            assert key in value, f"{path}: missing {key}"
        if schema.get("additionalProperties") is False:
            extra = set(value) - set(props)
            assert not extra, f"{path}: undocumented {sorted(extra)}"
        for key, sub in props.items():
            if key in value:
                check(doc, sub, value[key], f"{path}.{key}")
    if t == "array":
        assert len(value) >= schema.get("minItems", 0), path
        assert len(value) <= schema.get("maxItems", 1 << 30), path
        for i, item in enumerate(value):
            check(doc, schema.get("items", {}), item, f"{path}[{i}]")


def test_checker_rejects_what_it_should() -> None:
    doc = {"components": {"schemas": {"X": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^[0-9]+$"}},
                                            "required": ["a"], "additionalProperties": False}}}}
    ref = {"$ref": "#/components/schemas/X"}
    check(doc, ref, {"a": "12"})
    for bad in ({"a": 12}, {}, {"a": "1", "b": 2}, {"a": "x"}, None, [1]):
        try:
            check(doc, ref, bad)
        except AssertionError:
            continue
        raise AssertionError(f"accepted {bad!r}")


async def test_every_response_conforms(api: Api) -> None:
    doc = await api.get("/openapi.json")
    assert doc["openapi"].startswith("3.")
    documented = set(doc["paths"])
    routes = {r.resource.canonical for r in api.client.app.router.routes() if r.resource is not None}
    assert routes == documented

    profile = {"ts": "2026-03-15 10:00:00", "user_id": 42, "order_id": 1, "worker": "w1", "active": [2] * 60}
    rows = [
        {"ts": "2026-03-15 10:00:00", "user_id": 42, "order_id": 1, "domain": "a.com", "error": "timeout",
         "count": 3, "error_count": 1, "bytes_sent": 9, "conn_ms": 1000, "duration_max_ms": 40, "latency": [[30, 3]]},
        {"ts": "2026-03-15 11:00:00", "user_id": 7, "domain": "b.com", "count": 1},
    ]
    body = {"logs": rows, "concurrency": [profile]}
    check(doc, doc["components"]["schemas"]["IngestBody"], body)
    await api.ingest(body)

    async def conforms(method: str, path: str, status: int, token: str | None = ADMIN, **kw: Any) -> Any:
        headers = auth(token) if token else {}
        resp = await api.client.request(method, path, headers=headers | kw.pop("headers", {}), **kw)
        assert resp.status == status, await resp.text()
        spec = doc["paths"][path.split("?")[0]][method.lower()]["responses"][str(status)]
        if "content" not in spec:
            assert await resp.read() == b""
            return None
        ctype = resp.headers["Content-Type"].split(";")[0]
        assert ctype in spec["content"]
        if ctype != "application/json":
            return await resp.text()
        value = json.loads(await resp.text())
        check(doc, spec["content"][ctype]["schema"], value)
        return value

    day = {"from": "2026-03-15", "to": "2026-03-16"}
    for endpoint in ("traffic", "requests", "concurrency", "latency", "domains", "errors", "websites"):
        path = f"/analytics/{endpoint}"
        ok = await conforms("GET", path, 200, params=day)
        assert ok["data"], endpoint
        await conforms("GET", path, 200, token=USER42, params=day)
        await conforms("GET", path, 400, params={"from": "x", "to": "2026-03-16"})
        await conforms("GET", path, 401, token=None, params=day)
        await conforms("GET", path, 403, token=AGENT, params=day)
        await conforms("GET", path, 403, token=USER42, params=day | {"userId": "7"})
    ingest = "/analytics/ingest"
    ctype = {"Content-Type": "application/json"}
    await conforms("POST", ingest, 204, token=AGENT, data=json.dumps(body), headers=ctype)
    await conforms("POST", ingest, 400, token=AGENT, data=b'{"logs": [{"ts": 1}]}', headers=ctype)
    await conforms("POST", ingest, 401, token=None, data=b"{}", headers=ctype)
    await conforms("POST", ingest, 403, token=ADMIN, data=b"{}", headers=ctype)
    await conforms("POST", ingest, 413, token=AGENT, data=b" " * (16 * 1024 * 1024 + 1), headers=ctype)
    # Errors outside any documented path still carry the documented Error object.
    for method, path, status in (("GET", "/nope", 404), ("GET", ingest, 405), ("DELETE", "/analytics/traffic", 405)):
        resp = await api.client.request(method, path, headers=auth(ADMIN))
        assert resp.status == status
        check(doc, {"$ref": "#/components/schemas/Error"}, await resp.json())
    assert await conforms("GET", "/healthz", 200, token=None) == {"status": "ok"}
    metrics = await conforms("GET", "/metrics", 200, token=None)
    assert "# TYPE proxymeter_collector_query_seconds histogram" in metrics
    assert re.search(r'proxymeter_collector_query_seconds_count\{endpoint="traffic"\} 2\n', metrics)
    size = re.search(r"proxymeter_collector_store_size_bytes (\d+)", metrics)
    assert size and int(size.group(1)) > 0
    if api.backend.name == "sqlite":  # database + WAL (+ shm) files
        assert int(size.group(1)) == sum(
            p.stat().st_size for p in api.db.parent.iterdir() if p.name.startswith("collector.db")
        )
    assert "proxymeter_collector_rows_ingested_total 4\n" in metrics
    assert "proxymeter_collector_profiles_ingested_total 2\n" in metrics


# The example responses of the FonProxy Analytics API doc, verbatim (first item of each).
DOC_EXAMPLES = {
    "traffic": {"bucket": "2026-03-15 00:00:00", "total_bytes_sent": "1048576", "total_bytes_received": "52428800",
                "bytes_total": "53477376", "total_count": "1542"},
    "requests": {"bucket": "2026-03-15 00:00:00", "total_count": "1542", "total_errors": "23"},
    "concurrency": {"bucket": "2026-03-15 00:00:00", "max_concurrency": "48", "total_count": "1542"},
    "domains": {"domain": "google.com", "total_count": "5420", "bytes_total": "268435456", "total_bytes_sent": "5242880",
                "total_bytes_received": "263192576", "total_errors": "12"},
    "errors": {"error": "ECONNREFUSED", "total_errors": "142", "first_seen": "2026-02-01 08:15:00",
               "last_seen": "2026-03-19 22:45:00", "sample_domains": ["google.com", "facebook.com", "github.com"]},
    "websites": {"domain": "google.com", "total_count": "5420", "bytes_total": "268435456",
                 "first_visit": "2026-02-01 08:15:00", "last_visit": "2026-03-19 22:45:00"},
}
EXTENSIONS = {"concurrency": {"avg_concurrency"}}


def doc_example_rows() -> list[dict[str, Any]]:
    """Rows whose answers are exactly the doc's example items (the oracle: the sums below).

    orderId 1, 2026-03-15: 1542 requests, 23 errors, 1 MiB sent, 50 MiB received, peak 48.
    orderId 2, 2026-02-01..2026-03-20: 48 domains; google.com has 5420 requests and 256 MiB
    (5 MiB sent), 12 errors, all ECONNREFUSED, first at 02-01 08:15 and last at 03-19 22:45;
    ECONNREFUSED has 142 errors: google.com 12, facebook.com 11, github.com 10, the rest
    at most 8 per domain.
    """
    rows: list[dict[str, Any]] = [
        {"ts": "2026-03-15 10:15:00", "order_id": 1, "domain": "a.com", "error": "timeout", "count": 1000,
         "bytes_sent": 524288, "bytes_received": 26214400, "error_count": 20, "max_concurrency": 48},
        {"ts": "2026-03-15 13:40:00", "order_id": 1, "domain": "b.com", "error": "ECONNREFUSED", "count": 500,
         "bytes_sent": 262144, "bytes_received": 13107200, "error_count": 3, "max_concurrency": 30},
        {"ts": "2026-03-15 23:59:00", "order_id": 1, "domain": "a.com", "count": 42,
         "bytes_sent": 262144, "bytes_received": 13107200, "max_concurrency": 5},
        {"ts": "2026-02-01 08:15:00", "order_id": 2, "domain": "google.com", "error": "ECONNREFUSED", "count": 3000,
         "bytes_sent": 2621440, "bytes_received": 131596288, "error_count": 7},
        {"ts": "2026-03-19 22:45:00", "order_id": 2, "domain": "google.com", "error": "ECONNREFUSED", "count": 2420,
         "bytes_sent": 2621440, "bytes_received": 131596288, "error_count": 5},
        {"ts": "2026-02-10 12:00:00", "order_id": 2, "domain": "facebook.com", "error": "ECONNREFUSED", "count": 100,
         "bytes_sent": 1000, "bytes_received": 90000, "error_count": 11},
        {"ts": "2026-02-11 12:00:00", "order_id": 2, "domain": "github.com", "error": "ECONNREFUSED", "count": 90,
         "bytes_sent": 1000, "bytes_received": 80000, "error_count": 10},
    ]  # fmt: skip
    for i in range(45):
        errors = 8 if i < 13 else 5 if i == 13 else 0
        row: dict[str, Any] = {"ts": f"2026-03-{1 + i % 18:02d} 0{i % 10}:30:00", "order_id": 2,
                               "domain": f"site{i:02d}.com", "count": 10 + i, "bytes_sent": 100, "bytes_received": 1000}
        if errors:
            row |= {"error": "ECONNREFUSED", "error_count": errors}
        rows.append(row)
    return rows


async def test_responses_equal_the_fonproxy_examples_field_for_field(api: Api) -> None:
    rows = doc_example_rows()
    refused = [r for r in rows if r.get("error") == "ECONNREFUSED" and r["order_id"] == 2]
    assert sum(r["error_count"] for r in refused) == 142
    await api.ingest({"logs": rows})
    day = {"from": "2026-03-15", "to": "2026-03-16", "orderId": "1", "interval": "1d"}
    span = {"from": "2026-02-01", "to": "2026-03-20", "orderId": "2"}
    for endpoint, example in DOC_EXAMPLES.items():
        query = day if endpoint in ("traffic", "requests", "concurrency") else span
        got = await api.get(f"/analytics/{endpoint}", **query)
        item = got["data"][0]
        for key in EXTENSIONS.get(endpoint, ()):
            assert isinstance(item.pop(key), str)
        assert item == example, endpoint
        if endpoint == "websites":
            assert {k: v for k, v in got.items() if k != "data"} == {"page": 1, "limit": 25, "total": 48, "totalPages": 2}


def walk(node: Any, path: str = "$") -> Any:
    """Every (path, dict) of a JSON document."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


# The parameters of the FonProxy doc (name -> default) plus the extensions.
FONPROXY_CHART = {"from": None, "to": None, "domain": None, "orderId": None}
EXTENSION_PARAMS = {"userId": None, "tz": None}
EXPECTED_PARAMS = {
    "/analytics/traffic": FONPROXY_CHART | EXTENSION_PARAMS | {"interval": None},
    "/analytics/requests": FONPROXY_CHART | EXTENSION_PARAMS | {"interval": None},
    "/analytics/concurrency": FONPROXY_CHART | EXTENSION_PARAMS | {"interval": None},
    "/analytics/latency": FONPROXY_CHART | EXTENSION_PARAMS | {"interval": None},
    "/analytics/domains": FONPROXY_CHART | EXTENSION_PARAMS | {"sortBy": "bytes", "limit": 30},
    "/analytics/errors": FONPROXY_CHART | EXTENSION_PARAMS | {"limit": 50},
    "/analytics/websites": FONPROXY_CHART | EXTENSION_PARAMS | {"page": 1, "limit": 25},
}


async def test_every_parameter_and_error_is_documented(api: Api) -> None:
    doc = await api.get("/openapi.json")
    for path, expected in EXPECTED_PARAMS.items():
        op = doc["paths"][path]["get"]
        params = {p["name"]: p for p in op["parameters"]}
        assert {n: p["schema"].get("default") for n, p in params.items()} == expected, path
        assert {n for n, p in params.items() if p["required"]} == {"from", "to"}
        assert all(p["in"] == "query" and p["description"] for p in params.values())
        if "limit" in params:
            assert (params["limit"]["schema"]["minimum"], params["limit"]["schema"]["maximum"]) == (1, 100)
        assert set(op["responses"]) == {"200", "400", "401", "403", "500", "503"}, path
    ingest = doc["paths"]["/analytics/ingest"]["post"]
    assert set(ingest["responses"]) == {"204", "400", "401", "403", "413", "500", "503"}
    assert [p["name"] for p in ingest["parameters"]] == ["Idempotency-Key"]
    assert set(ingest["requestBody"]["content"]) == {"application/json", "application/msgpack"}
    codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert set(codes) >= {
        "invalid_parameter", "invalid_body", "invalid_header", "unauthorized", "forbidden", "payload_too_large",
        "storage_unavailable", "internal_error",
    }  # fmt: skip


async def test_every_extension_is_marked(api: Api) -> None:
    doc = await api.get("/openapi.json")
    marked = {path for path, node in walk(doc) if node.get("x-proxymeter-extension") is True}
    schemas = "$.components.schemas"
    expected = {
        f"{schemas}.Row.properties.conn_ms", f"{schemas}.Row.properties.duration_max_ms",
        f"{schemas}.Row.properties.latency", f"{schemas}.IngestBody.properties.concurrency", f"{schemas}.Profile",
        f"{schemas}.Concurrency.properties.data.items.properties.avg_concurrency", "$.paths./analytics/latency.get",
    }  # fmt: skip
    for path, params in EXPECTED_PARAMS.items():
        names = [p["name"] for p in doc["paths"][path]["get"]["parameters"]]
        expected |= {f"$.paths.{path}.get.parameters[{names.index(n)}]" for n in ("userId", "tz", "interval") if n in names}
    # The Webshare-compatible API: the activity records of the ingest body, and our
    # user_id and tz parameters (Webshare has neither).
    expected |= {f"{schemas}.IngestBody.properties.activity", f"{schemas}.ActivityRecord"}
    for path, item in doc["paths"].items():
        if path.startswith("/api/v2/"):
            for method, op in item.items():
                names = [p["name"] for p in op["parameters"]]
                expected |= {f"$.paths.{path}.{method}.parameters[{names.index(n)}]" for n in ("user_id", "tz") if n in names}
    assert marked == expected
    # and nothing from the FonProxy doc is marked as an extension
    row = doc["components"]["schemas"]["Row"]["properties"]
    fonproxy_fields = {"ts", "user_id", "order_id", "port", "protocol", "ip_out", "ip_from", "peer_id", "worker",
                       "domain", "error", "count", "bytes_sent", "bytes_received", "error_count", "duration_ms",
                       "max_concurrency"}  # fmt: skip
    assert set(row) - fonproxy_fields == {"conn_ms", "duration_max_ms", "latency"}


# The families README's API section lists for /metrics, with their types.
METRIC_FAMILIES = {
    "proxymeter_collector_batches_ingested_total": "counter",
    "proxymeter_collector_rows_ingested_total": "counter",
    "proxymeter_collector_profiles_ingested_total": "counter",
    "proxymeter_collector_activity_ingested_total": "counter",
    "proxymeter_collector_ingest_bytes_total": "counter",
    "proxymeter_collector_duplicate_batches_total": "counter",
    "proxymeter_collector_ingest_rejects_total": "counter",
    "proxymeter_collector_ingest_seconds": "histogram",
    "proxymeter_collector_query_seconds": "histogram",
    "proxymeter_collector_query_errors_total": "counter",
    "proxymeter_collector_store_size_bytes": "gauge",
    "proxymeter_collector_retention_deleted_rows_total": "counter",
    "proxymeter_collector_config_reloads_total": "counter",
    "proxymeter_collector_tokens": "gauge",
}


async def test_metrics_has_every_documented_family(make_api) -> None:
    # Retention every 50 ms, so the app's own sweep runs during the test.
    api = await make_api(storage="retention_interval = 0.05")
    body = {"logs": [{"ts": "2025-12-01 10:00:00", "domain": "old.com", "count": 1},
                     {"ts": "2026-03-15 10:00:00", "domain": "new.com", "count": 2}]}  # fmt: skip
    raw = json.dumps(body).encode()
    await api.ingest(raw)
    await api.get("/analytics/traffic", expect=400, **{"from": "2026-03-15"})
    await api.get("/analytics/traffic", **{"from": "2026-03-15", "to": "2026-03-16"})
    text = ""
    for _ in range(100):  # until the first sweep ran (90 days before "now" = 2026-04-01)
        text = await (await api.client.get("/metrics")).text()
        if 'proxymeter_collector_retention_deleted_rows_total{table="m"} 1\n' in text:
            break
        await asyncio.sleep(0.05)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types == METRIC_FAMILIES
    for reason in ("invalid_body", "too_large", "unauthorized", "forbidden", "storage_error"):
        assert f'proxymeter_collector_ingest_rejects_total{{reason="{reason}"}} 0\n' in text
    assert f"proxymeter_collector_ingest_bytes_total {len(raw)}\n" in text
    assert "proxymeter_collector_ingest_seconds_count 1\n" in text
    assert 'proxymeter_collector_query_errors_total{endpoint="traffic",status="400"} 1\n' in text
    assert 'proxymeter_collector_query_seconds_count{endpoint="traffic"} 1\n' in text
    assert "proxymeter_collector_tokens 4\n" in text
    assert 'proxymeter_collector_retention_deleted_rows_total{table="m"} 1\n' in text
    sites = await api.get("/analytics/websites", **{"from": "2026-02-01", "to": "2026-04-01"})
    assert [d["domain"] for d in sites["data"]] == ["new.com"]
    old = await api.get("/analytics/websites", **{"from": "2025-11-15", "to": "2025-12-15"})
    assert old["total"] == 0


def test_readme_shows_every_endpoint_with_curl_and_every_extension() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("<!-- section:api -->", 1)[1].split("<!-- /section:api -->", 1)[0]
    curls = [line for line in section.splitlines() if "curl " in line or line.lstrip().startswith("'http")]
    doc = build_openapi()
    for path in doc["paths"]:
        assert any(f"8428{path}" in line for line in curls), f"no curl example for {path}"
    for name in ("conn_ms", "duration_max_ms", "latency", "concurrency", "interval", "tz", "userId",
                 "avg_concurrency", "Merge rules", "Idempotency-Key", "Empty buckets are omitted"):  # fmt: skip
        assert name in section, name


# The parameters of Webshare's docs per /api/v2 endpoint, plus our extensions user_id, tz.
_V2_WINDOW = {"timestamp__gte", "timestamp__lte", "plan_id", "user_id", "tz"}
_V2_FILTERS = {"search", "error_reason", "bytes__gte", "bytes__lte"}
EXPECTED_V2_PARAMS = {
    ("/api/v2/proxy/activity/", "get"): _V2_WINDOW | _V2_FILTERS | {"starting_after", "page_size"},
    ("/api/v2/proxy/activity/download/", "get"): _V2_WINDOW | _V2_FILTERS | {"download_token"},
    ("/api/v2/download_token/activity/", "get"): {"user_id"},
    ("/api/v2/download_token/activity/", "post"): {"user_id"},
    ("/api/v2/download_token/activity/reset/", "post"): {"user_id"},
    ("/api/v2/stats/", "get"): _V2_WINDOW,
    ("/api/v2/stats/aggregate/", "get"): _V2_WINDOW,
}


async def test_every_v2_response_conforms_and_every_parameter_is_documented(api: Api) -> None:
    doc = await api.get("/openapi.json")
    v2 = {(path, m) for path, item in doc["paths"].items() if path.startswith("/api/v2/") for m in item}
    assert v2 == set(EXPECTED_V2_PARAMS)
    for (path, method), names in EXPECTED_V2_PARAMS.items():
        op = doc["paths"][path][method]
        assert {p["name"] for p in op["parameters"]} == names, path
        assert all(p["in"] == "query" and p["description"] and not p["required"] for p in op["parameters"])
        assert set(op["responses"]) == {"200", "400", "401", "403", "500", "503"}, path
        assert op["security"] == [{"bearer": []}, {"token": []}]
    page = {p["name"]: p for p in doc["paths"]["/api/v2/proxy/activity/"]["get"]["parameters"]}["page_size"]
    assert (page["schema"]["default"], page["schema"]["minimum"], page["schema"]["maximum"]) == (25, 1, 100)

    record = {"ts_us": 1774900000123456, "protocol": "socks", "duration_ms": 1500, "handshake_ms": None,
              "tunnel_ms": 1200, "error": "other:weird thing", "auth_username": "u", "proxy_address": None,
              "client_address": "10.0.0.1", "ip_address": None, "hostname": "h.example.org", "domain": "example.org",
              "port": 443, "proxy_port": 50000, "listen_address": None, "listen_port": None, "user_id": 42,
              "order_id": 1, "worker": "w1", "bytes_sent": 1, "bytes_received": 2}  # fmt: skip
    rows = [{"ts": "2026-03-30 19:46:00", "user_id": 42, "order_id": 1, "protocol": "SOCKS", "ip_out": "1.2.3.4",
             "error": "timeout", "count": 5, "error_count": 2, "bytes_sent": 10, "conn_ms": 500}]  # fmt: skip
    # the error-free record one microsecond later, so it is the newest on either backend
    # (ties go by id, which only SQLite hands out in insertion order)
    body = {"logs": rows, "activity": [record, record | {"error": "", "ts_us": record["ts_us"] + 1}]}
    check(doc, doc["components"]["schemas"]["IngestBody"], body)
    await api.ingest(body)

    async def conforms(method: str, path: str, status: int, token: str | None = ADMIN, **params: str) -> Any:
        headers = {"Authorization": f"Token {token}"} if token else {}
        resp = await api.client.request(method, path, headers=headers, params=params)
        assert resp.status == status, await resp.text()
        spec = doc["paths"][path][method.lower()]["responses"][str(status)]
        ctype = resp.headers["Content-Type"].split(";")[0]
        assert ctype in spec["content"]
        if ctype != "application/json":
            return await resp.text()
        value = json.loads(await resp.text())
        check(doc, spec["content"][ctype]["schema"], value)
        return value

    listed = await conforms("GET", "/api/v2/proxy/activity/", 200, page_size="1")
    assert listed["count"] == 2 and listed["next"] and listed["results"][0]["error_reason"] is None
    second = await conforms("GET", "/api/v2/proxy/activity/", 200, token=USER42, error_reason="*")
    assert second["results"][0]["error_reason"] == "other:weird thing"  # an unknown code is its own reason
    hours = await conforms("GET", "/api/v2/stats/", 200, timestamp__gte="2026-03-30T19:00:00Z")
    assert sum(h["requests_total"] for h in hours) == 5
    agg = await conforms("GET", "/api/v2/stats/aggregate/", 200, token=USER42)
    assert agg["error_reasons"][0]["reason"] == "target_connect_timeout" and agg["protocols_used"] == {"socks": 5}
    token = await conforms("POST", "/api/v2/download_token/activity/", 200, token=USER42)
    assert await conforms("GET", "/api/v2/download_token/activity/", 200, token=USER42) == token
    assert (await conforms("POST", "/api/v2/download_token/activity/reset/", 200, token=USER42))["key"] != token["key"]
    csv_text = await conforms("GET", "/api/v2/proxy/activity/download/", 200)
    assert len(csv_text.splitlines()) == 3
    for path, method in sorted(EXPECTED_V2_PARAMS):
        await conforms(method.upper(), path, 400, bogus="1")
        await conforms(method.upper(), path, 401, token=None if "download/" not in path else "nope")
        await conforms(method.upper(), path, 403, token=AGENT)
        await conforms(method.upper(), path, 403, token=USER42, user_id="7")


def test_readme_documents_every_v2_parameter_and_error_shape() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("<!-- section:api -->", 1)[1].split("<!-- /section:api -->", 1)[0]
    for name in set().union(*EXPECTED_V2_PARAMS.values()):
        assert f"`{name}`" in section, name
    for text in ('{"timestamp__gte": [', '{"detail": ', "`Authorization: Token $TOKEN`", "`next`", "`count`",
                 "Time, Hostname, Destination Port, Bytes, Duration,\nProxy, Your IP Address, Error Reason, Protocol"):
        assert text in section, text
