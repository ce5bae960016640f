"""Compare what the collector reports with what the client recorded.

Each proxy test supplies `bounds(sent) -> ((sent_lo, sent_hi), (recv_lo, recv_hi))`: the
bytes the proxy must have logged for that request in each direction, as an exact value
(lo == hi) where its log is exact and as the README's documented bound where it is not.
Requests, errors by code and the burst/long-tunnel peaks are always exact.

`check_activity` compares the activity records (one per request) with the same truth,
field by field (see the comment above it); `check_activity_api` then checks that the
collector lists exactly those records at /api/v2/proxy/activity/, each once, in
Webshare's shape (so the client's view reaches the API through the whole pipeline).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from datetime import datetime, timezone

from agent.wire.batch import ACTIVITY_FIELDS, Activity
from agent.wire.errorcodes import ERRORS
from tests.proxies.client import Sent, Truth, peak as client_peak
from tests.proxies.origin import STALL_S
from tests.proxies.stack import Api, user_id_of

Range = tuple[int, int]
Bounds = Callable[[Sent], tuple[Range, Range]]


def check_all(api: Api, truth: Truth, bounds: Bounds, *, peaks: dict[str, int], logs: str = "") -> None:
    """peaks: user name -> the exact peak concurrency the collector must report; every
    other user's peak must lie within 1..its number of requests."""
    failures: list[str] = []

    def expect(cond: bool, what: str) -> None:
        if not cond:
            failures.append(what)

    for name in sorted({s.user for s in truth.sent}):
        sent = truth.by_user(name)
        uid = user_id_of(name)
        count, errors = api.requests(uid)
        want_errors = sum(1 for s in sent if s.error)
        expect(count == len(sent), f"user {name!r} (id {uid}): requests {count}, client made {len(sent)}")
        expect(errors == want_errors, f"user {name!r} (id {uid}): errors {errors}, expected {want_errors}")
        want_codes: dict[str, int] = {}
        for s in sent:
            if s.error:
                want_codes[s.error] = want_codes.get(s.error, 0) + 1
        got_codes = api.errors(uid)
        expect(got_codes == want_codes, f"user {name!r}: errors by code {got_codes}, expected {want_codes}")
        up, down = api.traffic(uid)
        b = [bounds(s) for s in sent]
        up_lo, up_hi = sum(x[0][0] for x in b), sum(x[0][1] for x in b)
        dn_lo, dn_hi = sum(x[1][0] for x in b), sum(x[1][1] for x in b)
        expect(up_lo <= up <= up_hi, f"user {name!r}: bytes_sent {up}, expected {up_lo}..{up_hi}")
        expect(dn_lo <= down <= dn_hi, f"user {name!r}: bytes_received {down}, expected {dn_lo}..{dn_hi}")
        peak = api.peak(uid)
        if name in peaks:
            # the client's own clock must agree first, or the traffic did not go as planned
            seen = client_peak([(s.start, s.end) for s in sent])
            expect(seen == peaks[name], f"user {name!r}: the client itself saw a peak of {seen}, planned {peaks[name]}")
            expect(peak == peaks[name], f"user {name!r}: peak concurrency {peak}, expected {peaks[name]}")
        else:
            expect(1 <= peak <= len(sent), f"user {name!r}: peak {peak} outside 1..{len(sent)}")

    got_errors = api.errors()
    expect(got_errors == truth.errors(), f"errors by code {got_errors}, expected {truth.errors()}")
    if failures:
        detail = "\n".join(f"  {s}" for s in truth.sent)
        raise AssertionError("collector disagrees with the client:\n" + "\n".join(failures)
                             + f"\nclient truth:\n{detail}\n{logs[-6000:]}")


# -- activity records ---------------------------------------------------------------------
#
# Each proxy test supplies `expect(sent) -> {field: value}`: the exact value the README's
# activity table for that proxy promises for every field of the request's record (None
# where the table says null), computed from the client's own view of the request (its
# user, target, the proxy address it connected to, the error it expects). The check
# finds one record per request with exactly these values and then checks the fields the
# client can only bound: bytes (the proxy's `bounds`), the start and the duration (inside
# the client's own start..end, give or take CLOCK_SLACK_MS), the proxy's source port (one
# the origin itself saw a connection from) and the handshake/tunnel split.

ORIGIN_PORT = "a port the origin accepted a connection from"
ANY_PORT = "a port 1..65535 (of a connection the target refused: the origin never saw it)"
SOME_MS = "an int 0..duration_ms"
REST_MS = "duration_ms - handshake_ms"
WHOLE_MS = "duration_ms"
_SPECIAL = ("proxy_port", "handshake_ms", "tunnel_ms")
# Proxies stamp times from an event-loop clock refreshed once per loop turn (squid,
# haproxy), truncated to the ms: a start 1-2 ms before the client's own was seen, and a
# proxy descheduled on a busy machine can lag longer. A wrong pairing is off by far more.
CLOCK_SLACK_MS = 250


def _exact(want: dict[str, object]) -> tuple[tuple[str, object], ...]:
    return tuple(sorted((k, v) for k, v in want.items() if k not in _SPECIAL))


def _fits(a: Activity, s: Sent, want: dict[str, object], bounds: Bounds, origin_ports: set[int],
          slack_ms: int) -> list[str]:
    """What is wrong with record a as the record of request s (empty: it fits)."""
    bad: list[str] = []
    (up_lo, up_hi), (dn_lo, dn_hi) = bounds(s)
    if not up_lo <= a.bytes_sent <= up_hi:
        bad.append(f"bytes_sent {a.bytes_sent} outside {up_lo}..{up_hi}")
    if not dn_lo <= a.bytes_received <= dn_hi:
        bad.append(f"bytes_received {a.bytes_received} outside {dn_lo}..{dn_hi}")
    start_us, end_us = round(s.start * 1e6), round(s.end * 1e6)
    if not start_us - slack_ms * 1000 <= a.ts_us <= end_us + slack_ms * 1000:
        bad.append(f"ts_us {a.ts_us} outside the client's {start_us}..{end_us}")
    longest = (end_us - start_us) // 1000 + slack_ms
    if s.error == "client_aborted":
        # the proxy may notice the hang-up only when the origin's stall ends and it writes
        longest += STALL_S * 1000
    if not 0 <= a.duration_ms <= longest:
        bad.append(f"duration_ms {a.duration_ms} longer than the client's {(end_us - start_us) // 1000} ms")
    pp = want.get("proxy_port")
    if pp == ORIGIN_PORT:
        if a.proxy_port not in origin_ports:
            bad.append(f"proxy_port {a.proxy_port} is no port the origin saw a connection from")
    elif pp == ANY_PORT:
        if a.proxy_port is None or not 1 <= a.proxy_port <= 65535:
            bad.append(f"proxy_port {a.proxy_port}, expected a port")
    elif a.proxy_port != pp:
        bad.append(f"proxy_port {a.proxy_port}, expected {pp}")
    hs, tn = want.get("handshake_ms"), want.get("tunnel_ms")
    if hs == SOME_MS:
        if a.handshake_ms is None or not 0 <= a.handshake_ms <= a.duration_ms:
            bad.append(f"handshake_ms {a.handshake_ms} not in 0..duration_ms {a.duration_ms}")
    elif a.handshake_ms != hs:
        bad.append(f"handshake_ms {a.handshake_ms}, expected {hs}")
    if tn == REST_MS:
        if a.handshake_ms is None or a.tunnel_ms != a.duration_ms - a.handshake_ms:
            bad.append(f"tunnel_ms {a.tunnel_ms} is not duration_ms - handshake_ms ({a.duration_ms} - {a.handshake_ms})")
    elif tn == WHOLE_MS:
        if a.tunnel_ms != a.duration_ms:
            bad.append(f"tunnel_ms {a.tunnel_ms} is not duration_ms {a.duration_ms}")
    elif a.tunnel_ms != tn:
        bad.append(f"tunnel_ms {a.tunnel_ms}, expected {tn}")
    return bad


def check_activity(records: list[Activity], truth: Truth, bounds: Bounds, expect: Callable[[Sent], dict[str, object]],
                   *, origin_ports: set[int], slack_ms: int = CLOCK_SLACK_MS, logs: str = "") -> None:
    """One activity record per request the client made, every field as `expect` says;
    `slack_ms`: how far the proxy's clock may be off the client's."""
    failures: list[str] = []
    if len(records) != len(truth.sent):
        failures.append(f"{len(records)} activity records, the client made {len(truth.sent)} requests")
    for s in truth.sent:
        want = expect(s)
        missing = set(ACTIVITY_FIELDS) - set(want) - {"ts_us", "duration_ms", "bytes_sent", "bytes_received"}
        assert not missing, f"the test's expectation names no value for {sorted(missing)}"
    # which records could be each request's (exact fields equal, bounds and times fit),
    # then a maximum matching (augmenting paths): a first-fit choice could give a request
    # a record another request needs, e.g. an aborted session's wide byte bounds
    fits: list[list[int]] = []
    why: list[list[str]] = []
    for s in truth.sent:
        want = expect(s)
        exact = _exact(want)
        ok: list[int] = []
        bad: list[str] = []
        for i, a in enumerate(records):
            if all(getattr(a, n) == v for n, v in exact):
                problems = _fits(a, s, want, bounds, origin_ports, slack_ms)
                if problems:
                    bad.append(", ".join(problems))
                else:
                    ok.append(i)
        if not ok and not bad:
            failures.append(f"no activity record with {dict(exact)} for {s}")
        fits.append(ok)
        why.append(bad)
    owner: dict[int, int] = {}  # record index -> request index

    def assign(j: int, seen: set[int]) -> bool:
        for i in fits[j]:
            if i not in seen:
                seen.add(i)
                if i not in owner or assign(owner[i], seen):
                    owner[i] = j
                    return True
        return False

    for j, s in enumerate(truth.sent):
        if (fits[j] or why[j]) and not assign(j, set()):
            detail = "; ".join(why[j][:3]) if not fits[j] else "every fitting record is another request's"
            failures.append(f"no record for {s} fits: {detail}")
    left = [a for i, a in enumerate(records) if i not in owner]
    if failures:
        raise AssertionError("activity records disagree with the client:\n" + "\n".join(f"  {f}" for f in failures)
                             + "\nrecords not matched:\n" + "\n".join(f"  {a}" for a in left[:30])
                             + f"\n{logs[-6000:]}")


def webshare_object(a: Activity) -> dict[str, object]:
    """The activity object the seed describes for record a, built here independently of
    the collector's renderer: UTC ISO 8601 with microseconds and offset, seconds as
    numbers, `bytes` both directions, the error as its Webshare reason (README's table)."""
    reason = None if not a.error else (ERRORS[a.error].reason if a.error in ERRORS else a.error)
    fix = None if not a.error else (ERRORS[a.error].how_to_fix if a.error in ERRORS else None)
    stamp = datetime.fromtimestamp(a.ts_us // 1_000_000, timezone.utc).replace(microsecond=a.ts_us % 1_000_000)
    return {
        "timestamp": stamp.isoformat(timespec="microseconds"),
        "protocol": a.protocol,
        "request_duration": a.duration_ms / 1000,
        "handshake_duration": None if a.handshake_ms is None else a.handshake_ms / 1000,
        "tunnel_duration": None if a.tunnel_ms is None else a.tunnel_ms / 1000,
        "error_reason": reason,
        "error_reason_how_to_fix": fix,
        "auth_username": a.auth_username,
        "proxy_address": a.proxy_address,
        "bytes": a.bytes_sent + a.bytes_received,
        "client_address": a.client_address,
        "ip_address": a.ip_address,
        "hostname": a.hostname,
        "domain": a.domain,
        "port": a.port,
        "proxy_port": a.proxy_port,
        "listen_address": a.listen_address,
        "listen_port": a.listen_port,
    }


def check_activity_api(api: Api, records: list[Activity], *, logs: str = "") -> None:
    """The collector's activity list holds exactly `records` (already checked against
    the client by check_activity), each once, newest first, every field as the seed's
    object spells it."""
    listed = api.activity_api()
    stamps = [o["timestamp"] for o in listed]
    problems: list[str] = []
    if stamps != sorted(stamps, reverse=True):
        problems.append("the list is not newest first")
    want = sorted((webshare_object(a) for a in records), key=repr)
    got = sorted(listed, key=repr)
    if got != want:
        missing = [o for o in want if o not in got]
        extra = [o for o in got if o not in want]
        problems.append(f"{len(got)} listed, {len(want)} expected; missing {missing[:5]}; unexpected {extra[:5]}")
    if problems:
        raise AssertionError("/api/v2/proxy/activity/ disagrees with the agent's records:\n  "
                             + "\n  ".join(problems) + f"\n{logs[-4000:]}")


WORKER = "proxy-test"  # the Stack agent's agent.worker
LOOPBACK = "127.0.0.1"


def target(host: str | None, port: int | None) -> dict[str, object]:
    """hostname / ip_address / domain / port of a target the client asked for: an IP
    literal is the ip_address (no host name, no domain); a name is the hostname, never
    resolved in these tests (so no ip_address), and the test's names have two labels,
    so each is its own registrable domain."""
    if host is None:
        return {"hostname": None, "ip_address": None, "domain": None, "port": port}
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return {"hostname": host, "ip_address": None, "domain": host, "port": port}
    return {"hostname": None, "ip_address": host, "domain": None, "port": port}


def split_target(hostport: str, default_port: int) -> tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    return (host, int(port)) if sep and port.isdigit() else (hostport, default_port)


def client_side(s: Sent, *, protocol: str = "http", user: bool = True) -> dict[str, object]:
    """The fields every proxy's record has from the client's own view: who (user and its
    ids), from where, to which proxy port, the outcome."""
    name = s.user if user else ""
    return {
        "protocol": protocol,
        "error": s.error,
        "auth_username": name or None,
        "client_address": LOOPBACK,
        "listen_port": s.via[1],
        "user_id": user_id_of(name),
        "order_id": 0,
        "worker": WORKER,
    }
