"""A seeded generator of realistic proxy access logs, with its own truth as an oracle.

Strategy:
- `Population` is drawn once from the seed: users named like the agent's default user
  pattern ("user-42-order-7"), a few names matching no pattern (one with a space, which
  squid logs raw), client addresses, thousands of domains with Zipf-like popularity.
- `LogGen` draws a pool of `Event`s from the population (GET/POST and CONNECT, site
  statuses, proxy errors, occasional tunnels lasting minutes) and pre-renders each one
  without its time. Lines are then made by picking pool events at random and stamping
  them with times the caller passes in: that keeps the pure core free of clocks and makes
  2,000,000 lines a matter of seconds. Each event keeps its own duration, so a tunnel
  replayed at a later time is still a tunnel.
- `Truth` counts what was rendered (per user name, and per user name and start minute),
  independently of any parser: tests compare the collector's numbers against it.
- Edges: `write_file` (N lines, fast) and `live` (appends at a steady rate with
  wall-clock times; used by `make demo`). `python -m bench.loggen --help`.

Formats:
- "squid": the native access.log (`logformat squid`, the default):
  "%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt". Squid stamps the END of
  a transaction; the start is the stamp minus the elapsed time. `%<st` is the reply size
  (what the client downloaded); upload bytes are not in this format.
  With `squid_logformat="proxymeter"` (`--squid-logformat proxymeter`) the lines are in
  the extended logformat the README's "Proxy setup" recommends: native + "%>st %<la %>lp
  %err_code/%err_detail", i.e. the request size (request head for the errors, the body
  or tunnelled bytes up otherwise), squid's outgoing address ("-" when no server
  connection was made), its listening port, and the error squid names for each
  generated error kind (what agent.parsers.squid maps back to exactly that kind; a
  refused connection is then logged against the server squid tried, HIER_DIRECT/<ip>,
  as squid does). The extra fields come from their own random stream, drawn after the
  pool, so the default output stays byte for byte what it was (benchmarks compare it).
- "jsonl": one JSON object per line with the Webshare proxy activity fields; `timestamp`
  is the start of the request, `bytes` is upload + download; plus proxymeter's optional
  `bytes_sent`/`bytes_received` (the two directions). Only requests are written.

Lines with the URL "error:transaction-end-before-headers" (a client that connected and
closed without a request) are written but are not requests: the truth leaves them out.
What counts as an error in the truth (the proxy failed to serve the request): TCP_DENIED
(407 auth, 403 forbidden host), 503 with HIER_NONE (DNS failure, connection refused; in
the proxymeter logformat a refused connection is HIER_DIRECT with ERR_CONNECT_FAIL),
NONE_NONE/400 (invalid request), *_ABORTED/000 (client aborted). A status the target
site returned (TCP_MISS/404, TCP_MISS/500 with HIER_DIRECT) is not an error. The truth
also counts requests per error kind (`error_kinds`).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

FORMATS = ("squid", "jsonl")
# squid's logformat names: the native one and README's extended `proxymeter` one.
SQUID_LOGFORMATS = ("squid", "proxymeter")
USER_FORMAT = "user-{user_id}-order-{order_id}"
# Names the default user pattern does not match; one holds a space (squid logs it raw).
UNMATCHED_NAMES = ("alice", "backup-bot", "john smith")
NO_USER = "-"

_TOP_DOMAINS = (
    "google.com", "youtube.com", "googleapis.com", "facebook.com", "amazon.com",
    "wikipedia.org", "instagram.com", "cloudflare.com", "microsoft.com", "apple.com",
    "bbc.co.uk", "linkedin.com", "github.com", "netflix.com", "yahoo.co.jp",
)
_TLDS = (("com", 50), ("net", 10), ("org", 8), ("io", 6), ("de", 6), ("co.uk", 5),
         ("com.br", 4), ("ru", 4), ("fr", 3), ("com.au", 2), ("nl", 2))
_SUBS = (("", 30), ("www.", 40), ("api.", 8), ("cdn.", 8), ("static.", 5), ("m.", 4), ("img.", 5))
_SYLLABLES = ("ka", "lo", "mi", "ra", "te", "vo", "zu", "ne", "pa", "si", "do", "ri", "fa",
              "gu", "be", "xo", "ly", "tor", "ban", "mel", "quin", "dex", "hub", "net", "ora")
_PEER_NETS = ("93.184", "104.16", "151.101", "142.250", "185.199", "13.32", "52.84", "203.0")
_PATHS = ("/", "/index.html", "/api/v1/items", "/static/app.js", "/img/logo.png", "/search?q=proxy",
          "/login", "/feed.xml", "/products/42", "/robots.txt")
_MIMES = ("text/html", "application/json", "application/javascript", "image/png", "text/css",
          "application/octet-stream")
# proxymeter logformat: squid's outgoing addresses (%<la; each user sticks to one, as
# with per-order exit IPs) and listening ports (%>lp, weighted).
_OUT_ADDRESSES = ("198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.13")
_LISTEN_PORTS = ((3128, 9), (3129, 1))
# Generated error kind -> squid's %err_code/%err_detail for it; agent.parsers.squid reads
# each back as that kind (ERR_ACCESS_DENIED is forbidden_host at 403, ERR_CONNECT_FAIL
# with errno 111 connection_refused once a server was tried).
_SQUID_ERRORS = {
    "auth_failed": "ERR_CACHE_ACCESS_DENIED/-",
    "forbidden_host": "ERR_ACCESS_DENIED/-",
    "dns_failure": "ERR_DNS_FAIL/-",
    "connection_refused": "ERR_CONNECT_FAIL/errno=111",
    "client_aborted": "ERR_CLIENT_GONE/WITH_CLIENT",
    "invalid_request": "ERR_INVALID_REQ/-",
}


@dataclass(frozen=True, slots=True)
class User:
    name: str  # as logged
    user_id: int | None  # None: the name matches no pattern
    order_id: int | None


@dataclass(frozen=True, slots=True)
class Population:
    users: tuple[User, ...]
    user_cum: tuple[float, ...]  # cumulative weights (skewed: a few heavy users)
    clients: tuple[tuple[str, ...], ...]  # client addresses per user (same index)
    domains: tuple[str, ...]  # registrable domains, most popular first
    domain_cum: tuple[float, ...]  # Zipf-like cumulative weights
    peers: tuple[str, ...]  # the address each domain resolves to (same index)


def make_population(seed: int, users: int = 200, domains: int = 5000) -> Population:
    rnd = random.Random(f"population:{seed}")
    people: list[User] = []
    for uid in range(1, users + 1):
        people.append(User(USER_FORMAT.format(user_id=uid, order_id=uid * 10 + 1), uid, uid * 10 + 1))
        if rnd.random() < 0.3:  # some users hold a second order
            people.append(User(USER_FORMAT.format(user_id=uid, order_id=uid * 10 + 2), uid, uid * 10 + 2))
    people.extend(User(name, None, None) for name in UNMATCHED_NAMES)
    user_weights = [1.0 / (i + 1) ** 0.8 for i in range(len(people))]
    rnd.shuffle(user_weights)
    names = list(_TOP_DOMAINS)
    seen = set(names)
    tlds, tld_w = zip(*_TLDS)
    while len(names) < domains:
        stem = "".join(rnd.choice(_SYLLABLES) for _ in range(rnd.randint(2, 4)))
        name = f"{stem}.{rnd.choices(tlds, tld_w)[0]}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    names = names[:domains]
    peers = tuple(f"{rnd.choice(_PEER_NETS)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}" for _ in names)
    clients = tuple(
        tuple(f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}" for _ in range(rnd.randint(1, 2)))
        for _ in people
    )
    return Population(
        users=tuple(people),
        user_cum=tuple(itertools.accumulate(user_weights)),
        clients=clients,
        domains=tuple(names),
        domain_cum=tuple(itertools.accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(len(names)))),
        peers=peers,
    )


@dataclass(frozen=True, slots=True)
class Event:
    """One request, without its time: `elapsed_ms` and everything the log shows."""

    elapsed_ms: int
    client: str
    result: str  # squid's %Ss, e.g. TCP_MISS
    status: int
    received: int  # bytes to the client (%<st)
    sent: int  # bytes from the client (not in squid's native format)
    method: str
    url: str  # squid's %ru
    user: str  # as logged; "-" when unauthenticated
    hier: str
    peer: str
    mime: str
    host: str
    port: int
    domain: str  # registrable domain of host ("" when no target)
    error: str  # "" or a short kind (auth_failed, forbidden_host, dns_failure, ...)
    protocol: str  # HTTP | HTTPS
    request: bool = True  # False: a connection closed before any request (not a request)
    # proxymeter logformat only (see with_proxymeter_fields):
    ip_out: str = "-"  # %<la: squid's address towards the server; "-" without a connection
    listen_port: int = 3128  # %>lp
    err: str = "-/-"  # %err_code/%err_detail


def _pick(rnd: random.Random, cum: Sequence[float]) -> int:
    return bisect.bisect_right(cum, rnd.random() * cum[-1])


def draw_event(rnd: random.Random, pop: Population, long_tunnels: float = 0.005) -> Event:
    """One random request from the population (pure: all randomness from `rnd`)."""
    ui = min(_pick(rnd, pop.user_cum), len(pop.users) - 1)
    user = pop.users[ui]
    client = rnd.choice(pop.clients[ui])
    di = min(_pick(rnd, pop.domain_cum), len(pop.domains) - 1)
    domain = pop.domains[di]
    sub = rnd.choices([s for s, _ in _SUBS], [w for _, w in _SUBS])[0]
    host, peer = sub + domain, pop.peers[di]
    if rnd.random() < 0.01:  # a CONNECT straight to an IP address
        host = domain = peer
    connect = rnd.random() < 0.45
    roll = rnd.random()
    e = dict(client=client, user=user.name, host=host, domain=domain, hier="HIER_DIRECT", peer=peer, sent=0)
    if connect:
        port = 443 if rnd.random() < 0.97 else rnd.choice((8443, 5222, 993))
        e.update(method="CONNECT", url=f"{host}:{port}", port=port, protocol="HTTPS", mime="-")
    else:
        method = "GET" if rnd.random() < 0.9 else "POST"
        port = 80 if rnd.random() < 0.95 else 8080
        authority = host if port == 80 else f"{host}:{port}"
        e.update(method=method, url=f"http://{authority}{rnd.choice(_PATHS)}", port=port, protocol="HTTP",
                 mime=rnd.choice(_MIMES))
    if roll < 0.015:  # wrong or missing credentials: squid logs no user name
        e.update(result="TCP_DENIED", status=407, received=rnd.randint(3800, 4100), elapsed_ms=rnd.randint(0, 3),
                 user=NO_USER, hier="HIER_NONE", peer="-", mime="text/html", error="auth_failed")
    elif roll < 0.022:
        e.update(result="TCP_DENIED", status=403, received=rnd.randint(3700, 4000), elapsed_ms=rnd.randint(0, 3),
                 hier="HIER_NONE", peer="-", mime="text/html", error="forbidden_host")
    elif roll < 0.037:  # name did not resolve or the site refused the connection
        e.update(result="TCP_TUNNEL" if connect else "TCP_MISS", status=503,
                 received=0 if connect else rnd.randint(3900, 4300), elapsed_ms=rnd.choice((0, 1, 5, 12, 5011, 30012)),
                 hier="HIER_NONE", peer="-", mime="-" if connect else "text/html",
                 error=rnd.choice(("dns_failure", "connection_refused")))
    elif roll < 0.045:
        e.update(result="TCP_MISS_ABORTED", status=0, received=0, elapsed_ms=int(rnd.lognormvariate(6.0, 1.2)),
                 mime="-", error="client_aborted")
    elif roll < 0.048:  # the client connected and closed without a request
        e.update(result="NONE_NONE", status=0, received=0, elapsed_ms=rnd.randint(0, 2000), method="-",
                 url="error:transaction-end-before-headers", user=NO_USER, hier="HIER_NONE", peer="-", mime="-",
                 host="", port=0, domain="", protocol="HTTP", error="client_aborted", request=False)
    elif roll < 0.050:
        e.update(result="NONE_NONE", status=400, received=rnd.randint(3500, 3700), elapsed_ms=rnd.randint(0, 3),
                 method="-", url="error:invalid-request", user=NO_USER, hier="HIER_NONE", peer="-", mime="text/html",
                 host="", port=0, domain="", protocol="HTTP", error="invalid_request")
    elif connect:
        if rnd.random() < long_tunnels / 0.45:
            elapsed = rnd.randint(60_000, 900_000)  # a tunnel open for minutes
            received = int(rnd.lognormvariate(14.0, 1.5))
        else:
            elapsed = min(int(rnd.lognormvariate(7.5, 1.4)), 59_000)
            received = int(rnd.lognormvariate(9.5, 2.0))
        e.update(result="TCP_TUNNEL", status=200, received=received, elapsed_ms=elapsed,
                 sent=int(rnd.lognormvariate(7.0, 1.5)), error="")
    else:
        status = rnd.choices((200, 304, 301, 404, 500), (85, 5, 4, 5, 1))[0]
        result = "TCP_MISS" if status != 304 and rnd.random() < 0.8 else rnd.choice(("TCP_HIT", "TCP_MEM_HIT", "TCP_REFRESH_UNMODIFIED"))
        e.update(result=result, status=status, received=int(rnd.lognormvariate(8.5, 1.5)) + 200,
                 elapsed_ms=min(int(rnd.lognormvariate(4.8, 1.1)), 60_000), sent=rnd.randint(250, 900), error="")
    return Event(**e)  # type: ignore[arg-type]


def squid_tail(ev: Event) -> str:
    """Everything of a squid native line after its time stamp (starts with a space)."""
    return (f" {ev.elapsed_ms:6d} {ev.client} {ev.result}/{ev.status:03d} {ev.received} {ev.method} {ev.url}"
            f" {ev.user} {ev.hier}/{ev.peer} {ev.mime}\n")


def proxymeter_tail(ev: Event) -> str:
    """A `proxymeter` logformat line after its time stamp: native + %>st %<la %>lp %err_code/%err_detail."""
    return f"{squid_tail(ev)[:-1]} {ev.sent} {ev.ip_out} {ev.listen_port} {ev.err}\n"


def with_proxymeter_fields(ev: Event, rnd: random.Random, peer_of: dict[str, str], out_of: dict[str, str]) -> Event:
    """`ev` with what the proxymeter logformat adds (pure: randomness from `rnd` only).

    - sent (%>st): the native events of a denied, failed, aborted or invalid request carry
      no upload bytes (that format has none); squid counts the request head it read: the
      request line, Host and a few headers. A connection that sent nothing stays at 0.
    - a refused connection: squid tried the target's server, so it is HIER_DIRECT/<ip>
      with ERR_CONNECT_FAIL/errno=111 (with HIER_NONE squid would mean no server tried:
      a DNS failure, which is how agent.parsers.squid reads it).
    - ip_out (%<la): the user's outgoing address when squid connected to a server, "-"
      when it did not (HIER_NONE, or the refused connect).
    - err (%err_code/%err_detail): squid's name for the event's error kind, "-/-" for
      none and for a connection closed before any request.
    """
    sent = ev.sent
    if sent == 0 and ev.request:
        line = f"{ev.method} {ev.url} HTTP/1.1\r\n" if ev.method != "-" else ""
        sent = len(line) + rnd.randint(60, 420)  # Host, User-Agent, Proxy-Authorization, ...
    hier, peer = ev.hier, ev.peer
    if ev.error == "connection_refused":
        hier, peer = "HIER_DIRECT", peer_of.get(ev.domain, ev.host)
    connected = hier != "HIER_NONE" and ev.error != "connection_refused"
    ip_out = out_of.get(ev.user, _OUT_ADDRESSES[0]) if connected else "-"
    port = rnd.choices([p for p, _ in _LISTEN_PORTS], [w for _, w in _LISTEN_PORTS])[0]
    # A connection closed before any request is no transaction: nothing for squid to name.
    err = _SQUID_ERRORS[ev.error] if ev.error and ev.request else "-/-"
    return replace(ev, sent=sent, hier=hier, peer=peer, ip_out=ip_out, listen_port=port, err=err)


_WEBSHARE_ERRORS = {
    "auth_failed": ("client_connect_invalid_credentials", "Check the proxy username and password."),
    "forbidden_host": ("client_connect_forbidden_host",
                       "The target website you are connecting cannot be accessed via Webshare Proxy."),
    "dns_failure": ("target_dns_resolution_failed", "The target hostname could not be resolved; check its spelling."),
    "connection_refused": ("target_connect_refused", "The target refused the connection; check its port."),
    "client_aborted": ("client_disconnected", "Your client closed the connection before the request finished."),
    "invalid_request": ("client_invalid_request", "Your client sent a request the proxy could not parse."),
}


def jsonl_tail(ev: Event) -> str:
    """A jsonl line after `{"timestamp":"...` (starts with the closing quote)."""
    err = _WEBSHARE_ERRORS.get(ev.error)
    handshake = min(ev.elapsed_ms, 20) / 1000
    obj = {
        "protocol": "https" if ev.method == "CONNECT" else "http",
        "request_duration": ev.elapsed_ms / 1000,
        "handshake_duration": handshake,
        "tunnel_duration": round(ev.elapsed_ms / 1000 - handshake, 3) if ev.method == "CONNECT" and not err else None,
        "error_reason": err[0] if err else None,
        "error_reason_how_to_fix": err[1] if err else None,
        "auth_username": None if ev.user == NO_USER else ev.user,
        "proxy_address": None if ev.peer == "-" else "192.0.2.10",
        "bytes": ev.sent + ev.received,
        "client_address": ev.client,
        "ip_address": None if ev.peer == "-" else ev.peer,
        "hostname": ev.host or None,
        "domain": ev.domain or None,
        "port": ev.port or None,
        "proxy_port": None,
        "listen_address": "192.0.2.1",
        "listen_port": 3128,
        # proxymeter's extensions: the two directions separately (exact per direction).
        "bytes_sent": ev.sent,
        "bytes_received": ev.received,
    }
    return '",' + json.dumps(obj, separators=(",", ":"))[1:] + "\n"


@dataclass
class Truth:
    """What the generator wrote: per user name and per (user name, start minute).

    Each value is [requests, bytes_received, bytes_sent, errors]; minutes are UTC epoch
    seconds of the minute the request STARTED (squid: stamp minus elapsed).
    `users` maps a name to its (user_id, order_id), or None when no pattern matches it.
    """

    users: dict[str, tuple[int, int] | None]
    per_user: dict[str, list[int]] = field(default_factory=dict)
    per_minute: dict[tuple[str, int], list[int]] | None = None
    lines: int = 0
    # jsonl and squid's proxymeter logformat log upload bytes; squid's native format does not
    fmt_counts_sent: bool = False
    error_kinds: Counter[str] = field(default_factory=Counter)  # requests per error kind

    def add(self, ev: Event, start_ms: int, n: int = 1) -> None:
        self.lines += n
        if not ev.request:
            return
        if ev.error:
            self.error_kinds[ev.error] += n
        sent = ev.sent if self.fmt_counts_sent else 0
        v = self.per_user.setdefault(ev.user, [0, 0, 0, 0])
        v[0] += n
        v[1] += ev.received * n
        v[2] += sent * n
        v[3] += n if ev.error else 0
        if self.per_minute is not None:
            key = (ev.user, start_ms // 60_000 * 60)
            m = self.per_minute.setdefault(key, [0, 0, 0, 0])
            m[0] += n
            m[1] += ev.received * n
            m[2] += sent * n
            m[3] += n if ev.error else 0

    def by_user_id(self, default: tuple[int, int] = (0, 0)) -> dict[tuple[int, int], list[int]]:
        """Totals per (user_id, order_id); unmatched and absent names go to `default`."""
        out: dict[tuple[int, int], list[int]] = {}
        for name, v in self.per_user.items():
            key = self.users.get(name) or default
            acc = out.setdefault(key, [0, 0, 0, 0])
            for i in range(4):
                acc[i] += v[i]
        return out

    def totals(self) -> list[int]:
        acc = [0, 0, 0, 0]
        for v in self.per_user.values():
            for i in range(4):
                acc[i] += v[i]
        return acc


class LogGen:
    """Deterministic line maker: the same seed and times give the same lines."""

    def __init__(self, seed: int = 1, fmt: str = "squid", *, users: int = 200, domains: int = 5000,
                 pool_size: int = 65536, long_tunnels: float = 0.005, minutes: bool = False,
                 squid_logformat: str = "squid") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        if squid_logformat not in SQUID_LOGFORMATS:
            raise ValueError(f"squid_logformat must be one of {SQUID_LOGFORMATS}, got {squid_logformat!r}")
        if squid_logformat != "squid" and fmt != "squid":
            raise ValueError(f"squid_logformat={squid_logformat!r} needs fmt='squid', got {fmt!r}")
        self.fmt = fmt
        self.squid_logformat = squid_logformat
        self.population = make_population(seed, users, domains)
        rnd = random.Random(f"pool:{seed}")
        self.pool = []
        while len(self.pool) < pool_size:
            ev = draw_event(rnd, self.population, long_tunnels)
            if ev.request or fmt == "squid":  # a worker writes activity objects for requests only
                self.pool.append(ev)
        tail = squid_tail if fmt == "squid" else jsonl_tail
        if squid_logformat == "proxymeter":
            # Its own stream, after the pool: the same events as the native log, plus fields.
            ext = random.Random(f"proxymeter:{seed}")
            pop = self.population
            peer_of = dict(zip(pop.domains, pop.peers))
            out_of = {u.name: ext.choice(_OUT_ADDRESSES) for u in pop.users}
            self.pool = [with_proxymeter_fields(ev, ext, peer_of, out_of) for ev in self.pool]
            tail = proxymeter_tail
        self._tails = [tail(ev) for ev in self.pool]
        self._elapsed = [ev.elapsed_ms for ev in self.pool]
        self._rnd = random.Random(f"pick:{seed}")
        self._picked: Counter[int] = Counter()
        self._minutes = minutes
        self._per_minute: Counter[tuple[int, int]] = Counter()
        self._iso: dict[int, str] = {}

    def render(self, times_ms: Sequence[int]) -> str:
        """Lines (newline-terminated, concatenated) for events ending at `times_ms`."""
        n = len(times_ms)
        size = len(self.pool)
        rand = self._rnd.random
        picks = [int(rand() * size) for _ in range(n)]
        self._picked.update(picks)
        el = self._elapsed
        if self._minutes:
            self._per_minute.update(((t - el[j]) // 60_000 * 60, j) for t, j in zip(times_ms, picks))
        tails = self._tails
        if self.fmt == "squid":
            # At high rates many lines share a millisecond: format each stamp once.
            stamp = {t: f"{t // 1000}.{t % 1000:03d}" for t in set(times_ms)}
            return "".join([stamp[t] + tails[j] for t, j in zip(times_ms, picks)])
        iso = self._iso_second
        return "".join([
            f'{{"timestamp":"{iso(s // 1000)}.{s % 1000:03d}+00:00{tails[j]}'
            for t, j in zip(times_ms, picks) for s in (t - el[j],)
        ])

    def _iso_second(self, epoch_s: int) -> str:
        text = self._iso.get(epoch_s)
        if text is None:
            if len(self._iso) > 100_000:
                self._iso.clear()
            text = self._iso[epoch_s] = datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return text

    def truth(self) -> Truth:
        """The generator's own account of every line rendered so far."""
        users = {u.name: (u.user_id, u.order_id) if u.user_id is not None else None for u in self.population.users}
        out = Truth(users=users, per_minute={} if self._minutes else None)
        out.fmt_counts_sent = self.fmt == "jsonl" or self.squid_logformat == "proxymeter"
        if self._minutes:
            for (minute, j), n in self._per_minute.items():
                out.add(self.pool[j], minute * 1000, n)
        else:
            for j, n in self._picked.items():
                out.add(self.pool[j], 0, n)
        return out


def times(start_ms: int, rate: float, n: int, first: int = 0) -> list[int]:
    """End times of lines first..first+n-1 at a steady `rate` lines per second."""
    step = 1000.0 / rate
    return [start_ms + int((first + i) * step) for i in range(n)]


def lines(seed: int, start_ms: int, rate: float, fmt: str = "squid", **kw: int | float) -> Iterator[str]:
    """An endless stream of lines (each with its newline) starting at `start_ms`."""
    gen = LogGen(seed, fmt, **kw)  # type: ignore[arg-type]
    for first in itertools.count(0, 1000):
        yield from gen.render(times(start_ms, rate, 1000, first)).splitlines(keepends=True)


def write_file(path: str | os.PathLike[str], n: int, *, seed: int = 1, start_ms: int = 1_767_225_600_000,
               rate: float = 10_000, fmt: str = "squid", gen: LogGen | None = None, append: bool = False,
               squid_logformat: str = "squid", **kw: int | float) -> Truth:
    """Write `n` lines to `path` (fast) and return what was written."""
    gen = gen or LogGen(seed, fmt, squid_logformat=squid_logformat, **kw)  # type: ignore[arg-type]
    chunk = 100_000
    with open(path, "a" if append else "w", encoding="utf-8", newline="") as out:
        for first in range(0, n, chunk):
            out.write(gen.render(times(start_ms, rate, min(chunk, n - first), first)))
    return gen.truth()


def live(path: str | os.PathLike[str], rate: float, *, seed: int = 1, fmt: str = "squid",
         seconds: float | None = None, tick: float = 0.1, squid_logformat: str = "squid",
         **kw: int | float) -> Truth:
    """Append lines stamped with the wall clock at `rate` lines/s until SIGTERM/SIGINT or `seconds`."""
    gen = LogGen(seed, fmt, squid_logformat=squid_logformat, **kw)  # type: ignore[arg-type]
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    began = time.monotonic()
    written = 0
    with open(path, "a", encoding="utf-8", newline="") as out:
        while not stop:
            elapsed = time.monotonic() - began
            if seconds is not None and elapsed >= seconds:
                break
            due = int(elapsed * rate) - written
            if due > 0:
                now_ms = time.time_ns() // 1_000_000
                out.write(gen.render([now_ms] * due))
                out.flush()
                written += due
            time.sleep(tick)
    return gen.truth()


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loggen", description="Generate a realistic proxy access log.")
    p.add_argument("mode", choices=("write", "live"), help="write: N lines now; live: append at a steady rate")
    p.add_argument("--path", required=True)
    p.add_argument("--format", choices=FORMATS, default="squid")
    p.add_argument("--squid-logformat", choices=SQUID_LOGFORMATS, default="squid",
                   help="squid lines: the native format (default) or the README's extended 'proxymeter' one")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lines", type=int, default=100_000, help="write: how many lines")
    p.add_argument("--start", type=float, default=1_767_225_600, help="write: epoch seconds of the first line")
    p.add_argument("--rate", type=float, default=50, help="lines per second (time spacing, or live speed)")
    p.add_argument("--seconds", type=float, default=None, help="live: stop after this long")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--domains", type=int, default=5000)
    p.add_argument("--pool", type=int, default=65536, help="distinct events replayed")
    args = p.parse_args(list(argv) if argv is not None else None)
    if args.squid_logformat != "squid" and args.format != "squid":
        p.error(f"--squid-logformat {args.squid_logformat} needs --format squid")
    kw = dict(users=args.users, domains=args.domains, pool_size=args.pool)
    if args.mode == "write":
        t = write_file(args.path, args.lines, seed=args.seed, start_ms=int(args.start * 1000), rate=args.rate,
                       fmt=args.format, squid_logformat=args.squid_logformat, **kw)
    else:
        t = live(args.path, args.rate, seed=args.seed, fmt=args.format, seconds=args.seconds,
                 squid_logformat=args.squid_logformat, **kw)
    req, recv, sent, errors = t.totals()
    print(json.dumps({"lines": t.lines, "requests": req, "bytes_received": recv, "bytes_sent": sent,
                      "errors": errors}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
