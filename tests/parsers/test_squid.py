"""Squid table tests: every real captured line, read by hand into its expected Record.

The fixture lines come from squid 5.7 (see tests/fixtures/logs/README.md); the
expected values below were written by reading each line, not by running the parser.
"""

from __future__ import annotations

from datetime import timezone

import pytest

from agent.parsers import make_parser
from agent.record import ParseError, Record
from parsers_table import core, core_parser, fixture_lines, parts, rec

EXT = fixture_lines("squid", "access-proxymeter.log")
NAT = fixture_lines("squid", "access.log")
O = 56943  # origin port in the capture
CL = 52003  # closed port
EC = 55177  # echo port
LP = 45741  # squid's http_port

# (line index, expected) for the extended `proxymeter` format; start = end - elapsed
EXT_TABLE: list[tuple[int, Record | None]] = [
    (0, None),  # connection closed before any request
    (1, rec(1795332619337 - 43, 43, 132, 1282, "127.0.0.1", "alice", "127.0.0.1", O, "HTTP", "", "", 200, "127.0.0.1", "", LP)),
    (2, rec(1795332619340, 1, 145, 279, "127.0.0.1", "user-1001-order-7", "127.0.0.1", O, "HTTP", "", "", 200, "127.0.0.1", "", LP)),
    # the target's own 404 and 500 are not proxy errors
    (3, rec(1795332619342, 42, 133, 388, "127.0.0.1", "alice", "127.0.0.1", O, "HTTP", "", "", 404, "127.0.0.1", "", LP)),
    (4, rec(1795332619385, 43, 133, 400, "127.0.0.1", "alice", "127.0.0.1", O, "HTTP", "", "", 500, "127.0.0.1", "", LP)),
    (5, rec(1795332619429, 43, 131, 395, "127.0.0.1", "bob smith", "127.0.0.1", O, "HTTP", "", "", 200, "127.0.0.1", "", LP)),
    (6, rec(1795332619473, 43, 134, 290, "127.0.0.1", "j\u00fcrgen", "127.0.0.1", O, "HTTP", "", "", 200, "127.0.0.1", "", LP)),
    (7, rec(1795332619517, 47, 134, 290, "127.0.0.1", "pct%user", "127.0.0.1", O, "HTTP", "", "", 200, "127.0.0.1", "", LP)),
    (8, rec(1795332619565, 1, 3154, 481, "127.0.0.1", "alice", "127.0.0.1", O, "HTTP", "", "", 200, "127.0.0.1", "", LP)),
    (9, rec(1795332619566, 0, 134, 3554, "127.0.0.1", "alice", "127.0.0.1", O, "HTTP", "auth_failed", "TCP_DENIED/407 ERR_CACHE_ACCESS_DENIED/-", 407, "", "", LP)),
    (10, rec(1795332619566, 0, 89, 3554, "127.0.0.1", "", "127.0.0.1", O, "HTTP", "auth_failed", "TCP_DENIED/407 ERR_CACHE_ACCESS_DENIED/-", 407, "", "", LP)),
    (11, rec(1795332619567, 0, 125, 3464, "127.0.0.1", "alice", "www.blocked.test", 80, "HTTP", "forbidden_host", "TCP_DENIED/403 ERR_ACCESS_DENIED/-", 403, "", "", LP)),
    (12, rec(1795332619567, 0, 123, 3481, "127.0.0.1", "alice", "127.0.0.1", CL, "HTTP", "connection_refused", "TCP_MISS/503 ERR_CONNECT_FAIL/WITH_SERVER", 503, "", "", LP)),
    # squid 5.7 logs a name that does not resolve as ERR_READ_ERROR with HIER_NONE
    (13, rec(1795332619568, 0, 129, 3457, "127.0.0.1", "alice", "nosuchhost.invalid", 80, "HTTP", "dns_failure", "TCP_MISS/502 ERR_READ_ERROR/WITH_SERVER", 502, "", "", LP)),
    (14, rec(1795332620068 - 500, 500, 132, 0, "127.0.0.1", "alice", "127.0.0.1", O, "HTTP", "client_aborted", "TCP_MISS_ABORTED/000 ERR_CLIENT_GONE/errno=104", 0, "127.0.0.1", "", LP)),
    (15, rec(1795332620069, 0, 8, 3428, "127.0.0.1", "", "", 0, "HTTP", "invalid_request", "NONE_NONE/400", 400, "", "", LP)),
    (16, rec(1795332620070, 0, 5104, 5039, "127.0.0.1", "user-1002", "127.0.0.1", EC, "HTTPS", "", "", 200, "127.0.0.1", "", LP)),
    (17, rec(1795332620071, 0, 100, 0, "127.0.0.1", "alice", "127.0.0.1", CL, "HTTPS", "connection_refused", "NONE_NONE/503 ERR_CONNECT_FAIL/errno=111", 503, "", "", LP)),
    (18, rec(1795332620071, 0, 114, 0, "127.0.0.1", "alice", "nosuchhost.invalid", 443, "HTTPS", "dns_failure", "NONE_NONE/500 ERR_CANNOT_FORWARD/-", 500, "", "", LP)),
    (19, rec(1795332620071, 0, 104, 3514, "127.0.0.1", "alice", "127.0.0.1", EC, "HTTPS", "auth_failed", "TCP_DENIED/407 ERR_CACHE_ACCESS_DENIED/-", 407, "", "", LP)),
    (20, rec(1795332620079 - 7, 7, 139, 2000285, "127.0.0.1", "bob smith", "127.0.0.1", O, "HTTP", "", "", 200, "127.0.0.1", "", LP)),
]

# native format: no bytes_sent, ip_out or listen_port; errors inferred without %err_code
NAT_TABLE: list[tuple[int, Record | None]] = [
    (0, None),
    (1, rec(1795332619294, 43, 0, 1282, "127.0.0.1", "alice", "127.0.0.1", O, "HTTP", "", "", 200, "", "", 0)),
    (4, rec(1795332619385, 43, 0, 400, "127.0.0.1", "alice", "127.0.0.1", O, "HTTP", "", "", 500, "", "", 0)),
    (5, rec(1795332619429, 43, 0, 395, "127.0.0.1", "bob smith", "127.0.0.1", O, "HTTP", "", "", 200, "", "", 0)),
    (6, rec(1795332619473, 43, 0, 290, "127.0.0.1", "j\u00fcrgen", "127.0.0.1", O, "HTTP", "", "", 200, "", "", 0)),
    (9, rec(1795332619566, 0, 0, 3554, "127.0.0.1", "alice", "127.0.0.1", O, "HTTP", "auth_failed", "TCP_DENIED/407", 407, "", "", 0)),
    (11, rec(1795332619567, 0, 0, 3464, "127.0.0.1", "alice", "www.blocked.test", 80, "HTTP", "forbidden_host", "TCP_DENIED/403", 403, "", "", 0)),
    # documented limit: a plain-HTTP connect failure looks like the target's own 503
    (12, rec(1795332619567, 0, 0, 3481, "127.0.0.1", "alice", "127.0.0.1", CL, "HTTP", "", "", 503, "", "", 0)),
    (13, rec(1795332619568, 0, 0, 3457, "127.0.0.1", "alice", "nosuchhost.invalid", 80, "HTTP", "dns_failure", "TCP_MISS/502", 502, "", "", 0)),
    (14, rec(1795332619568, 500, 0, 0, "127.0.0.1", "alice", "127.0.0.1", O, "HTTP", "client_aborted", "TCP_MISS_ABORTED/000", 0, "", "", 0)),
    (15, rec(1795332620069, 0, 0, 3428, "127.0.0.1", "", "", 0, "HTTP", "invalid_request", "NONE_NONE/400", 400, "", "", 0)),
    (16, rec(1795332620070, 0, 0, 5039, "127.0.0.1", "user-1002", "127.0.0.1", EC, "HTTPS", "", "", 200, "", "", 0)),
    (17, rec(1795332620071, 0, 0, 0, "127.0.0.1", "alice", "127.0.0.1", CL, "HTTPS", "upstream_error", "NONE_NONE/503", 503, "", "", 0)),
    (18, rec(1795332620071, 0, 0, 0, "127.0.0.1", "alice", "nosuchhost.invalid", 443, "HTTPS", "dns_failure", "NONE_NONE/500", 500, "", "", 0)),
]

# written by hand after squid's documentation (cases the capture could not produce)
HAND_TABLE: list[tuple[bytes, Record | None]] = [
    # a parent peer, HTTPS URL (ssl-bump), several spaces in the user name
    (b"1700000000.500   1500 10.0.0.9 TCP_MISS/200 100 GET https://Example.COM./a?b=c "
     b"Anna  Maria von X FIRSTUP_PARENT/10.1.1.1 text/html 50 192.0.2.7 3128 -/-",
     rec(1699999999000, 1500, 50, 100, "10.0.0.9", "Anna Maria von X", "example.com", 443, "HTTP", "", "", 200, "192.0.2.7", "10.1.1.1", 3128)),
    # a cached copy of the target's 404 has HIER_NONE but is still the target's status
    (b"1700000000.000      1 10.0.0.9 TCP_HIT/404 300 GET http://example.com/x u HIER_NONE/- text/html",
     rec(1699999999999, 1, 0, 300, "10.0.0.9", "u", "example.com", 80, "HTTP", "", "", 404, "", "", 0)),
    (b"1700000000.000  30000 2001:db8::5 TCP_MISS/504 300 GET http://example.com/ u HIER_NONE/- text/html",
     rec(1699999970000, 30000, 0, 300, "2001:db8::5", "u", "example.com", 80, "HTTP", "timeout", "TCP_MISS/504", 504, "", "", 0)),
    (b"1700000000.000  70000 10.0.0.9 TCP_TUNNEL/200 9000 CONNECT [2001:db8::1]:8443 u HIER_DIRECT/2001:db8::1 - 800 2001:db8::2 3128 -/-",
     rec(1699999930000, 70000, 800, 9000, "10.0.0.9", "u", "2001:db8::1", 8443, "HTTPS", "", "", 200, "2001:db8::2", "", 3128)),
    (b"1700000000.000      5 10.0.0.9 TCP_MISS/503 300 GET http://a.example/ u HIER_NONE/- text/html 90 - 3128 ERR_DNS_FAIL/-",
     rec(1699999999995, 5, 90, 300, "10.0.0.9", "u", "a.example", 80, "HTTP", "dns_failure", "TCP_MISS/503 ERR_DNS_FAIL/-", 503, "", "", 3128)),
    (b"1700000000.000  60000 10.0.0.9 NONE_NONE/503 0 CONNECT b.example:443 u HIER_DIRECT/192.0.2.1 - 90 0.0.0.0 3128 ERR_CONNECT_FAIL/errno=110",
     rec(1699999940000, 60000, 90, 0, "10.0.0.9", "u", "b.example", 443, "HTTPS", "timeout", "NONE_NONE/503 ERR_CONNECT_FAIL/errno=110", 503, "", "", 3128)),
    # an err_code nobody mapped is kept, not dropped
    (b"1700000000.000      5 10.0.0.9 TCP_MISS/500 300 GET http://a.example/ u HIER_DIRECT/192.0.2.1 text/html 90 - 3128 ERR_NEW_THING/some=detail",
     rec(1699999999995, 5, 90, 300, "10.0.0.9", "u", "a.example", 80, "HTTP", "other:ERR_NEW_THING/some=detail", "TCP_MISS/500 ERR_NEW_THING/some=detail", 500, "", "", 3128)),
    # native line with a user name of three words: 12 fields, hierarchy at index 10
    (b"1700000000.000      5 10.0.0.9 TCP_MISS/200 300 GET http://a.example/ a b c HIER_DIRECT/192.0.2.1 text/html",
     rec(1699999999995, 5, 0, 300, "10.0.0.9", "a b c", "a.example", 80, "HTTP", "", "", 200, "", "", 0)),
    # native line whose user has four words: 14 fields, as many as an extended line
    (b"1700000000.000      5 10.0.0.9 TCP_MISS/200 300 GET http://a.example/ a b c d HIER_DIRECT/192.0.2.1 text/html",
     rec(1699999999995, 5, 0, 300, "10.0.0.9", "a b c d", "a.example", 80, "HTTP", "", "", 200, "", "", 0)),
]


@pytest.fixture
def parser():  # type: ignore[no-untyped-def]
    return core_parser("squid", timezone.utc)


@pytest.mark.parametrize("idx,expected", EXT_TABLE, ids=[f"ext{i}" for i, _ in EXT_TABLE])
def test_extended_real_lines(parser, idx: int, expected: Record | None) -> None:  # type: ignore[no-untyped-def]
    assert parser.parse(EXT[idx]) == expected
    assert parser.parse(EXT[idx] + b"\r") == expected
    assert parser.parse(EXT[idx] + b" trailing extra fields") == expected


@pytest.mark.parametrize("idx,expected", NAT_TABLE, ids=[f"nat{i}" for i, _ in NAT_TABLE])
def test_native_real_lines(parser, idx: int, expected: Record | None) -> None:  # type: ignore[no-untyped-def]
    assert parser.parse(NAT[idx]) == expected
    assert parser.parse(NAT[idx] + b"\r") == expected
    assert parser.parse(NAT[idx] + b" extra") == expected


@pytest.mark.parametrize("line,expected", HAND_TABLE)
def test_hand_written_lines(parser, line: bytes, expected: Record) -> None:  # type: ignore[no-untyped-def]
    assert parser.parse(line) == expected
    assert parser.parse(line + b"\r") == expected


def test_every_real_line_parses(parser) -> None:  # type: ignore[no-untyped-def]
    assert len(EXT) == len(NAT) == 21
    assert [parser.parse(x) is None for x in EXT].count(True) == 1
    # both formats agree on everything the native one logs
    for e, n in zip(EXT[1:], NAT[1:]):
        re_, rn = parser.parse(e), parser.parse(n)
        assert (re_.start_ms, re_.bytes_received, re_.user, re_.host, re_.port) == (
            rn.start_ms, rn.bytes_received, rn.user, rn.host, rn.port)


@pytest.mark.parametrize("line,reason", [
    (b"", "too_few_fields"),
    (b"1795332619.337     43 127.0.0.1 TCP_MISS/200 1282 GET", "too_few_fields"),
    (b"1795332619.337     43 127.0.0.1 TCP_MISS/200 1282 GET http://a/ alice xHIER_DIRECT/1 text/plain", "no_hierarchy_field"),
    (b"17953326x9.337     43 127.0.0.1 TCP_MISS/200 1282 GET http://a/ alice HIER_DIRECT/1 text/plain", "bad_number"),
    (b"1795332619.337     4x 127.0.0.1 TCP_MISS/200 1282 GET http://a/ alice HIER_DIRECT/1 text/plain", "bad_number"),
    (b"1795332619.337     43 127.0.0.1 TCP_MISS/2x0 1282 GET http://a/ alice HIER_DIRECT/1 text/plain", "bad_status"),
])
def test_bad_lines(parser, line: bytes, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParseError) as err:
        parser.parse(line)
    assert err.value.reason == reason


def test_truncated_real_lines_are_errors(parser) -> None:  # type: ignore[no-untyped-def]
    line = EXT[1]
    for cut in range(1, 60):
        with pytest.raises(ParseError):
            parser.parse(line[:cut])


def test_non_utf8_bytes_are_replaced(parser) -> None:  # type: ignore[no-untyped-def]
    line = (b"1700000000.000      5 10.0.0.9 TCP_MISS/200 300 GET http://a\xff.example/\xfe "
            b"us\xe9r%ff HIER_DIRECT/192.0.2.1 text/html")
    r = parser.parse(line)
    assert (r.user, r.host) == ("us\ufffdr\ufffd", "a\ufffd.example")


@pytest.mark.parametrize("prefix", [
    b"<166>Nov 22 07:30:19 proxyhost squid[1234]: ",
    b"Nov 22 07:30:19 proxyhost (squid-1): ",
])
def test_syslog_framed_lines(parser, prefix: bytes) -> None:  # type: ignore[no-untyped-def]
    assert parser.parse(prefix + EXT[16]) == EXT_TABLE[16][1]
    assert parser.parse(prefix + NAT[5]) == dict(NAT_TABLE)[5]


# -- the activity-only fields (parsers_table.ACTIVITY_PARTS): start_us_rem, target_ip,
# proxy_port, listen_address, handshake_ms, tunnel_ms. The capture predates `%>la %<lp`:
# only %<a of a direct fetch (the target's IP) is there; squid logs no handshake/tunnel.
EXT_PARTS: dict[int, tuple[object, ...]] = {
    i: (0, "127.0.0.1" if i in (1, 2, 3, 4, 5, 6, 7, 8, 12, 14, 16, 17, 20) else "", 0, "", None, None)
    for i in range(1, 21)
}


@pytest.mark.parametrize("idx", sorted(EXT_PARTS))
def test_activity_parts_of_real_lines(idx: int) -> None:
    p = make_parser("squid", timezone.utc)
    for line in (EXT[idx], EXT[idx] + b" trailing extra fields", NAT[idx]):
        assert parts(p.parse(line)) == EXT_PARTS[idx], line


# the current `proxymeter` format: + %>la %<lp (hand-written after squid's documentation)
NEW_FORMAT: list[tuple[bytes, tuple[object, ...]]] = [
    (b"1700000000.000  70000 10.0.0.9 TCP_TUNNEL/200 9000 CONNECT [2001:db8::1]:8443 u HIER_DIRECT/2001:db8::1 - "
     b"800 2001:db8::2 3128 -/- 2001:db8::3 41000", (0, "2001:db8::1", 41000, "2001:db8::3", None, None)),
    # a parent peer's address is not the target's
    (b"1700000000.500   1500 10.0.0.9 TCP_MISS/200 100 GET https://Example.COM./a?b=c Anna  Maria "
     b"FIRSTUP_PARENT/10.1.1.1 text/html 50 192.0.2.7 3128 -/- 192.0.2.1 5555", (0, "", 5555, "192.0.2.1", None, None)),
    # denied before any server connection: "-" for the outgoing port
    (b"1700000000.000      0 10.0.0.9 TCP_DENIED/403 3464 GET http://www.blocked.test/ u HIER_NONE/- text/html "
     b"125 - 3128 ERR_ACCESS_DENIED/- 127.0.0.1 -", (0, "", 0, "127.0.0.1", None, None)),
    (b"1700000000.000      0 10.0.0.9 NONE_NONE/503 0 CONNECT 127.0.0.1:52003 u HIER_DIRECT/127.0.0.1 - 100 0.0.0.0 "
     b"3128 ERR_CONNECT_FAIL/errno=111 127.0.0.1 0", (0, "127.0.0.1", 0, "127.0.0.1", None, None)),
]


@pytest.mark.parametrize("line,want", NEW_FORMAT)
def test_activity_parts_of_the_current_format(line: bytes, want: tuple[object, ...]) -> None:
    p = make_parser("squid", timezone.utc)
    got = p.parse(line)
    assert parts(got) == want
    assert p.parse(line + b" trailing extra fields") == got
    assert p.parse(line + b"\r") == got
    # everything else is what the line without the two fields gives
    older = line.rsplit(b" ", 2)[0]
    assert core(got) == core(p.parse(older))
