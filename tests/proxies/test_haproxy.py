"""Real haproxy on loopback, HTTP mode (forward proxy with a userlist) and TCP mode."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.proxies import client as C
from tests.proxies import readme
from tests.proxies import traffic as T
from tests.proxies.checks import (
    ANY_PORT,
    LOOPBACK,
    ORIGIN_PORT,
    REST_MS,
    SOME_MS,
    check_activity,
    check_activity_api,
    check_all,
    client_side,
    split_target,
    target,
)
from tests.proxies.origin import Origin, free_port
from tests.proxies.procs import Child, file_lines, find_binary, stable_file
from tests.proxies.stack import Stack

pytestmark = pytest.mark.proxies

# The README's recommended logging (section proxy-setup), read from it: haproxy's own
# httplog / tcplog strings with the bytes up, the source address, the server and
# (http) the user appended, written by haproxy to stdout (no syslog framing) into the
# file the agent reads; the user variable set from Proxy-Authorization.
GLOBAL = f"""global
  {readme.haproxy_global_log()}
  maxconn 256
"""

DEFAULTS = """defaults
  log global
  timeout connect 3s
  timeout client 30s
  timeout server 30s
  timeout tunnel 30s
  retries 0
"""


def resolvers(origin: Origin) -> str:
    """Names are only ever asked of the test's NXDOMAIN responder on loopback."""
    return f"""
resolvers local
  nameserver ns 127.0.0.1:{origin.dns_port}
  resolve_retries 1
  timeout resolve 1s
  timeout retry 1s
  hold nx 1s
"""


IP_LITERAL = "{ req.hdr(host),host_only -m reg ^[0-9.]+$ }"
# a forward proxy resolving the request's host itself; a name that does not resolve
# gets haproxy's own 502, logged "LR 502" (proxy_error: the log cannot say why)
DNS_ERROR = "proxy_error"


def http_config(d: Path, port: int, origin: Origin) -> Path:
    users = "".join(f'  user "{u}" insecure-password "{p}"\n' for u, p in T.PASSWORDS.items())
    conf = d / "haproxy-http.cfg"
    conf.write_text(GLOBAL + DEFAULTS + resolvers(origin) + f"""
userlist proxyusers
{users}
frontend fe_http
  mode http
  {readme.haproxy_http_log_format()}
  bind 127.0.0.1:{port}
  # the user for the log, before anything can reject the request
  {readme.haproxy_user_var()}
  # a forward proxy: haproxy's http_auth reads Authorization, so the client's
  # Proxy-Authorization is copied there for the check
  http-request set-header Authorization %[req.hdr(Proxy-Authorization)] if {{ req.hdr(Proxy-Authorization) -m found }}
  http-request auth realm proxymeter unless {{ http_auth(proxyusers) }}
  http-request deny deny_status 403 if {{ req.hdr(host),host_only -m str {T.BLOCKED_HOST} }}
  http-request del-header Authorization
  http-request del-header Proxy-Authorization
  # connect where the absolute URL points: an IP literal as it is, a name resolved
  http-request do-resolve(txn.dstip,local,ipv4) req.hdr(host),host_only unless {IP_LITERAL}
  http-request return status 502 content-type text/plain string "no such host" if !{IP_LITERAL} !{{ var(txn.dstip) -m found }}
  http-request set-dst var(txn.dstip) if {{ var(txn.dstip) -m found }}
  http-request set-dst req.hdr(host),host_only if {IP_LITERAL}
  http-request set-dst-port req.hdr(host),port_only
  default_backend be_direct

backend be_direct
  mode http
  server direct 0.0.0.0:0
""")
    return conf


TCP_FRONTENDS = ("echo", "http", "refused", "denied", "dns")


def tcp_config(d: Path, ports: dict[str, int], origin: Origin) -> Path:
    conf = d / "haproxy-tcp.cfg"
    fmt = readme.haproxy_tcp_log_format()
    front = "".join(f"""
frontend fe_{name}
  mode tcp
  {fmt}
  bind 127.0.0.1:{ports[name]}
  {"tcp-request content reject" if name == "denied" else ""}
  default_backend be_{"echo" if name == "denied" else name}
""" for name in TCP_FRONTENDS)
    conf.write_text(GLOBAL + DEFAULTS + resolvers(origin) + front + f"""
backend be_echo
  mode tcp
  server echo 127.0.0.1:{origin.echo_port}

backend be_http
  mode tcp
  server origin 127.0.0.1:{origin.http_port}

backend be_refused
  mode tcp
  server closed 127.0.0.1:{origin.closed_port}

# a server by name that does not resolve has no address: "<NOSRV> SC" (upstream_error)
backend be_dns
  mode tcp
  server named {T.NOSUCH_HOST}:80 resolvers local init-addr none
""")
    return conf


def start_haproxy(binary: str, conf: Path, d: Path, log: Path, ports: list[int]) -> Child:
    # haproxy stamps local time without an offset: run it in UTC, the source's timezone
    env = dict(os.environ, TZ="UTC")
    proxy = Child("haproxy", [binary, "-f", str(conf), "-db"], d, env=env, stdout=log)
    for p in ports:
        proxy.wait_port(p)
    return proxy


HTX_SLACK = 64  # the documented bound for %U and %B in http mode (README, proxy-setup)


def http_bounds(s: C.Sent) -> tuple[tuple[int, int], tuple[int, int]]:
    """%U / %B = the request / response as haproxy holds them internally (HTX): bodies
    exact, the header framing not counted as on the wire, so up to HTX_SLACK bytes per
    message less than the client sent / received. An aborted download: at least what
    the client read (less the slack), at most the whole response."""
    up = (s.total_up - HTX_SLACK, s.total_up)
    got = s.total_down
    if s.error == "client_aborted":
        return up, (got - HTX_SLACK, T.ABORT_SIZE + 1024)
    return up, (got - HTX_SLACK, got)


def tcp_bounds(s: C.Sent) -> tuple[tuple[int, int], tuple[int, int]]:
    """%U / %B = bytes from / to the client: exact, except after the client's hang-up
    (haproxy relayed more than the client read, and at most what it wrote)."""
    if s.error == "client_aborted" or s.note:
        return (0, s.total_up), (s.total_down, s.total_up)
    return (s.total_up, s.total_up), (s.total_down, s.total_down)


def http_activity(s: C.Sent) -> dict[str, object]:
    """The README's haproxy activity table (http mode) from the client's view: haproxy
    connected to the target (%bi, %bp; %TR + %Tw + %Tc) unless it answered itself
    (authentication, the deny rule, the name that did not resolve); a refused connect
    has its source address and port too (the origin never saw them). This forward
    proxy's `set-dst` rules rewrite the destination %fi:%fp log (the README says so):
    the target's address and port once they ran, the listener's before."""
    host, port = split_target(s.target, 80)
    connected = s.error in ("", "client_aborted")
    tried = connected or s.error == "connection_refused"
    rewritten = tried  # the rules that reject come before set-dst
    return client_side(s) | target(host, port) | {
        "listen_address": LOOPBACK,
        "listen_port": port if rewritten else s.via[1],
        "proxy_address": LOOPBACK if tried else None,
        "proxy_port": ORIGIN_PORT if connected else ANY_PORT if tried else None,
        "handshake_ms": SOME_MS if connected else None,
        "tunnel_ms": None,
    }


def tcp_activity(origin: Origin) -> Callable[[C.Sent], dict[str, object]]:
    """The same for tcp mode: the target is the frontend's server (%si:%sp), the whole
    session after the connect a tunnel (%Tt - %Tw - %Tc)."""
    servers = {"echo": origin.echo_port, "abort": origin.echo_port, "http": origin.http_port,
               "refused": origin.closed_port}

    def expect(s: C.Sent) -> dict[str, object]:
        connected = s.error in ("", "client_aborted")
        tried = connected or s.error == "connection_refused"
        port = servers.get(s.target)
        return client_side(s, user=False) | target(LOOPBACK if port else None, port) | {
            "listen_address": LOOPBACK,
            "proxy_address": LOOPBACK if tried else None,
            "proxy_port": ORIGIN_PORT if connected else ANY_PORT if tried else None,
            "handshake_ms": SOME_MS if connected else None,
            "tunnel_ms": REST_MS if connected else None,
        }

    return expect


def test_haproxy_http_totals_match_client(origin: Origin, workdir: Path, stack_factory: list[Stack]) -> None:
    binary = find_binary("haproxy")
    port = free_port()
    log = workdir / "haproxy-http.log"
    stack = Stack(workdir, log, "haproxy")
    stack_factory.append(stack)
    proxy = start_haproxy(binary, http_config(workdir, port, origin), workdir, log, [port])
    stack.children.append(proxy)
    stack.start()

    truth = C.Truth()
    # haproxy opens no CONNECT tunnels itself (it would pass the CONNECT on to the
    # server): tunnels are the tcp-mode test's
    T.http_proxy(truth, ("127.0.0.1", port), origin, connect=False, dns=True, expect=T.Expect(dns=DNS_ERROR))
    stable_file(log)
    proxy.send(signal.SIGUSR1)  # soft stop: finishes and logs what is open, then exits
    proxy.wait(15.0)
    assert len(file_lines(log, b"127.0.0.1:")) == len(truth.sent), (file_lines(log), truth.sent)
    stack.finish()
    logs = stack.logs() + log.read_text(errors="replace")
    check_all(stack.api, truth, http_bounds, peaks={T.BURST: T.BURST_N, T.LONG: 1}, logs=logs)
    records = stack.activity()
    check_activity(records, truth, http_bounds, http_activity, origin_ports=origin.peer_ports, logs=logs)
    check_activity_api(stack.api, records, logs=logs)


def test_haproxy_tcp_totals_match_client(origin: Origin, workdir: Path, stack_factory: list[Stack]) -> None:
    binary = find_binary("haproxy")
    ports = {k: free_port() for k in TCP_FRONTENDS}
    log = workdir / "haproxy-tcp.log"
    stack = Stack(workdir, log, "haproxy")
    stack_factory.append(stack)
    proxy = start_haproxy(binary, tcp_config(workdir, ports, origin), workdir, log, list(ports.values()))
    stack.children.append(proxy)
    stack.start()

    truth = C.Truth()
    lo = "127.0.0.1"
    T.forwarder(truth, T.Forwarder(
        echo=lambda payload, hold: C.tcp_echo(truth, (lo, ports["echo"]), target="echo", payload=payload,
                                              hold_s=hold),
        get=lambda path: C.tcp_get(truth, (lo, ports["http"]), path, target="http",
                                   host=f"127.0.0.1:{origin.http_port}"),
        refused=lambda: C.tcp_echo(truth, (lo, ports["refused"]), target="refused", error="connection_refused"),
        denied=lambda: C.tcp_echo(truth, (lo, ports["denied"]), target="denied", error="forbidden_host"),
        dns=lambda: C.tcp_echo(truth, (lo, ports["dns"]), target="dns", error="upstream_error"),
        abort=lambda: C.tcp_echo(truth, (lo, ports["echo"]), target="abort", payload=b"a" * 200_000,
                                 abort_after=1000, error="client_aborted"),
    ))
    stable_file(log)
    proxy.send(signal.SIGUSR1)
    proxy.wait(15.0)
    assert len(file_lines(log, b"127.0.0.1:")) == len(truth.sent), (file_lines(log), truth.sent)
    stack.finish()
    logs = stack.logs() + log.read_text(errors="replace")
    check_all(stack.api, truth, tcp_bounds, peaks={"": T.BURST_N}, logs=logs)
    records = stack.activity()
    check_activity(records, truth, tcp_bounds, tcp_activity(origin), origin_ports=origin.peer_ports, logs=logs)
    check_activity_api(stack.api, records, logs=logs)
