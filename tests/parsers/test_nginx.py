"""nginx table tests: real stream and http lines of the proxymeter log_format (nginx 1.22)."""

from __future__ import annotations

from datetime import timezone

import pytest

from agent.parsers import make_parser
from agent.record import ParseError, Record
from parsers_table import core, core_parser, fixture_lines, parts, rec

STREAM = fixture_lines("nginx", "stream.log")
HTTP = fixture_lines("nginx", "http.log")
L = "127.0.0.1"
ECHO, CLOSED, ORIGIN = 39911, 46733, 46243

# start = $msec - duration; stream $bytes_received (from client) is our bytes_sent
STREAM_TABLE: list[Record] = [
    rec(1795333161956 - 404, 404, 5100, 5100, L, "", L, ECHO, "HTTPS", "", "", 200, "", f"{L}:{ECHO}", 54699),
    rec(1795333162357 - 401, 401, 5100, 5100, L, "", L, ECHO, "HTTPS", "", "", 200, "", f"{L}:{ECHO}", 54699),
    rec(1795333162358, 0, 0, 0, L, "", L, CLOSED, "HTTPS", "upstream_error", "TCP/502", 502, "", f"{L}:{CLOSED}", 41221),
    rec(1795333162358, 0, 0, 0, L, "", "", 0, "HTTPS", "forbidden_host", "TCP/403", 403, "", "", 39965),
    rec(1795333162358, 1, 27, 3140, L, "", L, ORIGIN, "HTTPS", "", "", 200, "", f"{L}:{ORIGIN}", 56805),
    # the client reset this one; nginx stream still logs 200
    rec(1795333162359, 1, 3, 3, L, "", L, ECHO, "HTTPS", "", "", 200, "", f"{L}:{ECHO}", 54699),
]
HTTP_TABLE: list[Record] = [
    rec(1795333162360, 1, 104, 1145, L, "alice", "www.example.com", 80, "HTTP", "", "", 200, "", f"{L}:{ORIGIN}", 56095),
    rec(1795333162361, 0, 109, 251, L, "bob smith", "www.example.com", 80, "HTTP", "", "", 404, "", f"{L}:{ORIGIN}", 56095),
    rec(1795333162361, 0, 106, 370, L, "alice", "www.example.com", 80, "HTTP", "auth_failed", "http/401", 401, "", "", 56095),
    rec(1795333162362, 0, 102, 309, L, "alice", "www.example.com", 80, "HTTP", "upstream_error", "http/502", 502, "", f"{L}:{CLOSED}", 56095),
    rec(1795333163863 - 1501, 1501, 104, 324, L, "alice", "www.example.com", 80, "HTTP", "timeout", "http/504", 504, "", f"{L}:{ORIGIN}", 56095),
    rec(1795333164365 - 501, 501, 85, 0, L, "alice", "www.example.com", 80, "HTTP", "client_aborted", "http/499", 499, "", f"{L}:{ORIGIN}", 56095),
]
CASES = list(zip(STREAM, STREAM_TABLE)) + list(zip(HTTP, HTTP_TABLE))


@pytest.mark.parametrize("line,expected", CASES)
def test_real_lines(line: bytes, expected: Record) -> None:
    p = core_parser("nginx", timezone.utc)
    assert p.parse(line) == expected
    assert p.parse(line + b"\r") == expected
    assert p.parse(line + b"\textra\tfields") == expected


def test_fixture_sizes() -> None:
    assert (len(STREAM), len(HTTP)) == (6, 6)


HAND = [
    # ssl_preread SNI as host, nginx retried two upstreams, UDP
    (b"1700000000.500\t2.250\t10.0.0.1\t443\tTCP\t200\t700\t9000\t10.1.1.1:443, 10.1.1.2:443\t-\tWWW.Example.com",
     rec(1699999998250, 2250, 700, 9000, "10.0.0.1", "", "www.example.com", 443, "HTTPS", "", "", 200, "", "10.1.1.2:443", 443)),
    (b"1700000000.500\t0.000\t10.0.0.1\t53\tUDP\t500\t0\t0\t-\t-\t-",
     rec(1700000000500, 0, 0, 0, "10.0.0.1", "", "", 0, "HTTPS", "proxy_error", "UDP/500", 500, "", "", 53)),
    (b"1700000000.500\t0.000\t10.0.0.1\t53\tTCP\t418\t0\t0\t-\t-\t-",
     rec(1700000000500, 0, 0, 0, "10.0.0.1", "", "", 0, "HTTPS", "other:stream/418", "TCP/418", 418, "", "", 53)),
    # nginx escapes non-ASCII bytes and quotes as \xHH
    (b"1700000000.500\t0.100\t10.0.0.1\t8443\thttps\t200\t300\t4000\t10.1.1.1:80\tj\\xC3\\xBCrgen \\x22x\\x22\\xFF\texample.org\tGET",
     rec(1700000000400, 100, 300, 4000, "10.0.0.1", "j\u00fcrgen \"x\"\ufffd", "example.org", 443, "HTTPS", "", "", 200, "", "10.1.1.1:80", 8443)),
    (b"1700000000.500\t0.100\t10.0.0.1\t8080\thttp\t200\t300\t4000\t10.1.1.1:443\t-\ta.example:8443\tCONNECT",
     rec(1700000000400, 100, 300, 4000, "10.0.0.1", "", "a.example", 8443, "HTTPS", "", "", 200, "", "10.1.1.1:443", 8080)),
    (b"1700000000.500\t0.100\t10.0.0.1\t80\thttp\t413\t300\t400\t-\t-\ta.example\tPOST",
     rec(1700000000400, 100, 300, 400, "10.0.0.1", "", "a.example", 80, "HTTP", "invalid_request", "http/413", 413, "", "", 80)),
]


@pytest.mark.parametrize("line,expected", HAND)
def test_hand_written_lines(line: bytes, expected: Record) -> None:
    assert core_parser("nginx", timezone.utc).parse(line) == expected


@pytest.mark.parametrize("line,reason", [
    (STREAM[0][:40], "too_few_fields"),
    (HTTP[0].rsplit(b"\t", 1)[0], "too_few_fields"),
    (STREAM[0].replace(b"1795333161.956", b"17953x3161.956"), "bad_number"),
    (STREAM[0].replace(b"\t200\t", b"\t2x0\t"), "bad_number"),
    (STREAM[0].replace(b"\tTCP\t", b"\tSCTP\t"), "bad_protocol"),
    (b"127.0.0.1 - - [22/Nov/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 12", "too_few_fields"),
])
def test_bad_lines(line: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        core_parser("nginx", timezone.utc).parse(line)
    assert err.value.reason == reason


# -- the activity-only fields (parsers_table.ACTIVITY_PARTS): start_us_rem, target_ip,
# proxy_port, listen_address, handshake_ms, tunnel_ms. Stream lines of the current format
# end in $server_addr and $upstream_connect_time; nginx logs no outgoing port.
STREAM_HEAD = b"1700000000.500\t2.250\t10.0.0.1\t443\tTCP\t200\t700\t9000\t"
ACTIVITY_LINES: list[tuple[bytes, tuple[object, ...]]] = [
    (STREAM_HEAD + b"10.1.1.1:443\t-\t-\t192.0.2.1\t0.012", (0, "10.1.1.1", 0, "192.0.2.1", 12, 2238)),
    # nginx retried: the last upstream is the target, every connect time counts
    (STREAM_HEAD + b"10.1.1.1:443, 10.1.1.2:443\t-\t-\t192.0.2.1\t0.003, 0.004", (0, "10.1.1.2", 0, "192.0.2.1", 7, 2243)),
    # no upstream connection (refused, denied, not resolved)
    (b"1700000000.500\t0.000\t10.0.0.1\t53\tTCP\t502\t0\t0\t10.1.1.1:443\t-\t-\t192.0.2.1\t-",
     (0, "10.1.1.1", 0, "192.0.2.1", None, None)),
    (b"1700000000.500\t0.000\t10.0.0.1\t53\tTCP\t403\t0\t0\t-\t-\t-\t192.0.2.1\t-", (0, "", 0, "192.0.2.1", None, None)),
    # the SNI as host: the upstream's address is still the target's IP
    (STREAM_HEAD + b"10.1.1.1:443\t-\tWWW.Example.com\t2001:db8::1\t0.001", (0, "10.1.1.1", 0, "2001:db8::1", 1, 2249)),
    # connect time rounded apart from the session time: never past it
    (b"1700000000.500\t0.001\t10.0.0.1\t443\tTCP\t200\t7\t9\t10.1.1.1:443\t-\t-\t192.0.2.1\t0.002",
     (0, "10.1.1.1", 0, "192.0.2.1", 1, 0)),
    # the earlier eleven-field format, and data appended to it
    (STREAM_HEAD + b"10.1.1.1:443\t-\t-", (0, "10.1.1.1", 0, "", None, None)),
    (STREAM_HEAD + b"10.1.1.1:443\t-\t-\textra\tfields", (0, "10.1.1.1", 0, "", None, None)),
    # http-module lines carry none of them
    (b"1795333162.361\t0.001\t127.0.0.1\t56095\thttp\t200\t104\t1145\t127.0.0.1:46243\talice\twww.example.com\tGET",
     (0, "", 0, "", None, None)),
]


@pytest.mark.parametrize("line,want", ACTIVITY_LINES)
def test_activity_parts(line: bytes, want: tuple[object, ...]) -> None:
    p = make_parser("nginx", timezone.utc)
    got = p.parse(line)
    assert parts(got) == want
    assert p.parse(line + b"\r") == got
    if want[3]:  # the current format, with data appended after it
        assert p.parse(line + b"\tmore\tdata") == got
        # everything else is what the line without the two fields gives
        assert core(got) == core(p.parse(line.rsplit(b"\t", 2)[0]))
