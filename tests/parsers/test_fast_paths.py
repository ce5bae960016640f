"""The squid and jsonl parsers' fast paths against their general paths (the oracle).

`parse` takes a shortcut for the common line shape and hands the rest to
`parse_general`; the two must agree on every line: the same Record, or a ParseError
with the same reason and detail. The general path is the one the hand-written table
tests pin down (test_squid.py, test_jsonl.py), so agreement here carries those results
over to the fast path. Lines: the real fixture corpus, logs from the shared generator,
and every line mutated in ways that hit each branch of the shortcut's guards. Each side
runs in its own parser instance, so no memo is shared between them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.parsers.jsonl import JsonlParser
from agent.parsers.squid import SquidParser
from agent.record import ParseError, Record
from bench import loggen
from parsers_table import fixture_lines

START_MS = 1_767_225_600_000


def outcome(fn: Callable[[bytes], Record | None], line: bytes) -> object:
    try:
        return fn(line)
    except ParseError as exc:
        return ("ParseError", exc.reason, exc.detail)


def assert_same(lines: list[bytes], make: Callable[[], SquidParser | JsonlParser]) -> int:
    fast, general = make(), make()
    parsed = 0
    for line in lines:
        want = outcome(general.parse_general, line)
        got = outcome(fast.parse, line)
        assert got == want, line
        parsed += isinstance(want, Record)
    return parsed


def generated(tmp_path: Path, fmt: str, n: int, seed: int) -> list[bytes]:
    path = tmp_path / f"{fmt}.log"
    loggen.write_file(path, n, seed=seed, start_ms=START_MS, rate=500, fmt=fmt, users=30, domains=200)
    return path.read_bytes().splitlines()


# -- squid ------------------------------------------------------------------------------

SQUID_EXTRA = [
    b"1700000000.500   1500 10.0.0.9 TCP_MISS/200 100 GET https://Example.COM./a?b=c "
    b"Anna  Maria von X FIRSTUP_PARENT/10.1.1.1 text/html 50 192.0.2.7 3128 -/-",
    b"1700000000.000      1 10.0.0.9 TCP_HIT/404 300 GET http://example.com/x u HIER_NONE/- text/html",
    b"1700000000.000      5 10.0.0.9 TCP_MISS/200 300 GET http://example.com/x u FIRSTUP_PARENT/p1 text/html",
    b"1700000000.000      5 10.0.0.9 TCP_MISS/200 300 GET http://example.com/x u HIER_DIRECT/- text/html",
    b"1700000000.000      5 10.0.0.9 TCP_MISS/503 300 GET http://example.com/x u HIER_DIRECT/1.2.3.4 "
    b"text/html 10 - 3128 ERR_CONNECT_FAIL/errno=110",
    b"1700000000.000      5 10.0.0.9 TCP_MISS/503 300 GET http://example.com/x u HIER_DIRECT/1.2.3.4 "
    b"text/html 10 0.0.0.0 x ERR_CONNECT_FAIL/errno=113",
    b"1700000000.000      5 10.0.0.9 NONE_NONE/400 300 GET error:invalid-request - HIER_NONE/- text/html",
    b"1700000000.000      0 10.0.0.9 NONE_NONE/000 0 - error:transaction-end-before-headers - HIER_NONE/- -",
    b"1700000000.000      5 10.0.0.9 TCP_TUNNEL/200 300 CONNECT [2001:db8::1]:8443 u HIER_DIRECT/2001:db8::1 -",
    b"1700000000.000      5 10.0.0.9 TCP_MISS/200 300 GET /relative u HIER_DIRECT/1.2.3.4 text/html",
    # the current format: + %>la %<lp
    b"1700000000.000      5 10.0.0.9 TCP_MISS/200 300 GET http://example.com/x u HIER_DIRECT/1.2.3.4 "
    b"text/html 10 192.0.2.7 3128 -/- 192.0.2.1 40000",
    b"1700000000.000      5 10.0.0.9 TCP_DENIED/403 300 GET http://example.com/x u HIER_NONE/- "
    b"text/html 10 - 3128 ERR_ACCESS_DENIED/- 192.0.2.1 -",
    b"1700000000.000      5 10.0.0.9 TCP_MISS/200 300 GET http://example.com/x u HIER_DIRECT/1.2.3.4 "
    b"text/html 10 192.0.2.7 3128 -/- not-an-address 40000",
    b"1700000000.000      5 10.0.0.9 TCP_MISS/200 300 GET http://example.com/x u HIER_DIRECT/1.2.3.4 "
    b"text/html 10 192.0.2.7 3128 -/- 2001:db8::1 999999",
]


def squid_mutations(line: bytes, rng: random.Random) -> Iterator[bytes]:
    parts = line.split()
    yield line
    yield line + b"\r"
    yield line + b"   "
    yield b"<134>Nov 22 10:00:00 proxy squid[42]: " + line
    yield line.replace(b" ", b"  ", 3)
    for i in range(len(parts)):
        for repl in (b"x", b"-", b"0", b"HIER_DIRECT/1.2.3.4", b"a/b", b"9" * 30, b"\xff\xfe"):
            yield b" ".join(parts[:i] + [repl] + parts[i + 1:])
        yield b" ".join(parts[:i] + parts[i + 1:])  # a field dropped
        yield b" ".join(parts[:i] + [parts[i], parts[i]] + parts[i + 1:])  # one doubled
    if len(parts) > 7:
        for user in (b"bob smith", b"j%C3%BCrgen", b"%zz", b"-", b"user-1-order-2"):
            yield b" ".join(parts[:7] + [user] + parts[8:])
    for ts in (b"1700000000", b"1700000000.5", b"1700000000.12345", b"1e9.000", b"-1.000", b".123"):
        yield b" ".join([ts] + parts[1:])
    if len(parts) == 10:  # the extended fields, and near-misses of them
        for tail in (b"10 192.0.2.1 3128 -/-", b"10 - 3128 ERR_DNS_FAIL/-", b"x 192.0.2.1 3128 -/-",
                     b"10 192.0.2.1 3128 nosep", b"10 192.0.2.1 3128 ERR_WHATEVER/odd"):
            yield line + b" " + tail
    cut = rng.randrange(1, len(line))
    yield line[:cut]


def test_squid_fast_path_matches_general_path(tmp_path: Path) -> None:
    rng = random.Random(5)
    base = (fixture_lines("squid", "access.log") + fixture_lines("squid", "access-proxymeter.log")
            + SQUID_EXTRA + generated(tmp_path, "squid", 400, seed=3))
    lines = [m for line in base for m in squid_mutations(line, rng)]
    parsed = assert_same(lines, lambda: SquidParser(timezone.utc))
    assert parsed > len(base)  # the mutations kept many lines valid, not just broke them


def test_squid_fast_path_on_a_whole_generated_log(tmp_path: Path) -> None:
    lines = generated(tmp_path, "squid", 5000, seed=9)
    no_request = sum(b" error:transaction-end-before-headers " in line for line in lines)
    assert assert_same(lines, lambda: SquidParser(timezone.utc)) == 5000 - no_request


# -- jsonl ------------------------------------------------------------------------------

JSONL_VALUES: dict[str, list[object]] = {
    "timestamp": ["2026-11-22T10:00:00.250Z", "2026-11-22T10:00:00.250+05:30", "2026-11-22T10:00:00.250-07:00",
                  "2026-11-22T10:00:00Z", "2026-11-22T10:00:00.250", "2026-11-22T10:00:00.2505Z",
                  "2026-11-22 10:00:00.999Z", "2026-13-22T10:00:00.250Z", "1969-12-31T23:59:59.500Z",
                  "2026-11-22T10:00:00.25xZ", "2026-11-22T10:00:00.\u0663\u0663\u0663Z", 5, None],
    "protocol": ["http", "HTTPS", "socks5", "connect", "ftp", 3, None],
    "request_duration": [0, 0.5, 1.2345, -1, True, "1", None, 3600],
    "bytes": [0, 10, 1.5, -5, "7", None, True],
    "bytes_sent": [None, 0, 12, 3.9, -1, False],
    "bytes_received": [None, 0, 40, "x"],
    "hostname": ["WWW.Example.co.uk.", "", None, "[2001:db8::1]", "h\u00e9st", 7, "bad\ud800"],
    "ip_address": ["192.0.2.1", None, "", 1],
    "error_reason": [None, "", " connection_refused ", "x" * 80, 5],
    "auth_username": [None, "user-1-order-2", "bob smith", "j\u00fcrgen", 1],
    "client_address": [None, "10.0.0.1", 3],
    "port": [None, 443, 0, -1, 8.0, "80"],
    "status": [None, 200, -3],
    "proxy_address": [None, "203.0.113.9", []],
    "peer_id": [None, "peer-1", {}],
    "listen_port": [None, 3128, 1.0e3, True],
    "proxy_port": [None, 40000, 0, -2, "1"],
    "listen_address": [None, "192.0.2.1", 4],
    "handshake_duration": [None, 0, 0.0125, -1, "x", True],
    "tunnel_duration": [None, 1.5, 2, -0.5, []],
}


def jsonl_mutations(line: bytes, rng: random.Random) -> Iterator[bytes]:
    yield line
    yield line + b"\r"
    yield line + b"   "
    yield b" " + line
    yield line + b" {}"
    yield line[: rng.randrange(1, len(line))]
    obj = json.loads(line)
    for key, values in JSONL_VALUES.items():
        for value in values:
            yield json.dumps({**obj, key: value}).encode()
        without = {k: v for k, v in obj.items() if k != key}
        yield json.dumps(without).encode()
    for _ in range(30):  # several fields changed at once: the first bad one must win
        changed = dict(obj)
        for key in rng.sample(sorted(JSONL_VALUES), 3):
            changed[key] = rng.choice(JSONL_VALUES[key])
        yield json.dumps(changed, separators=(",", ":")).encode()
    yield json.dumps([obj]).encode()
    yield b"\xef\xbb\xbf" + line  # a BOM
    yield line.replace(b'"', b"'", 2)


@pytest.mark.parametrize("tz", [timezone.utc, ZoneInfo("America/Denver")])
def test_jsonl_fast_path_matches_general_path(tmp_path: Path, tz: object) -> None:
    rng = random.Random(8)
    base = fixture_lines("jsonl", "activity.log") + generated(tmp_path, "jsonl", 200, seed=4)
    lines = [m for line in base for m in jsonl_mutations(line, rng)]
    lines += [b"", b"{", b"[]", b"null", b"{}", b'{"a": 1}\x00', b"{\x00}"]
    parsed = assert_same(lines, lambda: JsonlParser(tz))  # type: ignore[arg-type]
    assert parsed > len(base)


def test_jsonl_fast_path_on_a_whole_generated_log(tmp_path: Path) -> None:
    lines = generated(tmp_path, "jsonl", 5000, seed=9)
    assert assert_same(lines, lambda: JsonlParser(timezone.utc)) == len(lines)
