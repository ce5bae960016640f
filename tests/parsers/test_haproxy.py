"""HAProxy table tests: real httplog/tcplog lines from haproxy 2.6, read by hand."""

from __future__ import annotations

import calendar
from dataclasses import replace
from datetime import timezone
from zoneinfo import ZoneInfo

import pytest

from agent.parsers import make_parser
from agent.record import ParseError, Record
from parsers_table import core, core_parser, fixture_lines, parts, rec

RAW = fixture_lines("haproxy", "stdout-raw.log")
SYS = fixture_lines("haproxy", "syslog-rfc3164.log")
O = 41195  # origin port in the capture
L = "127.0.0.1"


def T(h: int, m: int, s: int, ms: int) -> int:
    """22 Nov 2026 h:m:s.ms, the capture ran with tz=UTC."""
    return calendar.timegm((2026, 11, 22, h, m, s)) * 1000 + ms


TABLE: list[Record] = [
    rec(T(7, 36, 56, 568), 0, 0, 0, L, "", "", 0, "HTTPS", "client_aborted", "CC 0", 0, "", "closed_tcp/c1", 0),
    rec(T(7, 36, 56, 569), 1, 0, 1139, L, "", L, O, "HTTP", "", "", 200, "", "origin/o1", 0),
    rec(T(7, 36, 56, 570), 0, 0, 136, L, "", "", 0, "HTTP", "", "", 200, "", "origin/o1", 0),
    rec(T(7, 36, 56, 571), 0, 0, 245, L, "", L, O, "HTTP", "", "", 404, "", "origin/o1", 0),
    rec(T(7, 36, 56, 572), 3, 0, 257, L, "", L, O, "HTTP", "", "", 500, "", "origin/o1", 0),
    rec(T(7, 36, 56, 576), 2, 0, 338, L, "", L, O, "HTTP", "", "", 200, "", "origin/o1", 0),
    rec(T(7, 36, 56, 579), 0, 0, 215, L, "", L, O, "HTTP", "auth_failed", "PR-- 407", 407, "", "", 0),
    rec(T(7, 36, 56, 579), 0, 0, 192, L, "", L, O, "HTTP", "forbidden_host", "PR-- 403", 403, "", "", 0),
    rec(T(7, 36, 56, 580), 3004, 0, 217, L, "", L, O, "HTTP", "connection_refused", "SC-- 503", 503, "", "closed/c1", 0),
    rec(T(7, 36, 59, 588), 0, 0, 217, L, "", L, O, "HTTP", "upstream_error", "SC-- 503", 503, "", "", 0),
    rec(T(7, 36, 59, 588), 1502, 0, 198, L, "", L, O, "HTTP", "timeout", "sH-- 504", 504, "", "origin/o1", 0),
    rec(T(7, 37, 1, 591), 0, 0, 0, L, "", "", 0, "HTTP", "invalid_request", "PR-- 400", 400, "", "", 0),
    rec(T(7, 37, 1, 592), 4, 120, 1139, L, "alice", L, O, "HTTP", "", "", 200, L, "origin/o1", 0),
    # relative URI: the target comes from %si:%sp
    rec(T(7, 37, 1, 596), 3, 105, 136, L, "user-1001-order-7", L, O, "HTTP", "", "", 200, L, "origin/o1", 0),
    rec(T(7, 37, 1, 601), 3, 125, 245, L, "bob smith", L, O, "HTTP", "", "", 404, L, "origin/o1", 0),
    rec(T(7, 37, 1, 605), 2, 121, 257, L, "alice", L, O, "HTTP", "", "", 500, L, "origin/o1", 0),
    rec(T(7, 37, 1, 609), 3, 3138, 338, L, "alice", L, O, "HTTP", "", "", 200, L, "origin/o1", 0),
    rec(T(7, 37, 1, 612), 0, 122, 215, L, "alice", L, O, "HTTP", "auth_failed", "PR-- 407", 407, "", "", 0),
    rec(T(7, 37, 1, 613), 0, 120, 192, L, "alice", L, O, "HTTP", "forbidden_host", "PR-- 403", 403, "", "", 0),
    # logged after later-starting requests: haproxy stamps the start, logs at the end
    rec(T(7, 37, 1, 91), 1501, 0, 198, L, "", L, O, "HTTP", "timeout", "sH-- 504", 504, "", "origin/o1", 0),
    rec(T(7, 37, 1, 613), 3004, 118, 217, L, "alice", L, O, "HTTP", "connection_refused", "SC-- 503", 503, L, "closed/c1", 0),
    rec(T(7, 37, 4, 619), 0, 117, 217, L, "alice", L, O, "HTTP", "upstream_error", "SC-- 503", 503, "", "", 0),
    rec(T(7, 37, 4, 619), 1502, 120, 198, L, "alice", L, O, "HTTP", "timeout", "sH-- 504", 504, L, "origin/o1", 0),
    rec(T(7, 37, 6, 621), 0, 0, 0, L, "", "", 0, "HTTP", "invalid_request", "PR-- 400", 400, "", "", 0),
    rec(T(7, 37, 6, 621), 302, 0, 5000, L, "", "", 0, "HTTPS", "", "", 0, "", "echo/e1", 0),
    rec(T(7, 37, 6, 924), 305, 5000, 5000, L, "", L, 52341, "HTTPS", "", "", 0, L, "echo/e1", 0),
    rec(T(7, 37, 6, 121), 1501, 120, 198, L, "alice", L, O, "HTTP", "timeout", "sH-- 504", 504, L, "origin/o1", 0),
    rec(T(7, 37, 7, 228), 3005, 0, 0, L, "", "", 0, "HTTPS", "connection_refused", "SC 0", 0, "", "closed_tcp/c1", 0),
]


@pytest.mark.parametrize("idx", range(len(TABLE)))
def test_real_lines_plain_and_syslog(idx: int) -> None:
    p = core_parser("haproxy", timezone.utc)
    exp = TABLE[idx]
    assert p.parse(RAW[idx]) == exp
    assert p.parse(SYS[idx]) == exp
    assert p.parse(RAW[idx] + b"\r") == exp
    assert p.parse(SYS[idx] + b"\r") == exp


def test_lines_in_any_order_give_the_same_records() -> None:
    p = core_parser("haproxy", timezone.utc)
    assert [p.parse(x) for x in reversed(RAW)] == list(reversed(TABLE))


TRAILING = [b" {extra}", b" x", b" trailing extra fields", b' "quoted"', b' "a b" c', b" 1 2 3 4 5",
            b" \xff\xfe", b'\t"t"\t']


@pytest.mark.parametrize("extra", TRAILING)
@pytest.mark.parametrize("idx", range(len(TABLE)))
def test_trailing_data_on_every_real_line_is_ignored(idx: int, extra: bytes) -> None:
    # default and recommended formats alike: whatever an operator appends after the last
    # field changes nothing (the user of the recommended httplog stays the quoted field)
    p = core_parser("haproxy", timezone.utc)
    assert p.parse(RAW[idx] + extra) == TABLE[idx]
    assert p.parse(SYS[idx] + extra) == TABLE[idx]


def test_damaged_appended_field_is_an_error_naming_it() -> None:
    line = RAW[12].replace(b'" 120 127.0.0.1 ', b'" 12x 127.0.0.1 ')
    assert line != RAW[12]
    with pytest.raises(ParseError) as err:
        core_parser("haproxy", timezone.utc).parse(line)
    assert (err.value.reason, str(err.value)) == ("bad_number", "bad_number: U=12x")


@pytest.mark.parametrize("zone,offset_h", [("America/New_York", -5), ("Asia/Tokyo", 9), ("Europe/Berlin", 1)])
def test_real_lines_are_read_in_the_source_timezone(zone: str, offset_h: int) -> None:
    # the capture ran in UTC; the same lines from a proxy host in another zone (22 Nov:
    # no DST anywhere here) start offset_h hours earlier in UTC, everything else equal
    p = core_parser("haproxy", ZoneInfo(zone))
    for raw, exp in zip(RAW, TABLE):
        got = p.parse(raw)
        assert got is not None
        assert got.start_ms == exp.start_ms - offset_h * 3600 * 1000
        got.start_ms = exp.start_ms
        assert got == exp


@pytest.mark.parametrize("framing", [
    b"Nov 22 07:37:06 proxyhost haproxy[13021]: ",  # rsyslog file, no <PRI>
    b"<134>Nov 22 07:37:06 proxyhost haproxy[13021]: ",  # with host name
    b"2026-11-22T07:37:06.999+00:00 proxyhost haproxy[13021]: ",  # rsyslog high precision
    b"<134>Nov  2 07:37:06 haproxy: ",  # no pid
])
def test_syslog_framings(framing: bytes) -> None:
    p = core_parser("haproxy", timezone.utc)
    assert p.parse(framing + RAW[25]) == TABLE[25]


def berlin(line_date: bytes) -> int:
    line = b"10.0.0.1:5000 [" + line_date + b"] fe be/s1 0/0/0/0/10 200 100 - - ---- 1/1/0/0/0 0/0 \"GET / HTTP/1.1\""
    r = core_parser("haproxy", ZoneInfo("Europe/Berlin")).parse(line)
    assert r is not None
    return r.start_ms


def test_local_time_across_dst_boundaries() -> None:
    # autumn 2026: 03:00 CEST -> 02:00 CET on 25 Oct
    assert berlin(b"25/Oct/2026:01:59:59.500") == calendar.timegm((2026, 10, 24, 23, 59, 59)) * 1000 + 500
    assert berlin(b"25/Oct/2026:03:00:00.000") == calendar.timegm((2026, 10, 25, 2, 0, 0)) * 1000
    # the repeated hour is ambiguous: the first occurrence (CEST) is taken, as documented
    assert berlin(b"25/Oct/2026:02:30:00.000") == calendar.timegm((2026, 10, 25, 0, 30, 0)) * 1000
    # spring 2026: 02:00 CET -> 03:00 CEST on 29 Mar
    assert berlin(b"29/Mar/2026:01:59:59.999") == calendar.timegm((2026, 3, 29, 0, 59, 59)) * 1000 + 999
    assert berlin(b"29/Mar/2026:03:00:00.000") == calendar.timegm((2026, 3, 29, 1, 0, 0)) * 1000
    # summer and winter lines of the same parser do not share a cached offset
    assert berlin(b"01/Jul/2026:12:00:00.000") == calendar.timegm((2026, 7, 1, 10, 0, 0)) * 1000


HAND = [
    # client aborted during data, IPv6 client, logasap "+" values, captured headers
    (b"2001:db8::1:43000 [22/Nov/2026:10:00:00.000] fe be/s1 5/0/1/10/+250 200 +9000 - - CD-- 1/1/0/0/0 0/0 {www.example.com|Mozilla/5.0 (X11)} \"GET http://www.example.com/a HTTP/1.1\"",
     rec(T(10, 0, 0, 0), 250, 0, 9000, "2001:db8::1", "", "www.example.com", 80, "HTTP", "client_aborted", "CD-- 200", 200, "", "be/s1", 0)),
    (b"10.0.0.1:5000 [22/Nov/2026:10:00:00.000] fe be/s1 0/0/1/-1/30001 502 300 - - SH-- 1/1/0/0/0 0/0 \"CONNECT a.example:443 HTTP/1.1\"",
     rec(T(10, 0, 0, 0), 30001, 0, 300, "10.0.0.1", "", "a.example", 443, "HTTPS", "upstream_error", "SH-- 502", 502, "", "be/s1", 0)),
    (b"10.0.0.1:5000 [22/Nov/2026:10:00:00.000] fe be/s1 0/-1/3000 0 sC 1/1/0/0/3 0/0",
     rec(T(10, 0, 0, 0), 3000, 0, 0, "10.0.0.1", "", "", 0, "HTTPS", "timeout", "sC 0", 0, "", "be/s1", 0)),
    # `http-request auth` is a local reply (LR) with 401
    (b"127.0.0.1:37538 [22/Nov/2026:07:44:20.761] fe_http fe_http/<NOSRV> 0/-1/-1/-1/0 401 255 - - LR-- 10/10/0/0/0 0/0 \"GET http://127.0.0.1:35023/size/10 HTTP/1.1\" 151 - -:- \"user-105\"",
     rec(T(7, 44, 20, 761), 0, 151, 255, "127.0.0.1", "user-105", "127.0.0.1", 35023, "HTTP", "auth_failed", "LR-- 401", 401, "", "", 0)),
    (b"10.0.0.1:5000 [22/Nov/2026:10:00:00.000] fe fe/<STATS> 0/-1/-1/-1/0 200 4000 - - LR-- 1/1/0/0/0 0/0 \"GET /stats HTTP/1.1\"",
     rec(T(10, 0, 0, 0), 0, 0, 4000, "10.0.0.1", "", "", 0, "HTTP", "", "", 200, "", "", 0)),
    (b"10.0.0.1:5000 [22/Nov/2026:10:00:00.000] fe be/s1 0/0/3000 0 ZZ 1/1/0/0/3 0/0",
     rec(T(10, 0, 0, 0), 3000, 0, 0, "10.0.0.1", "", "", 0, "HTTPS", "other:ZZ", "ZZ 0", 0, "", "be/s1", 0)),
    (b"10.0.0.1:5000 [22/Nov/2026:10:00:00.000] fe be/s1 0/0/0/0/5 200 100 - - ---- 1/1/0/0/0 0/0 \"GET /x HTTP/1.1\" 50 - 10.9.9.9:8080 \"j\xc3\xbcrgen \xff\"",
     rec(T(10, 0, 0, 0), 5, 50, 100, "10.0.0.1", "j\u00fcrgen \ufffd", "10.9.9.9", 8080, "HTTP", "", "", 200, "", "be/s1", 0)),
]


@pytest.mark.parametrize("line,expected", HAND)
def test_hand_written_lines(line: bytes, expected: Record) -> None:
    assert core_parser("haproxy", timezone.utc).parse(line) == expected


@pytest.mark.parametrize("line", [
    b"<133>Nov 22 07:36:30 haproxy[13021]: Proxy http_in started.",
    b"[NOTICE]   (13021) : haproxy version is 2.6.12-1+deb12u4",
    b"Server origin/o1 is DOWN, reason: Layer4 connection problem.",
])
def test_notices_complete_no_request(line: bytes) -> None:
    assert core_parser("haproxy", timezone.utc).parse(line) is None


@pytest.mark.parametrize("line,reason", [
    (RAW[1][:40], "bad_timestamp"),
    (RAW[1][:60], "too_few_fields"),
    (RAW[1][:RAW[1].index(b'"') + 5], "unterminated_request"),
    (RAW[24][:70], "too_few_fields"),
    (b"hello world", "not_a_traffic_line"),
    (RAW[1].replace(b"22/Nov/2026", b"22/Foo/2026"), "bad_timestamp"),
    (RAW[1].replace(b"0/0/0/1/1", b"0/0/0/1/x"), "bad_number"),
    # three timers make it a tcplog line, whose connection counters are not where they should be
    (RAW[1].replace(b"0/0/0/1/1", b"0/0/1"), "bad_counters"),
    (RAW[24].replace(b" 3/1/1/1/0 ", b" 3/1/1 "), "bad_counters"),
    (RAW[1].replace(b"0/0/0/1/1", b"0/0"), "bad_timers"),
])
def test_bad_lines(line: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        core_parser("haproxy", timezone.utc).parse(line)
    assert err.value.reason == reason


# -- the activity-only fields (parsers_table.ACTIVITY_PARTS): start_us_rem, target_ip,
# proxy_port, listen_address, handshake_ms, tunnel_ms, read off each captured line by
# hand: %si of the appended fields is the target's IP; the timers give the handshake
# (http %TR+%Tw+%Tc, tcp %Tw+%Tc, None when one is -1) and, in tcp mode, the tunnel (the
# rest of %Tt). The capture predates `%bp %fi:%fp`: no proxy_port, no listen address.
def _p(target_ip: str = "", handshake: int | None = None, tunnel: int | None = None) -> tuple[object, ...]:
    return (0, target_ip, 0, "", handshake, tunnel)


RAW_PARTS: list[tuple[object, ...]] = [
    _p(),  # tcp 1/-1/0: never connected
    _p(handshake=0), _p(handshake=0), _p(handshake=0), _p(handshake=0), _p(handshake=0),
    _p(), _p(),  # 0/-1/-1: haproxy answered itself
    _p(),  # 0/0/-1: refused
    _p(),  # <NOSRV>
    _p(handshake=0),  # 0/0/0/-1/1502: connected, the server timed out
    _p(),  # -1/...: a bad request
    _p(L, 0), _p(L, 0), _p(L, 0), _p(L, 0), _p(L, 0),
    _p(), _p(),  # "-:-"
    _p(handshake=0),
    _p(L),  # refused: the server's address, no handshake
    _p(), _p(L, 0), _p(),
    _p(handshake=1, tunnel=301),  # tcp 1/0/302
    _p(L, 1, 304),  # tcp 1/0/305 with the appended fields
    _p(L, 0),
    _p(),  # tcp 1/-1/3005
]


@pytest.mark.parametrize("idx", range(len(RAW_PARTS)))
def test_activity_parts_of_real_lines(idx: int) -> None:
    assert len(RAW_PARTS) == len(RAW)
    p = make_parser("haproxy", timezone.utc)
    for line in (RAW[idx], SYS[idx], RAW[idx] + b' "extra" data'):
        assert parts(p.parse(line)) == RAW_PARTS[idx], line


# the current recommendation: + %bp %fi:%fp (hand-written after haproxy's documentation)
NEW_FORMAT: list[tuple[bytes, tuple[object, ...], int]] = [
    (b'127.0.0.1:55074 [22/Nov/2026:07:37:01.592] http_pm origin/o1 2/1/3/4/12 200 1139 - - ---- 2/1/1/1/0 0/0 '
     b'"GET http://a.example:8080/x HTTP/1.1" 120 192.0.2.7 198.51.100.4:8080 "alice" 40001 192.0.2.1:3128',
     (0, "198.51.100.4", 40001, "192.0.2.1", 6, None), 3128),
    (b'127.0.0.1:55130 [22/Nov/2026:07:37:01.612] http_pm http_pm/<NOSRV> 0/-1/-1/-1/0 407 215 - - PR-- 2/1/0/0/0 '
     b'0/0 "GET http://127.0.0.1:41195/size/10 HTTP/1.1" 122 - -:- "alice" - 192.0.2.1:3128',
     (0, "", 0, "192.0.2.1", None, None), 3128),
    (b"10.0.0.1:5000 [22/Nov/2026:10:00:00.000] fe be/s1 0/2/3000 700 -- 1/1/0/0/0 0/0 900 192.0.2.7 "
     b"203.0.113.5:443 41000 192.0.2.1:8443", (0, "203.0.113.5", 41000, "192.0.2.1", 2, 2998), 8443),
    # timers rounded one by one: Tw + Tc = 2 > Tt = 1, the handshake is cut to the duration
    (b"10.0.0.1:5000 [22/Nov/2026:10:00:00.000] fe be/s1 1/1/1 700 -- 1/1/0/0/0 0/0 900 192.0.2.7 "
     b"203.0.113.5:443 41000 [2001:db8::1]:8443", (0, "203.0.113.5", 41000, "2001:db8::1", 1, 0), 8443),
    # haproxy writes an IPv6 %fi without brackets, like %ci
    (b"10.0.0.1:5000 [22/Nov/2026:10:00:00.000] fe be/s1 0/0/5 700 -- 1/1/0/0/0 0/0 900 192.0.2.7 "
     b"203.0.113.5:443 41000 2001:db8::1:8443", (0, "203.0.113.5", 41000, "2001:db8::1", 0, 5), 8443),
]


@pytest.mark.parametrize("line,want,listen_port", NEW_FORMAT)
def test_activity_parts_of_the_current_format(line: bytes, want: tuple[object, ...], listen_port: int) -> None:
    p = make_parser("haproxy", timezone.utc)
    got = p.parse(line)
    assert parts(got) == want and got is not None and got.listen_port == listen_port
    assert p.parse(line + b" more data") == got
    assert p.parse(b"<134>Nov 22 10:00:00 host haproxy[12]: " + line) == got
    older = line.rsplit(b" ", 2)[0]  # the earlier recommendation, without %bp %fi:%fp
    assert core(got) == replace(core(p.parse(older)), listen_port=listen_port)  # type: ignore[arg-type]
