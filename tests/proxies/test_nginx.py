"""Real nginx (stream module) on loopback: TCP forwarding, refused, denied, DNS failure."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.proxies import client as C
from tests.proxies import readme
from tests.proxies import traffic as T
from tests.proxies.checks import LOOPBACK, REST_MS, SOME_MS, check_activity, check_activity_api, check_all, client_side, target
from tests.proxies.origin import Origin, free_port
from tests.proxies.procs import Child, file_lines, find_binary, find_file, stable_file
from tests.proxies.stack import Stack

pytestmark = pytest.mark.proxies

# The README's lines (section proxy-setup), read from it; only the log path differs.
STREAM_MODULE = readme.nginx_stream_module()

# nginx stream has no authentication: every session goes to the default user.
# nginx's access log does not say why a session failed: a refused upstream is logged as
# 502 (upstream_error), a name that did not resolve as 500 (proxy_error); its error log
# has the reason.
ERRORS = {"refused": "upstream_error", "denied": "forbidden_host", "dns": "proxy_error"}


def nginx_config(d: Path, ports: dict[str, int], origin: Origin) -> Path:
    conf = d / "nginx.conf"
    conf.write_text(f"""{readme.nginx_load_module()}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 256; }}
stream {{
  {readme.nginx_log_format()}
  {readme.nginx_access_log(d / "stream.log")}
  # names are only resolved by the test's NXDOMAIN responder on loopback
  resolver 127.0.0.1:{origin.dns_port} valid=1s ipv6=off;
  resolver_timeout 3s;
  proxy_connect_timeout 3s;
  map $server_port $named_target {{ default {T.NOSUCH_HOST}:80; }}
  server {{ listen 127.0.0.1:{ports["echo"]}; proxy_pass 127.0.0.1:{origin.echo_port}; }}
  server {{ listen 127.0.0.1:{ports["http"]}; proxy_pass 127.0.0.1:{origin.http_port}; }}
  server {{ listen 127.0.0.1:{ports["refused"]}; proxy_pass 127.0.0.1:{origin.closed_port}; }}
  server {{ listen 127.0.0.1:{ports["denied"]}; deny all; proxy_pass 127.0.0.1:{origin.echo_port}; }}
  server {{ listen 127.0.0.1:{ports["dns"]}; proxy_pass $named_target; }}
}}
""")
    return conf


def nginx_bounds(s: C.Sent) -> tuple[tuple[int, int], tuple[int, int]]:
    """$bytes_received (from the client) -> bytes_sent, $bytes_sent (to the client) ->
    bytes_received: exact; after the client's hang-up nginx may have relayed more than
    the client read, and less than it wrote."""
    if s.note or s.target == "abort":
        return (0, s.total_up), (s.total_down, s.total_up)
    return (s.total_up, s.total_up), (s.total_down, s.total_down)


def nginx_activity(origin: Origin) -> Callable[[C.Sent], dict[str, object]]:
    """The README's nginx activity table from the client's view: the target is the
    upstream nginx connected to ($upstream_addr), the connect time the handshake and
    the rest of the session the tunnel; nginx logs no outgoing address or port."""
    upstreams = {"echo": origin.echo_port, "abort": origin.echo_port, "http": origin.http_port,
                 "refused": origin.closed_port}

    def expect(s: C.Sent) -> dict[str, object]:
        port = upstreams.get(s.target)
        connected = s.target in ("echo", "abort", "http")
        return client_side(s, user=False) | target(LOOPBACK if port else None, port) | {
            "listen_address": LOOPBACK,
            "proxy_address": None,
            "proxy_port": None,
            "handshake_ms": SOME_MS if connected else None,
            "tunnel_ms": REST_MS if connected else None,
        }

    return expect


def test_nginx_stream_totals_match_client(origin: Origin, workdir: Path, stack_factory: list[Stack]) -> None:
    binary = find_binary("nginx")
    find_file(STREAM_MODULE)  # Debian's libnginx-mod-stream
    ports = {k: free_port() for k in ("echo", "http", "refused", "denied", "dns")}
    log = workdir / "stream.log"
    stack = Stack(workdir, log, "nginx")
    stack_factory.append(stack)
    conf = nginx_config(workdir, ports, origin)
    proxy = Child("nginx", [binary, "-g", "daemon off;", "-c", str(conf), "-p", str(workdir),
                                   "-e", str(workdir / "nginx-error.log")], workdir)
    stack.children.append(proxy)
    for p in ports.values():
        proxy.wait_port(p)
    stack.start()

    truth = C.Truth()
    lo = "127.0.0.1"

    def session(name: str, **kw: object) -> C.Sent:
        return C.tcp_echo(truth, (lo, ports[name]), target=name, error=ERRORS.get(name, ""), **kw)  # type: ignore[arg-type]

    T.forwarder(truth, T.Forwarder(
        echo=lambda payload, hold: session("echo", payload=payload, hold_s=hold),
        get=lambda path: C.tcp_get(truth, (lo, ports["http"]), path, target="http",
                                   host=f"127.0.0.1:{origin.http_port}"),
        refused=lambda: session("refused"),
        denied=lambda: session("denied"),
        dns=lambda: session("dns"),
        # nginx stream logs a client's hang-up as a normal end (status 200): no error
        abort=lambda: C.tcp_echo(truth, (lo, ports["echo"]), target="abort", payload=b"a" * 200_000,
                                 abort_after=1000),
    ))
    stable_file(log)
    proxy.send(signal.SIGQUIT)  # graceful: workers finish and close their logs
    proxy.wait(15.0)
    assert len(file_lines(log)) == len(truth.sent), (file_lines(log), truth.sent)
    stack.finish()
    logs = stack.logs() + log.read_text(errors="replace")
    check_all(stack.api, truth, nginx_bounds, peaks={"": T.BURST_N}, logs=logs)
    records = stack.activity()
    check_activity(records, truth, nginx_bounds, nginx_activity(origin), origin_ports=origin.peer_ports,
                   logs=logs)
    check_activity_api(stack.api, records, logs=logs)
