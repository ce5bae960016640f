"""Dante tests: real danted 1.4.2 lines, open/close pairing, fallback start, errors."""

from __future__ import annotations

from datetime import timezone

import pytest

from agent.parsers import make_parser
from agent.parsers.dante import DanteParser
from agent.record import ParseError, Record
from parsers_table import core_parser, fixture_lines, parts, rec

LINES = fixture_lines("dante", "danted.log")
L = "127.0.0.1"
ECHO, HTTP, CLOSED, BLOCKED, LP = 45891, 40043, 58815, 56569, 38119

# expected result of each line when the whole file is fed in order
TABLE: list[Record | None] = [
    None,  # "running" notice
    None,  # tcp/accept of the wait-for-port probe
    None,  # open 267.348448
    rec(1795333267348, 1795333267349 - 1795333267348, 5000, 5000, L, "", L, ECHO, "SOCKS", "", "", 0, L, "", LP),
    None,  # open 267.350147
    # held ~1.5 s; dante says "1s", the open line gives the exact start
    rec(1795333267350, 1795333268851 - 1795333267350, 300, 300, L, "", L, ECHO, "SOCKS", "", "", 0, L, "", LP),
    # refused: no open line was logged; duration 0s
    rec(1795333268852, 0, 0, 0, L, "", L, CLOSED, "SOCKS", "connection_refused", "remote peer error (Connection refused)", 0, L, "", LP),
    None,  # tcp/accept view of the same refused session
    rec(1795333268852, 0, 0, 0, L, "", L, BLOCKED, "SOCKS", "forbidden_host", "block", 0, "", "", LP),
    rec(1795333268854, 0, 0, 0, L, "", "nosuchhost.invalid", 0, "SOCKS", "dns_failure",
        'block: could not resolve hostname "nosuchhost.invalid": Name or service not known for IPv4 address', 0, "", "", LP),
    None,  # tcp/accept view of the DNS failure
    None,  # open 268.860572
    # HTTP GET through the tunnel: 27 bytes up, 3140 down
    rec(1795333268860, 1795333268864 - 1795333268860, 27, 3140, L, "", L, HTTP, "SOCKS", "", "", 0, L, "", LP),
    None,  # open 268.865004
    rec(1795333268865, 1795333268868 - 1795333268865, 1000, 1000, L, "", L, ECHO, "SOCKS", "client_aborted", "local client error (Connection reset by peer)", 0, L, "", LP),
    None,
    None,  # sigterm notice
    None,  # shutting down
]


def test_whole_file_in_order() -> None:
    p = core_parser("dante", timezone.utc)
    got = [p.parse(x) for x in LINES]
    assert got == TABLE
    assert p.open_sessions == 0  # type: ignore[attr-defined]


def test_with_carriage_returns() -> None:
    p = core_parser("dante", timezone.utc)
    assert [p.parse(x + b"\r") for x in LINES] == TABLE


def test_close_without_open_uses_logged_whole_seconds() -> None:
    p = core_parser("dante", timezone.utc)
    # the 1.5 s tunnel's close line alone: end 268.851, "Session duration: 1s"
    r = p.parse(LINES[5])
    assert r is not None
    assert (r.start_ms, r.duration_ms) == (1795333268851 - 1000, 1000)


def test_interleaved_sessions_pair_by_address() -> None:
    p = core_parser("dante", timezone.utc)
    a_open, a_close = LINES[2], LINES[3]
    b_open, b_close = LINES[4], LINES[5]
    assert p.parse(a_open) is None and p.parse(b_open) is None
    rb, ra = p.parse(b_close), p.parse(a_close)
    assert (rb.start_ms, ra.start_ms) == (1795333267350, 1795333267348)  # type: ignore[union-attr]
    # the pair was consumed: the same close again falls back to its own duration
    assert p.parse(a_close).start_ms == 1795333267349  # type: ignore[union-attr]


def test_remembered_opens_are_bounded() -> None:
    p = DanteParser(max_open=1)
    p.parse(LINES[2])
    p.parse(LINES[4])  # forgets LINES[2]
    assert (p.open_sessions, p.forgotten) == (1, 1)
    assert p.parse(LINES[3]).start_ms == 1795333267349  # type: ignore[union-attr]  # fallback: 0s
    assert p.parse(LINES[5]).start_ms == 1795333267350  # type: ignore[union-attr]


def _open_line(i: int) -> bytes:
    """Session i's open line, at 1795333267 s + i ms."""
    return (b"Nov 22 07:41:07 (1795333267.%06d) danted[1]: info: pass(2): tcp/connect [: "
            b"10.0.0.%d.40000 127.0.0.1.1080 -> 127.0.0.1.36221 192.0.2.1.443" % (i * 1000, i))


def _close_line(i: int) -> bytes:
    """Session i's close line, at 1795333269 s + i ms (dante says 1 s; it was 2)."""
    return (b"Nov 22 07:41:09 (1795333269.%06d) danted[1]: info: pass(2): tcp/connect ]: 100 -> "
            b"10.0.0.%d.40000 127.0.0.1.1080 -> 50, 50 -> 127.0.0.1.36221 192.0.2.1.443 -> 100: "
            b"local client closed.  Session duration: 1s" % (i * 1000, i))


def test_max_open_sessions_forgets_the_oldest_and_carries_over_to_a_new_parser() -> None:
    """max_open (the source's max_open_sessions) = 3: of 5 open lines the 2 oldest are
    forgotten (their closes start at end - 1 s); a parser built on a reload with 2 takes
    the 3 it held over, forgetting the oldest of them."""
    p = make_parser("dante", timezone.utc, max_open_sessions=3)
    assert isinstance(p, DanteParser) and p.max_open == 3
    assert [p.parse(_open_line(i)) for i in range(1, 6)] == [None] * 5
    assert (p.open_sessions, p.forgotten) == (3, 2)
    fresh = DanteParser(max_open=2)
    fresh.take_open_sessions(p)
    assert (fresh.open_sessions, fresh.forgotten) == (2, 1)
    starts = [r.start_ms for r in (fresh.parse(_close_line(i)) for i in range(1, 6)) if r is not None]
    fallback = [1795333269000 + i - 1000 for i in range(1, 4)]  # sessions 1, 2, 3: forgotten
    exact = [1795333267000 + i for i in range(4, 6)]  # sessions 4, 5: paired with their open line
    assert starts == fallback + exact
    with pytest.raises(ValueError, match="max_open must be an integer >= 1, got 0"):
        DanteParser(max_open=0)


HAND = [
    # written after dante's documentation: authenticated user, host name target, timeout
    (b"Nov 22 10:00:05 (1700000005.250000) danted[1]: info: pass(1): tcp/connect ]: 9000 -> username%user-1001-order-7@10.0.0.1.5000 10.0.0.2.1080 -> 700, 700 -> 10.0.0.2.40000 www.Example.com.443 -> 9000: remote peer closed.  Session duration: 5s",
     rec(1700000000250, 5000, 700, 9000, "10.0.0.1", "user-1001-order-7", "www.example.com", 443, "SOCKS", "", "", 0, "10.0.0.2", "", 1080)),
    (b"Nov 22 10:00:05 (1700000005.250000) danted[1]: info: pass(1): tcp/connect ]: 0 -> username%bob\\040smith@10.0.0.1.5000 10.0.0.2.1080 -> 0, 0 -> 10.0.0.2.40000 10.9.9.9.22 -> 0: remote peer error (Connection timed out).  Session duration: 30s",
     rec(1699999975250, 30000, 0, 0, "10.0.0.1", "bob smith", "10.9.9.9", 22, "SOCKS", "timeout", "remote peer error (Connection timed out)", 0, "10.0.0.2", "", 1080)),
    (b"Nov 22 10:00:05 (1700000005.250000) danted[1]: info: pass(1): tcp/connect ]: 0 -> 10.0.0.1.5000 10.0.0.2.1080 -> 0, 0 -> 10.0.0.2.40000 10.9.9.9.22 -> 0: remote peer error (No route to host).  Session duration: 3s",
     rec(1700000002250, 3000, 0, 0, "10.0.0.1", "", "10.9.9.9", 22, "SOCKS", "upstream_error", "remote peer error (No route to host)", 0, "10.0.0.2", "", 1080)),
    (b"Nov 22 10:00:05 (1700000005.250000) danted[1]: info: pass(1): tcp/connect ]: 0 -> 10.0.0.1.5000 10.0.0.2.1080 -> 0, 0 -> 10.0.0.2.40000 10.9.9.9.22 -> 0: something new happened.  Session duration: 0s",
     rec(1700000005250, 0, 0, 0, "10.0.0.1", "", "10.9.9.9", 22, "SOCKS", "other:something_new_happened", "something new happened", 0, "10.0.0.2", "", 1080)),
]


@pytest.mark.parametrize("line,expected", HAND)
def test_hand_written_lines(line: bytes, expected: Record) -> None:
    assert core_parser("dante", timezone.utc).parse(line) == expected


@pytest.mark.parametrize("line,reason", [
    (b"garbage", "no_epoch_timestamp"),
    (LINES[3][:30], "no_epoch_timestamp"),
    (LINES[3].replace(b"(1795333267.349814)", b"(17953x3267.349814)"), "bad_timestamp"),
    (LINES[3][:LINES[3].index(b" -> 5000, ")], "too_few_fields"),
    (LINES[2][:LINES[2].index(b"[: ") + 5], "too_few_fields"),
    (LINES[8].replace(b"127.0.0.1.56569", b"127.0.0.1.x"), "bad_address"),
])
def test_bad_lines(line: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        core_parser("dante", timezone.utc).parse(line)
    assert err.value.reason == reason


def test_trailing_extra_data_changes_nothing_but_free_text() -> None:
    p = core_parser("dante", timezone.utc)
    got = [p.parse(x + b" trailing extra") for x in LINES]
    for g, exp in zip(got, TABLE):
        if exp is None:
            assert g is None
        else:
            assert g is not None
            g.raw_error = exp.raw_error = ""
            assert g == exp


# Real danted 1.4.2 lines with `socksmethod: username` (captured on loopback, echo port
# 35229, dante on 54615): a user name with a space is written raw, and a failed login
# is logged only as a blocked tcp/accept line, naming the user in the message.
AUTH_LINES = [
    b"Dec  1 20:04:22 (1796155462.174727) danted[8160]: info: pass(2): tcp/connect [: username%user-102 alt@127.0.0.1.38306 127.0.0.1.54615 -> 127.0.0.1.42323 127.0.0.1.35229",
    b"Dec  1 20:04:22 (1796155462.175414) danted[8160]: info: pass(2): tcp/connect ]: 100 -> username%user-102 alt@127.0.0.1.38306 127.0.0.1.54615 -> 100, 100 -> 127.0.0.1.42323 127.0.0.1.35229 -> 100: local client closed.  Session duration: 0s",
    b'Dec  1 20:04:22 (1796155462.178924) danted[8143]: info: block(1): tcp/accept ]: 127.0.0.1.38318 127.0.0.1.54615: error after reading 19 bytes in 0 seconds: system password authentication failed for user "user-105"',
    b"Dec  1 20:04:22 (1796155462.180843) danted[8143]: info: block(1): tcp/accept ]: 127.0.0.1.38334 127.0.0.1.54615: error after reading 21 bytes in 0 seconds: could not access user \"nobodyhere\"'s records in the system password file: no system error",
    b"Dec  1 20:04:22 (1796155462.188043) danted[8144]: info: block(1): tcp/connect ]: username%guest@127.0.0.1.38354 127.0.0.1.54615 -> 0.0.0.0.0 127.0.0.1.46527",
    b'Dec  1 20:04:22 (1796155462.192817) danted[8144]: info: block(1): tcp/connect ]: username%guest@127.0.0.1.38370 127.0.0.1.54615: could not resolve hostname "nosuch.invalid": Name or service not known for IPv4 address',
    b'Dec  1 20:04:22 (1796155462.193388) danted[8144]: info: block(1): tcp/accept ]: 127.0.0.1.38370 127.0.0.1.54615: request was not performed due to error: could not resolve hostname "nosuch.invalid": Name or service not known for IPv4 address',
]
AUTH_TABLE: list[Record | None] = [
    None,  # open line of the next session
    rec(1796155462174, 1, 100, 100, L, "user-102 alt", L, 35229, "SOCKS", "", "", 0, L, "", 54615),
    rec(1796155462178, 0, 0, 0, L, "user-105", "", 0, "SOCKS", "auth_failed",
        'block: system password authentication failed for user "user-105"', 0, "", "", 54615),
    rec(1796155462180, 0, 0, 0, L, "nobodyhere", "", 0, "SOCKS", "auth_failed",
        "block: could not access user \"nobodyhere\"'s records in the system password file: no system error",
        0, "", "", 54615),
    rec(1796155462188, 0, 0, 0, L, "guest", L, 46527, "SOCKS", "forbidden_host", "block", 0, "", "", 54615),
    rec(1796155462192, 0, 0, 0, L, "guest", "nosuch.invalid", 0, "SOCKS", "dns_failure",
        'block: could not resolve hostname "nosuch.invalid": Name or service not known for IPv4 address',
        0, "", "", 54615),
    None,  # the tcp/accept view of the DNS failure: not a login failure, not counted twice
]


def test_authenticated_sessions_space_in_name_and_failed_logins() -> None:
    p = core_parser("dante", timezone.utc)
    assert [p.parse(x) for x in AUTH_LINES] == AUTH_TABLE
    assert p.open_sessions == 0  # type: ignore[attr-defined]


def test_space_in_name_pairs_open_and_close() -> None:
    p = core_parser("dante", timezone.utc)
    # without its open line the close falls back to "Session duration: 0s"
    alone = p.parse(AUTH_LINES[1])
    assert alone is not None and (alone.user, alone.start_ms) == ("user-102 alt", 1796155462175)
    # an "@" inside the name: the address is what follows the last "@" before it
    line = AUTH_LINES[1].replace(b"user-102 alt@", b"a@b c@")
    r = p.parse(line)
    assert r is not None and (r.user, r.client_ip, r.listen_port) == ("a@b c", L, 54615)


# -- the activity-only fields (parsers_table.ACTIVITY_PARTS): start_us_rem, target_ip,
# proxy_port, listen_address, handshake_ms, tunnel_ms, read off the capture by hand: the
# open line's microseconds, the target when it is an IP, PROXY_OUT's port (0.0.0.0.0:
# none), PROXY_IN's address; a session paired with its open line was a tunnel throughout.
WHOLE_FILE_PARTS: dict[int, tuple[object, ...]] = {
    3: (448, L, 36221, L, None, 1),
    5: (147, L, 47473, L, None, 1501),
    6: (0, L, 50651, L, None, None),  # refused: no open line; the attempt's port
    8: (0, L, 0, L, None, None),  # blocked: never connected
    9: (0, "", 0, L, None, None),  # a name that did not resolve
    12: (572, L, 36479, L, None, 4),
    14: (4, L, 38293, L, None, 3),
}


def test_activity_parts_of_the_whole_file() -> None:
    p = make_parser("dante", timezone.utc)
    got = {i: parts(r) for i, r in enumerate(p.parse(x) for x in LINES) if r is not None}
    assert got == WHOLE_FILE_PARTS


def test_activity_parts_of_a_close_without_its_open_line() -> None:
    p = make_parser("dante", timezone.utc)
    assert parts(p.parse(LINES[5])) == (0, L, 47473, L, None, None)


def test_activity_parts_of_authenticated_lines() -> None:
    """The session of a user with a space (paired: 174727 µs), the failed logins (the
    stamp's µs; no target), the blocked and the unresolved target."""
    p = make_parser("dante", timezone.utc)
    got = [parts(p.parse(x)) for x in AUTH_LINES]
    assert got == [None, (727, L, 42323, L, None, 1), (924, "", 0, L, None, None), (843, "", 0, L, None, None),
                   (0, L, 0, L, None, None), (0, "", 0, L, None, None), None]
