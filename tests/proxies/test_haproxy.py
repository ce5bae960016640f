"""Real haproxy on loopback, HTTP mode (forward proxy with a userlist) and TCP mode."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.proxies import client as C
from tests.proxies import traffic as T
from tests.proxies.checks import check_all
from tests.proxies.origin import Origin, free_port
from tests.proxies.procs import Child, file_lines, find_binary, stable_file
from tests.proxies.stack import Stack

pytestmark = pytest.mark.proxies

# The README's recommended logging (section proxy-setup): haproxy's own httplog /
# tcplog strings with the bytes up, the source address, the server and (http) the user
# appended, written by haproxy to stdout (no syslog framing) into the file the agent reads.
HTTP_LOG_FORMAT = ('log-format "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc '
                   '%ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r %U %bi %si:%sp %{+Q}[var(txn.pm_user)]"')
TCP_LOG_FORMAT = ('log-format "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq '
                  '%U %bi %si:%sp"')

GLOBAL = """global
  log stdout format raw local0 info
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


def http_config(d: Path, port: int, origin: Origin) -> Path:
    users = "".join(f'  user "{u}" insecure-password "{p}"\n' for u, p in T.PASSWORDS.items())
    conf = d / "haproxy-http.cfg"
    conf.write_text(GLOBAL + DEFAULTS + f"""
userlist proxyusers
{users}
frontend fe_http
  mode http
  {HTTP_LOG_FORMAT}
  bind 127.0.0.1:{port}
  # a forward proxy: haproxy's http_auth reads Authorization, so the client's
  # Proxy-Authorization is copied there; the user is kept for the log before the check
  http-request set-header Authorization %[req.hdr(Proxy-Authorization)] if {{ req.hdr(Proxy-Authorization) -m found }}
  http-request set-var(txn.pm_user) http_auth_user
  http-request auth realm proxymeter unless {{ http_auth(proxyusers) }}
  http-request deny deny_status 403 if {{ req.hdr(host),host_only -m str {T.BLOCKED_HOST} }}
  http-request del-header Authorization
  http-request del-header Proxy-Authorization
  # connect where the absolute URL points (IP literals only: no per-request DNS here)
  http-request set-dst req.hdr(host),host_only
  http-request set-dst-port req.hdr(host),port_only
  default_backend be_direct

backend be_direct
  mode http
  server direct 0.0.0.0:0
""")
    return conf


def tcp_config(d: Path, ports: dict[str, int], origin: Origin) -> Path:
    conf = d / "haproxy-tcp.cfg"
    conf.write_text(GLOBAL + DEFAULTS + f"""
frontend fe_echo
  mode tcp
  {TCP_LOG_FORMAT}
  bind 127.0.0.1:{ports["echo"]}
  default_backend be_echo

frontend fe_refused
  mode tcp
  {TCP_LOG_FORMAT}
  bind 127.0.0.1:{ports["refused"]}
  default_backend be_closed

frontend fe_denied
  mode tcp
  {TCP_LOG_FORMAT}
  bind 127.0.0.1:{ports["denied"]}
  tcp-request content reject
  default_backend be_echo

backend be_echo
  mode tcp
  server echo 127.0.0.1:{origin.echo_port}

backend be_closed
  mode tcp
  server closed 127.0.0.1:{origin.closed_port}
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
    up = (s.head_up - HTX_SLACK, s.head_up)
    got = s.head_down + s.down
    if s.error == "client_aborted":
        return up, (got - HTX_SLACK, T.ABORT_SIZE + 1024)
    return up, (got - HTX_SLACK, got)


def tcp_bounds(s: C.Sent) -> tuple[tuple[int, int], tuple[int, int]]:
    """%U / %B = bytes from / to the client: exact, except after the client's hang-up
    (haproxy relayed more than the client read, and at most what it wrote)."""
    if s.error == "client_aborted" or s.note:
        return (0, s.up), (s.down, s.up)
    return (s.up, s.up), (s.down, s.down)


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
    T.http_proxy(truth, ("127.0.0.1", port), origin, connect=False, dns=False)
    stable_file(log)
    proxy.send(signal.SIGUSR1)  # soft stop: finishes and logs what is open, then exits
    proxy.wait(15.0)
    assert len(file_lines(log, b"127.0.0.1:")) == len(truth.sent), (file_lines(log), truth.sent)
    stack.finish()
    check_all(stack.api, truth, http_bounds, peaks={T.BURST: T.BURST_N, T.LONG: 1},
              logs=stack.logs() + log.read_text(errors="replace"))


def test_haproxy_tcp_totals_match_client(origin: Origin, workdir: Path, stack_factory: list[Stack]) -> None:
    binary = find_binary("haproxy")
    ports = {k: free_port() for k in ("echo", "refused", "denied")}
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
        refused=lambda: C.tcp_echo(truth, (lo, ports["refused"]), target="refused", error="connection_refused"),
        denied=lambda: C.tcp_echo(truth, (lo, ports["denied"]), target="denied", error="forbidden_host"),
        abort=lambda: C.tcp_echo(truth, (lo, ports["echo"]), target="abort", payload=b"a" * 200_000,
                                 abort_after=1000, error="client_aborted"),
    ))
    stable_file(log)
    proxy.send(signal.SIGUSR1)
    proxy.wait(15.0)
    assert len(file_lines(log, b"127.0.0.1:")) == len(truth.sent), (file_lines(log), truth.sent)
    stack.finish()
    check_all(stack.api, truth, tcp_bounds, peaks={"": T.BURST_N}, logs=stack.logs() + log.read_text(errors="replace"))
