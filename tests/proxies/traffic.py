"""The traffic every proxy test drives, and the users it drives it as.

Each user has one role, so the per-user numbers the collector reports can be checked
one by one, and the concurrency peaks are known exactly:
- SIZES   GETs of 0 B .. 5 MiB and the proxy-side failures (refused, DNS, ACL);
- SPACE   a name with a space in it (squid, haproxy and dante log it raw);
- BURST   8 requests of 2.5 s started at once and nothing else: its peak is 8 in every
          second they all overlap, whatever the rounding of the proxy's times;
- TUNNEL  short CONNECT tunnels with payload, and one to a refused port;
- BADAUTH a known user with a wrong password;
- LONG    one tunnel held open longer than two agent flush intervals, alone: peak 1;
- GUEST   a name matching no user pattern (goes to the default user), one normal GET
          and one download it aborts after 64 KiB (from the origin's stalling endpoint, so
          the hang-up always comes while the proxy is still waiting for the body).
The three groups run at the same time (sequential group, burst, long tunnel), so a run
takes about as long as its longest request. `http_proxy` drives it through an HTTP
proxy (squid, haproxy http mode), `socks_proxy` through a SOCKS5 proxy (dante), the
GETs then going through a tunnel to the origin's HTTP port.

`forwarder` is the same traffic for proxies without user names (haproxy tcp mode, nginx
stream): everything belongs to the default user, so its cases run in phases apart in
time instead, and the one exact peak is the burst's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.proxies import client as C
from tests.proxies.origin import Origin
from tests.proxies.stack import FLUSH_INTERVAL_S

SIZES = "user-101"
SPACE = "user-102 alt"
BURST = "user-103"
TUNNEL = "user-104"
BADAUTH = "user-105"
LONG = "user-106"
GUEST = "guest"
USERS = (SIZES, SPACE, BURST, TUNNEL, BADAUTH, LONG, GUEST)
PASSWORDS = {u: f"pw-{i}" for i, u in enumerate(USERS)}

BODY_SIZES = (0, 1, 1000, 65_536, 1024 * 1024, 5 * 1024 * 1024)
ABORT_SIZE = 5 * 1024 * 1024
ABORT_AFTER = 64 * 1024
BURST_N = 8
SLOW_MS = 2500
LONG_HOLD_S = 2 * FLUSH_INTERVAL_S + 0.6  # longer than two of the agent's flush intervals
TUNNEL_PAYLOADS = (5_000, 200_000)
LONG_PAYLOAD = 20_000
BLOCKED_HOST = "blocked.invalid"  # the proxies' ACL denies it by name, before any DNS
BLOCKED_IP = "127.0.0.2"  # dante's ACL denies it by address (never connected to)
NOSUCH_HOST = "nosuch.invalid"  # reserved TLD: resolution fails on the local resolver


@dataclass(frozen=True)
class Expect:
    """The normalised codes the agent must report for this proxy's failures."""

    refused: str = "connection_refused"
    dns: str = "dns_failure"
    acl: str = "forbidden_host"
    auth: str = "auth_failed"
    aborted: str = "client_aborted"


def http_proxy(truth: C.Truth, proxy: tuple[str, int], origin: Origin, *, connect: bool,
               dns: bool, expect: Expect = Expect()) -> None:
    """Traffic for an HTTP forward proxy (squid; haproxy in http mode without CONNECT)."""
    o = f"127.0.0.1:{origin.http_port}"

    def get(user: str, url: str, **kw: object) -> C.Sent:
        pw = kw.pop("password", PASSWORDS[user])
        return C.http_get(truth, proxy, url, user=user, password=pw, **kw)  # type: ignore[arg-type]

    def sequential() -> None:
        for n in BODY_SIZES:
            get(SIZES, f"http://{o}/size/{n}")
        get(SIZES, f"http://127.0.0.1:{origin.closed_port}/size/10", error=expect.refused)
        if dns:
            get(SIZES, f"http://{NOSUCH_HOST}/size/10", error=expect.dns)
        get(SIZES, f"http://{BLOCKED_HOST}/size/10", error=expect.acl)
        get(SPACE, f"http://{o}/size/10")
        get(SPACE, f"http://{o}/size/2000")
        get(BADAUTH, f"http://{o}/size/10", password="wrong", error=expect.auth)
        get(GUEST, f"http://{o}/size/10")
        get(GUEST, f"http://{o}/stall/{ABORT_SIZE}", abort_after=ABORT_AFTER, error=expect.aborted)
        if connect:
            for n in TUNNEL_PAYLOADS:
                C.connect_tunnel(truth, proxy, f"127.0.0.1:{origin.echo_port}", user=TUNNEL,
                                 password=PASSWORDS[TUNNEL], payload=b"t" * n)
            C.connect_tunnel(truth, proxy, f"127.0.0.1:{origin.closed_port}", user=TUNNEL,
                             password=PASSWORDS[TUNNEL], error=expect.refused)

    calls: list[Callable[[], object]] = [sequential]
    calls += [lambda: get(BURST, f"http://{o}/slow/{SLOW_MS}") for _ in range(BURST_N)]
    if connect:
        calls.append(lambda: C.connect_tunnel(truth, proxy, f"127.0.0.1:{origin.echo_port}", user=LONG,
                                              password=PASSWORDS[LONG], payload=b"l" * LONG_PAYLOAD,
                                              hold_s=LONG_HOLD_S))
    else:
        calls.append(lambda: get(LONG, f"http://{o}/slow/{int(LONG_HOLD_S * 1000)}"))
    C.parallel(calls, timeout_s=90)
    bad = [s for s in truth.sent if s.note and s.error != expect.aborted]
    assert not bad, f"client-side failures: {bad}"
    _check_plan(truth)


def socks_proxy(truth: C.Truth, proxy: tuple[str, int], origin: Origin, *, dns: bool,
                expect: Expect = Expect()) -> None:
    """The same traffic through a SOCKS5 proxy with username/password logins (dante):
    GETs go through a tunnel to the origin's HTTP port, tunnels to its echo port."""
    lo = "127.0.0.1"

    def get(user: str, path: str, host: str = lo, port: int = origin.http_port, **kw: object) -> C.Sent:
        pw = kw.pop("password", PASSWORDS[user])
        return C.socks_get(truth, proxy, host, port, path, user=user, password=pw, **kw)  # type: ignore[arg-type]

    def tunnel(user: str, payload: bytes, hold_s: float = 0.0, port: int = origin.echo_port,
               error: str = "") -> C.Sent:
        return C.socks5(truth, proxy, lo, port, user=user, password=PASSWORDS[user], payload=payload,
                        hold_s=hold_s, error=error)

    def sequential() -> None:
        for n in BODY_SIZES:
            get(SIZES, f"/size/{n}")
        get(SIZES, "/size/10", port=origin.closed_port, error=expect.refused)
        if dns:
            get(SIZES, "/size/10", host=NOSUCH_HOST, port=80, error=expect.dns)
        get(SIZES, "/size/10", host=BLOCKED_IP, port=origin.echo_port, error=expect.acl)
        get(SPACE, "/size/10")
        get(SPACE, "/size/2000")
        get(BADAUTH, "/size/10", password="wrong", error=expect.auth)
        get(GUEST, "/size/10")
        get(GUEST, f"/stall/{ABORT_SIZE}", abort_after=ABORT_AFTER, error=expect.aborted)
        for n in TUNNEL_PAYLOADS:
            tunnel(TUNNEL, b"t" * n)
        tunnel(TUNNEL, b"", port=origin.closed_port, error=expect.refused)

    calls: list[Callable[[], object]] = [sequential]
    calls += [lambda: get(BURST, f"/slow/{SLOW_MS}") for _ in range(BURST_N)]
    calls.append(lambda: tunnel(LONG, b"l" * LONG_PAYLOAD, LONG_HOLD_S))
    C.parallel(calls, timeout_s=90)
    # the proxy's refusals reach the client as SOCKS replies (noted); nothing else may fail
    bad = [s for s in truth.sent if s.note and not s.error]
    assert not bad, f"client-side failures: {bad}"
    _check_plan(truth)


def _check_plan(truth: C.Truth) -> None:
    """The client's own record shows the traffic went as planned."""
    longs = truth.by_user(LONG)
    assert len(longs) == 1 and longs[0].end - longs[0].start > 2 * FLUSH_INTERVAL_S, longs
    burst = truth.by_user(BURST)
    assert len(burst) == BURST_N and all(s.end - s.start >= SLOW_MS / 1000 for s in burst), burst


@dataclass(frozen=True)
class Forwarder:
    """How to open each kind of session through a proxy without user names (haproxy tcp
    mode, nginx stream). None: the proxy cannot produce that case."""

    echo: Callable[[bytes, float], C.Sent]  # payload, hold_s -> a session to the echo port
    get: Callable[[str], C.Sent]  # path -> a GET through a port forwarded to the HTTP origin
    refused: Callable[[], C.Sent] | None = None
    denied: Callable[[], C.Sent] | None = None
    dns: Callable[[], C.Sent] | None = None
    abort: Callable[[], C.Sent] | None = None


GAP_S = 2.1  # between phases: > 1 s plus a proxy's rounding of times to the second
MAX_SHORT = BURST_N - 2  # short sessions per phase: fewer than BURST_N even if all in one second


def forwarder(truth: C.Truth, f: Forwarder) -> None:
    """All sessions belong to one (default) user, so the phases are apart in time: the
    GETs of every size, the other short sessions, then the burst of BURST_N, then the
    long tunnel alone. The peak is then exactly BURST_N, whatever second the short ones
    fall in."""
    gets = [lambda n=n: f.get(f"/size/{n}") for n in BODY_SIZES]
    short = [lambda: f.echo(b"t" * TUNNEL_PAYLOADS[0], 0.0), lambda: f.echo(b"t" * TUNNEL_PAYLOADS[1], 0.0)]
    short += [c for c in (f.refused, f.denied, f.dns, f.abort) if c is not None]
    for phase in (gets, short):
        assert len(phase) <= MAX_SHORT
        for call in phase:
            call()
        time.sleep(GAP_S)
    C.parallel([lambda: f.echo(b"b" * 1000, SLOW_MS / 1000) for _ in range(BURST_N)], timeout_s=60)
    time.sleep(GAP_S)
    long = f.echo(b"l" * LONG_PAYLOAD, LONG_HOLD_S)
    bad = [s for s in truth.sent if s.note and not s.error]
    assert not bad, f"client-side failures: {bad}"
    assert long.end - long.start > 2 * FLUSH_INTERVAL_S, long
    assert [s.down for s in truth.sent[:len(gets)]] == list(BODY_SIZES), truth.sent
