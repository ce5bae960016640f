import json
from pathlib import Path

import msgpack
import pytest

from agent.wire.batch import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_MSGPACK,
    Batch,
    Profile,
    Row,
    WireError,
    decode_body,
    encode_json,
    encode_msgpack,
)

SEED = Path(__file__).resolve().parents[2].parent / "shared" / "seeds" / "fonproxy-analytics-api.txt"

FONPROXY_ROW = {
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
    "max_concurrency": 5,
}


def test_fonproxy_example_row_decodes() -> None:
    batch = decode_body(json.dumps({"logs": [FONPROXY_ROW]}).encode(), CONTENT_TYPE_JSON)
    (row,) = batch.rows
    assert row.ts == 1773569700  # 2026-03-15T10:15:00Z
    assert (row.user_id, row.order_id, row.port, row.domain, row.count) == (1, 3, 443, "google.com", 12)
    assert (row.bytes_sent, row.bytes_received, row.duration_ms, row.max_concurrency) == (10240, 524800, 15000, 5)
    assert row.conn_ms == 0 and row.latency == {}


def test_round_trip_both_encodings() -> None:
    batch = Batch(
        rows=[Row(ts=1773569700, user_id=7, domain="a.com", count=2, conn_ms=61000, latency={12: 2})],
        profiles=[Profile(ts=1773569700, user_id=7, order_id=1, worker="w", active=[1] * 60)],
    )
    assert decode_body(encode_msgpack(batch), CONTENT_TYPE_MSGPACK) == batch
    assert decode_body(encode_json(batch), CONTENT_TYPE_JSON + "; charset=utf-8") == batch


def test_timestamps_floor_to_minute_and_accept_offsets() -> None:
    body = {"logs": [{"ts": "2026-03-15 10:15:42"}, {"ts": "2026-03-15T12:15:00+02:00"}]}
    rows = decode_body(json.dumps(body).encode(), CONTENT_TYPE_JSON).rows
    assert [r.ts for r in rows] == [1773569700, 1773569700]


@pytest.mark.parametrize(
    "body,path",
    [
        ({"logs": [FONPROXY_ROW, {**FONPROXY_ROW, "count": -1}]}, "logs[1].count"),
        ({"logs": [{**FONPROXY_ROW, "bytes_sent": "10"}]}, "logs[0].bytes_sent"),
        ({"logs": [{**FONPROXY_ROW, "count": True}]}, "logs[0].count"),
        ({"logs": [{**FONPROXY_ROW, "colour": "red"}]}, "logs[0].colour"),
        ({"logs": [{"count": 1}]}, "logs[0].ts"),
        ({"logs": [{"ts": "yesterday"}]}, "logs[0].ts"),
        ({"logs": [{**FONPROXY_ROW, "domain": "x" * 256}]}, "logs[0].domain"),
        ({"logs": [{**FONPROXY_ROW, "latency": [[1, 2, 3]]}]}, "logs[0].latency[0]"),
        ({"logs": [], "concurrency": [{"ts": "2026-03-15 10:15:00", "user_id": 1, "order_id": 0, "worker": "w", "active": [0] * 59}]}, "concurrency[0].active"),
        ({"logs": [{**FONPROXY_ROW, "bytes_received": 2**53}]}, "logs[0].bytes_received"),
        ({"logs": [{**FONPROXY_ROW, "latency": [[4, 2**53]]}]}, "logs[0].latency[0]"),
        ({"logs": [{**FONPROXY_ROW, "ts": "1969-12-31 23:59:59"}]}, "logs[0].ts"),
        ({"logs": [], "concurrency": [{"ts": "2026-03-15 10:15:00", "user_id": 1, "order_id": 0, "worker": "w", "active": [0] * 59 + [2**53]}]}, "concurrency[0].active[59]"),
        ({"rows": []}, "rows"),
        ({}, "logs"),
    ],
)
def test_bad_bodies_name_the_field(body: dict, path: str) -> None:
    with pytest.raises(WireError) as info:
        decode_body(json.dumps(body).encode(), CONTENT_TYPE_JSON)
    assert info.value.path == path


def test_limits_are_inclusive() -> None:
    """Ids take the whole int64 range; counters stop at 2**53-1 (sums of them stay exact)."""
    big = 2**53 - 1
    row = {**FONPROXY_ROW, "user_id": 2**63 - 1, "count": big, "bytes_sent": big, "bytes_received": big,
           "duration_ms": big, "conn_ms": big, "max_concurrency": big, "duration_max_ms": big, "latency": [[7, big]],
           "ts": "1970-01-01 00:00:59"}
    (got,) = decode_body(json.dumps({"logs": [row]}).encode(), CONTENT_TYPE_JSON).rows
    assert (got.ts, got.user_id, got.count, got.bytes_received, got.latency) == (0, 2**63 - 1, big, big, {7: big})


def test_json_the_parser_or_a_store_cannot_hold_is_named() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(WireError, match="nested too deeply") as info:
        decode_body(deep, CONTENT_TYPE_JSON)
    assert info.value.path == ""
    # "\ud800" escaped in JSON, and a surrogate as raw bytes (ED B3 BF)
    escaped = b'{"logs": [{"ts": "2026-03-15 10:00:00"}, {"ts": "2026-03-15 10:00:00", "domain": "a\\ud800"}]}'
    profile = {"ts": "2026-03-15 10:15:00", "user_id": 1, "order_id": 0, "worker": "w\udcff", "active": [0] * 60}
    raw = json.dumps({"logs": [], "concurrency": [profile]}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for body, path in ((escaped, "logs[1].domain"), (raw, "concurrency[0].worker")):
        with pytest.raises(WireError, match="lone UTF-16 surrogate") as info:
            decode_body(body, CONTENT_TYPE_JSON)
        assert info.value.path == path
    # a surrogate pair is one character, and an escaped backslash before "ud800" is text
    ok = b'{"logs": [{"ts": "2026-03-15 10:00:00", "domain": "\\ud83d\\ude00.x", "error": "\\\\ud800"}]}'
    (row,) = decode_body(ok, CONTENT_TYPE_JSON).rows
    assert (row.domain, row.error) == ("\U0001f600.x", "\\ud800")


def test_bad_encodings() -> None:
    with pytest.raises(WireError, match="not valid JSON"):
        decode_body(b"{", CONTENT_TYPE_JSON)
    with pytest.raises(WireError, match="not valid msgpack"):
        decode_body(b"\xc1", CONTENT_TYPE_MSGPACK)
    with pytest.raises(WireError, match="unsupported Content-Type"):
        decode_body(msgpack.packb({"logs": []}), "text/plain")


def test_row_limit() -> None:
    body = json.dumps({"logs": [{"ts": "2026-03-15 10:15:00"}] * 3}).encode()
    with pytest.raises(WireError, match="too many rows: 3 > limit 2"):
        decode_body(body, CONTENT_TYPE_JSON, max_rows=2)
    assert len(decode_body(body, CONTENT_TYPE_JSON, max_rows=3).rows) == 3


@pytest.mark.skipif(not SEED.exists(), reason="API seed document not present")
def test_seed_document_example_matches_our_copy() -> None:
    text = SEED.read_text(encoding="utf-8")
    for key, value in FONPROXY_ROW.items():
        assert f'"{key}": {json.dumps(value)}' in text
