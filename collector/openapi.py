"""The OpenAPI 3 document served at /openapi.json.

Kept as plain data next to the code it describes; tests check that real responses of
every endpoint conform to the schemas here (tests/collector/test_openapi.py). Every
proxymeter extension of the FonProxy API (fields, parameters, the latency endpoint) is
marked with `x-proxymeter-extension: true`, so a client can tell them apart from the
FonProxy contract by machine as well as by their descriptions.
"""

from __future__ import annotations

import copy
from typing import Any

from agent.wire import histogram
from agent.wire.batch import (
    ACTIVITY_COUNTERS,
    ACTIVITY_FIELDS,
    ACTIVITY_IDS,
    ACTIVITY_OPT_COUNTERS,
    ACTIVITY_OPT_PORTS,
    ACTIVITY_OPT_STRS,
    ACTIVITY_PROTOCOLS,
    ACTIVITY_STRS,
    MAX_PORT,
    MAX_STR,
    SECONDS_PER_MINUTE,
)
from agent.wire.errorcodes import TABLE as ERROR_TABLE
from collector.params import ACTIVITY_PARAMS, CURSOR_SEP, DEFAULT_PAGE_SIZE, DOWNLOAD_PARAMS, STATS_PARAMS

Schema = dict[str, Any]

COUNT = {"type": "string", "pattern": "^[0-9]+$", "description": "a non-negative integer, as a string"}
DECIMAL = {"type": "string", "pattern": "^[0-9]+\\.[0-9]{3}$", "description": "a decimal number, as a string"}
TIME = {
    "type": "string",
    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$",
    "description": "YYYY-MM-DD HH:MM:SS in the requested tz (default UTC)",
}
WIRE_TIME = {"type": "string", "description": "'YYYY-MM-DD HH:MM:SS' in UTC (ISO 8601 with an offset also accepted)"}
EXT = "x-proxymeter-extension"
# Every `code` an error body can carry, and when.
ERROR_CODES = {
    "invalid_parameter": "400, a query parameter is missing or invalid",
    "invalid_body": "400, the ingest body is invalid (nothing of it was stored)",
    "invalid_header": "400, the Idempotency-Key header is invalid",
    "unauthorized": "401, missing or unknown token",
    "forbidden": "403, the token's role may not use the endpoint, or a user token asked for another userId",
    "not_found": "404, no such path",
    "method_not_allowed": "405",
    "payload_too_large": "413, ingest body over server.max_body_bytes",
    "http_error": "another 4xx from the HTTP layer (e.g. a malformed request)",
    "internal_error": "500, a bug (see the collector's log)",
    "storage_unavailable": "503, the store failed (disk full, ...)",
}


def extension(schema: Schema) -> Schema:
    return {**schema, EXT: True}


def _obj(props: dict[str, Schema], required: list[str] | None = None, description: str = "") -> Schema:
    out: Schema = {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": False,
    }
    if description:
        out["description"] = description
    return out


def _data(item: Schema) -> Schema:
    return _obj({"data": {"type": "array", "items": item}})


INT = {"type": "integer", "minimum": 0}
STR = {"type": "string", "maxLength": MAX_STR}

ROW = _obj(
    {
        "ts": WIRE_TIME,
        "user_id": INT, "order_id": INT, "port": INT,
        "protocol": STR, "ip_out": STR, "ip_from": STR, "peer_id": STR, "worker": STR,
        "domain": STR, "error": STR,
        "count": INT, "bytes_sent": INT, "bytes_received": INT, "error_count": INT, "duration_ms": INT,
        "max_concurrency": {**INT, "description": "merged by max"},
        "conn_ms": extension({**INT, "description": "extension: connection-milliseconds inside this minute (added); "
                              "avg_concurrency = conn_ms / bucket length"}),
        "duration_max_ms": extension({**INT, "description": "extension: longest request of the row (merged by max)"}),
        "latency": {
            EXT: True,
            "type": "array",
            "description": "extension: latency histogram as [bucket, count] pairs; bucket 0 < 1 ms, bucket i >= 1 "
            f"holds [2^((i-1)/8), 2^(i/8)) ms; quantiles within {histogram.RELATIVE_ERROR:.2%} relative error",
            "items": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2},
        },
    },  # fmt: skip
    required=["ts"],
    description="One pre-aggregated row; counters are deltas merged into the stored minute",
)

PROFILE = _obj(
    {
        "ts": WIRE_TIME,
        "user_id": INT,
        "order_id": INT,
        "worker": STR,
        "active": {
            "type": "array",
            "items": INT,
            "minItems": SECONDS_PER_MINUTE,
            "maxItems": SECONDS_PER_MINUTE,
            "description": "connections open during each second of the minute (additive delta)",
        },
    },
    description="Extension: per-second active connections of one worker for one (minute, user, order)",
)
PROFILE[EXT] = True


def _activity_wire_field(name: str) -> Schema:
    if name == "ts_us":
        return {**INT, "description": "request start, UTC epoch microseconds"}
    if name == "protocol":
        return {"type": "string", "enum": list(ACTIVITY_PROTOCOLS)}
    if name in ACTIVITY_COUNTERS or name in ACTIVITY_IDS:
        return INT
    if name in ACTIVITY_OPT_COUNTERS:
        return {**INT, "nullable": True}
    if name in ACTIVITY_OPT_PORTS:
        return {"type": "integer", "minimum": 0, "maximum": MAX_PORT, "nullable": True}
    if name in ACTIVITY_OPT_STRS:
        return {**STR, "nullable": True}
    assert name in ACTIVITY_STRS, name
    if name == "error":
        return {**STR, "description": "our error code ('' = no error); shown as its Webshare error_reason"}
    return STR


ACTIVITY_IN = _obj(
    {name: _activity_wire_field(name) for name in ACTIVITY_FIELDS},
    description="Extension: one request (Webshare's activity object); every field required, null where unknown; "
    "appended once per batch (not merged)",
)
ACTIVITY_IN[EXT] = True

NUMBER = {"type": "number", "minimum": 0}
NULL_NUMBER = {"type": "number", "minimum": 0, "nullable": True}
NULL_STR = {"type": "string", "nullable": True}
NULL_PORT = {"type": "integer", "minimum": 0, "maximum": MAX_PORT, "nullable": True}
ISO_US = {
    "type": "string",
    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}[+-][0-9]{2}:[0-9]{2}$",
    "description": "ISO 8601 in the requested tz (default UTC) with microseconds and offset",
}
REASONS = [e.reason for e in ERROR_TABLE]
REASON = {"type": "string", "description": "Webshare-style error_reason: one of " + ", ".join(REASONS)
          + ", or our 'other:<raw>' code for an outcome no parser rule classifies"}  # fmt: skip
ACTIVITY = _obj(
    {
        "timestamp": ISO_US,
        "protocol": {"type": "string", "enum": list(ACTIVITY_PROTOCOLS)},
        "request_duration": {**NUMBER, "description": "seconds (duration_ms / 1000)"},
        "handshake_duration": {**NULL_NUMBER, "description": "seconds"},
        "tunnel_duration": {**NULL_NUMBER, "description": "seconds"},
        "error_reason": {**REASON, "nullable": True},
        "error_reason_how_to_fix": NULL_STR,
        "auth_username": NULL_STR,
        "proxy_address": NULL_STR,
        "bytes": {"type": "integer", "minimum": 0, "description": "bytes sent + received"},
        "client_address": {"type": "string"},
        "ip_address": NULL_STR,
        "hostname": NULL_STR,
        "domain": NULL_STR,
        "port": NULL_PORT,
        "proxy_port": NULL_PORT,
        "listen_address": NULL_STR,
        "listen_port": NULL_PORT,
    },
    description="Webshare's proxy activity object, fields in its order",
)
STAT_FIELDS: dict[str, Schema] = {
    "bandwidth_total": {"type": "integer", "minimum": 0, "description": "bytes sent + received"},
    "bandwidth_average": {**INT, "description": "bytes per request, bandwidth_total // requests_total (0 without requests)"},
    "requests_total": {"type": "integer", "minimum": 0},
    "requests_successful": {"type": "integer", "minimum": 0, "description": "requests_total - requests_failed"},
    "requests_failed": {"type": "integer", "minimum": 0, "description": "sum of error_count"},
    "error_reasons": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorReason"},
                      "description": "most first, ties by reason"},
    "countries_used": {"type": "object", "description": "requests per country code of the proxy address (ip_out), from the geoip.path table; {} without one"},
    "number_of_proxies_used": {"type": "integer", "minimum": 0, "description": "distinct ip_out of the rows"},
    "protocols_used": {"type": "object", "description": "requests per protocol: http (rows' HTTP and HTTPS), "
                       "socks, any other row protocol lowercased"},
    "average_concurrency": {**NUMBER, "description": "conn_ms / length in ms (an hour: 3600 s; aggregate: the window)"},
    "average_rps": {**NUMBER, "description": "requests_total / length in seconds"},
    "last_request_sent_at": {**ISO_US, "nullable": True,
                             "description": "start of the last minute with requests (rows are per minute)"},
}  # fmt: skip

SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {
            "error": _obj(
                {
                    "code": {"type": "string", "enum": list(ERROR_CODES),
                             "description": "; ".join(f"{c}: {when}" for c, when in ERROR_CODES.items())},
                    "message": {"type": "string"},
                    "field": {"type": "string", "nullable": True,
                              "description": "offending parameter or body field, e.g. logs[3].bytes_sent"},
                }
            )
        }
    ),
    "IngestBody": _obj(
        {"logs": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}},
         "concurrency": extension({"type": "array", "items": {"$ref": "#/components/schemas/Profile"},
                                   "description": "extension: concurrency profiles (exact cross-worker peaks)"}),
         "activity": extension({"type": "array", "items": {"$ref": "#/components/schemas/ActivityRecord"},
                                "description": "extension: activity records (one per request, maybe a sample)"})},
        required=["logs"],
    ),
    "Row": ROW,
    "Profile": PROFILE,
    "Traffic": _data(
        _obj({"bucket": TIME, "total_bytes_sent": COUNT, "total_bytes_received": COUNT, "bytes_total": COUNT,
              "total_count": COUNT})
    ),
    "Requests": _data(_obj({"bucket": TIME, "total_count": COUNT, "total_errors": COUNT})),
    "Concurrency": _data(
        _obj(
            {
                "bucket": TIME,
                "max_concurrency": {**COUNT, "description": "exact cross-worker peak at 1 s resolution where "
                                    "profiles exist (and no domain filter), else the rows' max_concurrency"},
                "total_count": COUNT,
                "avg_concurrency": extension({**DECIMAL, "description": "extension: conn_ms / bucket length in ms"}),
            }
        )
    ),
    "Latency": _data(
        _obj(
            {
                "bucket": TIME,
                "p50": {**DECIMAL, "nullable": True, "description": "ms; null when no histogram"},
                "p95": {**DECIMAL, "nullable": True},
                "p99": {**DECIMAL, "nullable": True},
                "max": {**COUNT, "description": "ms, from duration_max_ms"},
                "samples": {**COUNT, "description": "observations in the histograms"},
                "total_count": COUNT,
            }
        )
    ),
    "Domains": _data(
        _obj({"domain": {"type": "string"}, "total_count": COUNT, "bytes_total": COUNT, "total_bytes_sent": COUNT,
              "total_bytes_received": COUNT, "total_errors": COUNT})
    ),
    "Errors": _data(
        _obj({"error": {"type": "string"}, "total_errors": COUNT, "first_seen": TIME, "last_seen": TIME,
              "sample_domains": {"type": "array", "items": {"type": "string"}, "maxItems": 3}})
    ),
    "Websites": _obj(
        {
            "data": {"type": "array", "items": _obj({"domain": {"type": "string"}, "total_count": COUNT,
                                                    "bytes_total": COUNT, "first_visit": TIME, "last_visit": TIME})},
            "page": {"type": "integer", "minimum": 1},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "total": {"type": "integer", "minimum": 0},
            "totalPages": {"type": "integer", "minimum": 0},
        }
    ),
    "Health": _obj({"status": {"type": "string", "enum": ["ok"]}}),
    "ActivityRecord": ACTIVITY_IN,
    "Activity": ACTIVITY,
    "ActivityList": _obj(
        {
            "count": {"type": "integer", "minimum": 0, "description": "records matching the filters (all pages)"},
            "next": {"type": "string", "nullable": True,
                     "description": "full URL of the next page (window pinned, starting_after set); null on the last"},
            "previous": {"type": "string", "nullable": True, "description": "always null (cursor paging goes forward)"},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Activity"}},
        }
    ),
    "ErrorReason": _obj(
        {
            "reason": REASON,
            "type": {"type": "string", "enum": ["configuration", "connection"]},
            "how_to_fix": {"type": "string"},
            "http_status": {"type": "integer", "minimum": 100, "maximum": 599},
            "count": {"type": "integer", "minimum": 0, "description": "sum of the rows' error_count"},
        }
    ),
    "StatsHour": _obj({"timestamp": {**ISO_US, "description": "start of the hour, in tz"},
                       "is_projected": {"type": "boolean", "enum": [False]}, **STAT_FIELDS}),  # fmt: skip
    "StatsList": {"type": "array", "items": {"$ref": "#/components/schemas/StatsHour"}},
    "StatsAggregate": _obj(dict(STAT_FIELDS)),
    "DownloadToken": _obj(
        {
            "id": {"type": "integer", "minimum": 0},
            "key": {"type": "string", "description": "pass as download_token to the download endpoint"},
            "scope": {"type": "string", "enum": ["activity"]},
            "expire_at": {**ISO_US, "description": "UTC; after it the key no longer downloads"},
        }
    ),
    "WebshareError": {
        "type": "object",
        "description": "Errors under /api/v2 (Django REST framework's shape): a 400 names the parameter "
        "({\"timestamp__gte\": [\"Enter a valid date/time ...\"]}; non_field_errors when none); "
        "401, 403, 404, 405, 500, 503 are {\"detail\": message}",
        "properties": {
            "detail": {"type": "string"},
            "non_field_errors": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
}


def _param(name: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _ext_param(name: str, schema: Schema, description: str) -> Schema:
    return {**_param(name, schema, description), EXT: True}


FROM = _param("from", {"type": "string"}, "Start (ISO 8601, inclusive); without an offset it is read in tz", True)
TO = _param("to", {"type": "string"}, "End (ISO 8601, exclusive); after from, at most 62 days (2 months) later", True)
DOMAIN = _param("domain", {"type": "string", "maxLength": 255}, "Filter by exact domain")
ORDER = _param("orderId", {"type": "string", "pattern": "^[0-9]+$"}, "Filter by order")
USER = _ext_param("userId", {"type": "string", "pattern": "^[0-9]+$"},
              "Extension: filter by user (admin tokens); a user token may only pass its own")
TZ = _ext_param("tz", {"type": "string"}, "Extension: IANA zone for bucket edges and output times (default UTC)")
INTERVAL = _ext_param(
    "interval", {"type": "string", "enum": ["1m", "5m", "15m", "1h", "1d"]},
    "Extension: bucket size; default the finest giving at most 500 buckets",
)


def _limit(default: int) -> Schema:
    return _param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": default}, "Max results (1-100)")


def _json(ref: str) -> Schema:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _errors(*codes: int) -> dict[str, Schema]:
    text = {400: "Invalid parameter or body (field names it)", 401: "Missing or unknown token",
            403: "Token role may not use this endpoint, or userId of another user",
            413: "Body over server.max_body_bytes", 500: "Internal error (a bug; see the collector's log)",
            503: "Storage unavailable"}
    return {str(c): {"description": text[c], "content": _json("Error")} for c in (*codes, 500)}


def _query(summary: str, params: list[Schema], ref: str, is_extension: bool = False) -> Schema:
    op: Schema = {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": params,
        "responses": {"200": {"description": "OK; empty buckets are omitted", "content": _json(ref)},
                      **_errors(400, 401, 403, 503)},
    }
    if is_extension:
        op[EXT] = True
    return {"get": op}


CHART = [FROM, TO, DOMAIN, ORDER, USER, INTERVAL, TZ]

# ---- /api/v2 ----

SECURITY = [{"bearer": []}, {"token": []}]
V2_PARAMS: dict[str, Schema] = {
    "timestamp__gte": _param("timestamp__gte", {"type": "string"},
                             "Records/rows at or after this ISO 8601 time (read in tz without an offset); default "
                             "six days before timestamp__lte (or now); not older than the retention"),
    "timestamp__lte": _param("timestamp__lte", {"type": "string"},
                             "At or before this ISO 8601 time; default now; timestamp__gte must not be after it"),
    "plan_id": _param("plan_id", {"type": "string", "pattern": "^[0-9]+$"}, "Only this plan (our order_id)"),
    "user_id": _ext_param("user_id", {"type": "string", "pattern": "^[0-9]+$"},
                          "Extension: only this user (admin tokens); a user token may only pass its own"),
    "tz": _ext_param("tz", {"type": "string"}, "Extension: IANA zone of the output times (default UTC)"),
    "search": _param("search", {"type": "string", "maxLength": 255},
                     "ASCII case-insensitive substring of hostname, domain, ip_address, client_address, "
                     "error_reason or auth_username"),
    "error_reason": _param("error_reason", {"type": "string", "maxLength": 255},
                           "Exactly this error_reason, or * for every request with an error"),
    "bytes__gte": _param("bytes__gte", {"type": "string", "pattern": "^[0-9]+$"}, "bytes at least this"),
    "bytes__lte": _param("bytes__lte", {"type": "string", "pattern": "^[0-9]+$"}, "bytes at most this"),
    "starting_after": _param("starting_after", {"type": "string"},
                             "Cursor: a record's timestamp (records older than it), or what `next` carries, "
                             f"<timestamp>{CURSOR_SEP}<id> (the records after that one, equal timestamps included)"),
    "page_size": _param("page_size", {"type": "integer", "minimum": 1, "maximum": 100, "default": DEFAULT_PAGE_SIZE},
                        "Records per page (the maximum is query.activity_max_page_size)"),
    "download_token": _param("download_token", {"type": "string"},
                             "Key of a download token (GET /api/v2/download_token/activity/); without it the "
                             "Authorization header is used"),
}


def _ws_errors(*codes: int) -> dict[str, Schema]:
    text = {400: "Invalid or unknown parameter (the key names it)", 401: "Missing or unknown token",
            403: "A user token asked for another user_id", 503: "Storage unavailable",
            500: "Internal error (a bug; see the collector's log)"}
    return {str(c): {"description": text[c], "content": _json("WebshareError")} for c in (*codes, 500)}


def _v2(summary: str, names: tuple[str, ...], ref: str, description: str = "") -> Schema:
    return {
        "summary": summary,
        "description": description or summary,
        "security": SECURITY,
        "parameters": [V2_PARAMS[n] for n in names],
        "responses": {"200": {"description": "OK", "content": _json(ref)}, **_ws_errors(400, 401, 403, 503)},
    }


_TOKEN_OP = _v2("The download token of the caller's user (created when it has none or it expired)",
                ("user_id",), "DownloadToken")
V2_PATHS: dict[str, Schema] = {
    "/api/v2/proxy/activity/": {"get": _v2(
        "List proxy activity, newest first (ties by id)", ACTIVITY_PARAMS, "ActivityList",
        "Webshare's list of proxy activity with cursor paging: follow `next` to get every record exactly once.")},
    "/api/v2/proxy/activity/download/": {"get": {
        **_v2("Download proxy activity as CSV (streamed)", DOWNLOAD_PARAMS, "ActivityList"),
        "responses": {
            "200": {"description": "CSV: Time, Hostname, Destination Port, Bytes, Duration, Proxy, Your IP Address, "
                    "Error Reason, Protocol; a missing value is None",
                    "content": {"text/csv": {"schema": {"type": "string"}}}},
            **_ws_errors(400, 401, 403, 503),
        },
    }},
    "/api/v2/download_token/activity/": {"get": _TOKEN_OP, "post": _TOKEN_OP},
    "/api/v2/download_token/activity/reset/": {"post": _v2(
        "A new download token; the old key stops working", ("user_id",), "DownloadToken")},
    "/api/v2/stats/": {"get": _v2(
        "Hourly stats (each hour of the window, in tz, that has rows), from the per-minute rows", STATS_PARAMS, "StatsList")},
    "/api/v2/stats/aggregate/": {"get": _v2(
        "The stats summed over the window, from the per-minute rows", STATS_PARAMS, "StatsAggregate")},
}  # fmt: skip

_DOC: Schema = {
    "openapi": "3.0.3",
    "info": {
        "title": "proxymeter collector",
        "version": "0.1.0",
        "description": "FonProxy-compatible analytics API with proxymeter extensions. Numbers in query "
        "results are strings; times are 'YYYY-MM-DD HH:MM:SS' in tz. Errors are {\"error\": {code, message, field}}. "
        "Under /api/v2: Webshare's proxy activity and stats API (JSON numbers, ISO 8601 times with offset, "
        "Django REST framework errors: see WebshareError).",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "roles: agent (ingest), admin (read all), user (own user_id)"},
                            "token": {"type": "apiKey", "in": "header", "name": "Authorization",
                                      "description": "Webshare's scheme: 'Token <token>', the same tokens as bearer"}},
        "schemas": SCHEMAS,
    },
    "paths": {
        "/analytics/ingest": {
            "post": {
                "summary": "Ingest pre-aggregated rows (and concurrency profiles); role agent",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "required": False,
                     "schema": {"type": "string", "maxLength": 200},
                     "description": "a body whose key was applied (kept >= 7 days) is answered 204, not re-applied"}
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/IngestBody"}},
                        "application/msgpack": {"schema": {"$ref": "#/components/schemas/IngestBody"}},
                    },
                },
                "responses": {"204": {"description": "Applied (or a duplicate Idempotency-Key)"},
                              **_errors(400, 401, 403, 413, 503)},
                "description": "Merge rules: every body is a delta; count, bytes_sent, bytes_received, error_count, "
                "duration_ms, conn_ms, latency histograms and profile seconds add; max_concurrency and "
                "duration_max_ms take the maximum; first/last seen take the min/max minute. The whole body is "
                "validated before anything is stored.",
            }
        },
        "/analytics/traffic": _query("Bytes sent/received per bucket", CHART, "Traffic"),
        "/analytics/requests": _query("Requests and errors per bucket", CHART, "Requests"),
        "/analytics/concurrency": _query("Peak and average concurrency per bucket", CHART, "Concurrency"),
        "/analytics/latency": _query("Extension: p50/p95/p99/max request duration per bucket", CHART, "Latency", True),
        "/analytics/domains": _query(
            "Top domains by bytes or count; ties by the other measure, then by name",
            [FROM, TO, DOMAIN, ORDER, USER, TZ,
             _param("sortBy", {"type": "string", "enum": ["bytes", "count"], "default": "bytes"}, "Sort by"),
             _limit(30)],
            "Domains",
        ),
        "/analytics/errors": _query(
            "Errors by type (most first, ties by name)", [FROM, TO, DOMAIN, ORDER, USER, TZ, _limit(50)], "Errors"
        ),
        "/analytics/websites": _query(
            "Distinct domains, most requests first (ties by name), paginated",
            [FROM, TO, DOMAIN, ORDER, USER, TZ,
             _param("page", {"type": "integer", "minimum": 1, "default": 1}, "Page number"), _limit(25)],
            "Websites",
        ),
        **V2_PATHS,
        "/healthz": {"get": {"summary": "Liveness: the store answers",
                             "responses": {"200": {"description": "OK", "content": _json("Health")},
                                           **_errors(503)}}},
        "/metrics": {"get": {"summary": "Prometheus text exposition of the collector's self-metrics",
                             "responses": {"200": {"description": "OK",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": {"description": "OK",
                                                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    },
}


def build_openapi() -> dict[str, Any]:
    return copy.deepcopy(_DOC)
