"""jsonl table tests: Webshare activity objects (the documented sample plus our own)."""

from __future__ import annotations

import calendar
import json
from datetime import timezone
from zoneinfo import ZoneInfo

import pytest

from agent.parsers import make_parser
from agent.record import ParseError, Record
from parsers_table import core_parser, fixture_lines, parts, rec

LINES = fixture_lines("jsonl", "activity.log")
T10 = calendar.timegm((2026, 11, 22, 10, 0, 0)) * 1000

TABLE: list[tuple[int, Record]] = [
    # Webshare's documented sample: 15:29:42.517523-07:00 is 22:29:42.517 UTC
    (0, rec(calendar.timegm((2022, 8, 16, 22, 29, 42)) * 1000 + 517, 500, 0, 0, "10.1.0.1", "",
            "ipv4.webshare.io", 443, "HTTP", "client_connect_forbidden_host",
            "client_connect_forbidden_host", 0, "192.168.5.1", "", 6455)),
    (1, rec(T10 + 250, 1234, 0, 52311, "198.51.100.4", "user-1001-order-7", "www.example.co.uk",
            443, "HTTP", "", "", 0, "203.0.113.9", "", 8080)),
    # bytes_sent/bytes_received extension wins over bytes; no hostname -> ip_address
    (2, rec(T10 + 59_999, 3_600_000, 300, 700, "2001:db8::7", "bob smith", "2001:db8::80", 22,
            "SOCKS", "", "", 0, "", "", 1080)),
    (3, rec(T10 + 60_000, 3, 0, 0, "198.51.100.4", "user-1002", "closed.example", 9, "SOCKS",
            "connection_refused", "connection_refused", 0, "", "", 1080)),
]


@pytest.mark.parametrize("idx,expected", TABLE)
def test_lines(idx: int, expected: Record) -> None:
    p = core_parser("jsonl", timezone.utc)
    assert p.parse(LINES[idx]) == expected
    assert p.parse(LINES[idx] + b"\r") == expected
    assert p.parse(LINES[idx] + b"   ") == expected


def test_timestamp_without_offset_uses_source_timezone() -> None:
    p = core_parser("jsonl", ZoneInfo("Europe/Berlin"))
    r = p.parse(b'{"timestamp": "2026-07-01T12:00:00", "protocol": "http", "request_duration": 0}')
    assert r is not None and r.start_ms == calendar.timegm((2026, 7, 1, 10, 0, 0)) * 1000


@pytest.mark.parametrize("line,reason", [
    (LINES[1][:80], "bad_json"),
    (LINES[1] + b" trailing", "bad_json"),
    (b"[1, 2]", "not_an_object"),
    (b'{"protocol": "http", "request_duration": 1}', "missing_field"),
    (b'{"timestamp": "yesterday", "protocol": "http", "request_duration": 1}', "bad_timestamp"),
    (b'{"timestamp": "2026-11-22T10:00:00Z", "protocol": "ftp", "request_duration": 1}', "bad_field"),
    (b'{"timestamp": "2026-11-22T10:00:00Z", "protocol": "http", "request_duration": "1"}', "bad_field"),
    (b'{"timestamp": "2026-11-22T10:00:00Z", "protocol": "http", "request_duration": 1, "bytes": -5}', "bad_field"),
    (b'{"timestamp": "2026-11-22T10:00:00Z", "protocol": "http", "request_duration": 1, "port": "80"}', "bad_field"),
    (b'{"timestamp": "2026-11-22T10:00:00Z", "protocol": "http", "request_duration": 1, "auth_username": 5}', "bad_field"),
    (b"\xff\xfe{}", "bad_json"),
])
def test_bad_lines(line: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        core_parser("jsonl", timezone.utc).parse(line)
    assert err.value.reason == reason


def test_non_utf8_inside_strings_does_not_crash() -> None:
    # JSON must be UTF-8; a raw invalid byte is a bad line (above); an escaped lone
    # surrogate cannot be sent on as UTF-8, so its three bytes become U+FFFD each
    line = (b'{"timestamp": "2026-11-22T10:00:00Z", "protocol": "http", "request_duration": 1, '
            b'"auth_username": "us\\u00e9r\\ud800"}')
    r = core_parser("jsonl", timezone.utc).parse(line)
    assert r is not None and r.user == "us\u00e9r\ufffd\ufffd\ufffd"


# -- the activity-only fields (parsers_table.ACTIVITY_PARTS): start_us_rem, target_ip,
# proxy_port, listen_address, handshake_ms, tunnel_ms, read off each line by hand:
# the timestamp's microseconds, ip_address, proxy_port, listen_address and the two
# durations in seconds.
PARTS = [
    (523, "10.1.0.2", 0, "192.168.5.24", 300, 200),  # Webshare's sample: proxy_port null
    (0, "93.184.216.34", 51234, "203.0.113.1", 10, 1200),
    (0, "2001:db8::80", 0, "", None, None),
    (0, "", 0, "", None, None),
]


@pytest.mark.parametrize("idx", range(len(PARTS)))
def test_activity_parts(idx: int) -> None:
    p = make_parser("jsonl", timezone.utc)
    for line in (LINES[idx], LINES[idx] + b"\r", LINES[idx] + b"   "):
        assert parts(p.parse(line)) == PARTS[idx]
    assert parts(p.parse_general(LINES[idx])) == PARTS[idx]  # type: ignore[attr-defined]


@pytest.mark.parametrize("key,value", [("proxy_port", -1), ("proxy_port", "80"), ("listen_address", 5),
                                       ("handshake_duration", -0.1), ("tunnel_duration", "1"),
                                       ("handshake_duration", True)])
def test_bad_activity_fields(key: str, value: object) -> None:
    line = ('{"timestamp": "2026-11-22T10:00:00.250Z", "protocol": "http", "request_duration": 1, '
            f'"{key}": {json.dumps(value)}}}').encode()
    with pytest.raises(ParseError) as err:
        make_parser("jsonl", timezone.utc).parse(line)
    assert (err.value.reason, err.value.detail) == ("bad_field", key)
