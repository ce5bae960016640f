"""Real squid on loopback: basic auth, an ACL, local DNS failure; the README's logformat."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tests.proxies import client as C
from tests.proxies import readme
from tests.proxies import traffic as T
from tests.proxies.checks import LOOPBACK, ORIGIN_PORT, check_activity, check_activity_api, check_all, client_side, split_target, target
from tests.proxies.origin import Origin, free_port
from tests.proxies.procs import Child, file_lines, find_binary
from tests.proxies.stack import Stack

pytestmark = pytest.mark.proxies

# A basic_auth helper (squid's helper protocol: "user password" URL-escaped per line,
# answer OK/ERR) reading "user:password" lines from the file given as argument.
AUTH_HELPER = r'''import sys
from urllib.parse import unquote
users = {}
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        name, sep, pw = line.rstrip("\n").rpartition(":")
        if sep:
            users[name] = pw
for line in sys.stdin:
    parts = line.strip().split(" ")
    name = unquote(parts[0]) if parts else ""
    pw = unquote(parts[1]) if len(parts) > 1 else ""
    sys.stdout.write("OK\n" if name and users.get(name) == pw else "ERR\n")
    sys.stdout.flush()
'''

HEAD_SLACK = 1024  # the documented bound for squid's headers in an aborted reply
# squid runs its helpers as its own unprivileged user: Debian's python3 (the one `make`
# builds the venv with), else the real interpreter behind this one
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else os.path.realpath(sys.executable)


def squid_config(d: Path, port: int, origin: Origin) -> Path:
    (d / "auth_helper.py").write_text(AUTH_HELPER)
    (d / "passwd").write_text("".join(f"{u}:{p}\n" for u, p in T.PASSWORDS.items() if u != T.BADAUTH)
                              + f"{T.BADAUTH}:right\n")
    conf = d / "squid.conf"
    conf.write_text(f"""
http_port 127.0.0.1:{port}
visible_hostname proxymeter-test
pid_filename {d}/squid.pid
cache_log {d}/cache.log
coredump_dir {d}
# the README's two lines (section proxy-setup), read from it; only the path differs
{readme.squid_logformat()}
{readme.squid_access_log(d / "access.log")}
cache deny all
cache_mem 8 MB
shutdown_lifetime 1 seconds
pinger_enable off
# squid resolves names itself: only ever ask 127.0.0.1, where the test's responder
# answers NXDOMAIN to everything, so nothing leaves the loopback interface
dns_nameservers 127.0.0.1
dns_timeout 3 seconds
connect_timeout 3 seconds
auth_param basic program {PYTHON} {d}/auth_helper.py {d}/passwd
auth_param basic children 3
auth_param basic realm proxymeter
acl authed proxy_auth REQUIRED
acl blocked dstdomain {T.BLOCKED_HOST}
http_access deny !authed
http_access deny blocked
http_access allow authed
http_access deny all
""")
    return conf


def squid_bounds(s: C.Sent) -> tuple[tuple[int, int], tuple[int, int]]:
    """%>st = request head + tunnel payload up, %<st = reply head + body down: exact,
    except a download the client aborted (squid had sent more than the client read)."""
    up = s.total_up
    if s.kind == "connect" and s.status != 200:
        return (up, up), (0, 0)  # squid logs 0 for the error page of a failed CONNECT
    if s.error == "client_aborted":
        return (up, up), (s.total_down, T.ABORT_SIZE + HEAD_SLACK)
    return (up, up), (s.total_down, s.total_down)


def squid_activity(s: C.Sent) -> dict[str, object]:
    """The README's squid activity table, from the client's view of the request: squid
    connected to the target (from its outgoing address and a source port the origin saw)
    unless it refused, failed to resolve or was refused itself."""
    host, port = split_target(s.target, 443 if s.kind == "connect" else 80)
    connected = s.error in ("", "client_aborted")
    return client_side(s) | target(host, port) | {
        "listen_address": LOOPBACK,
        "proxy_address": LOOPBACK if connected else None,
        "proxy_port": ORIGIN_PORT if connected else None,
        "handshake_ms": None,
        "tunnel_ms": None,
    }


def test_squid_totals_match_client(origin: Origin, workdir: Path, stack_factory: list[Stack]) -> None:
    squid = find_binary("squid")
    if origin.dns_port != 53:
        # squid asks its dns_nameservers on port 53 only (also for the ACL's reverse
        # lookups): without the test's responder there, queries would reach whatever
        # resolver listens on 127.0.0.1:53, and maybe leave the host
        why = "squid needs the test's NXDOMAIN responder on 127.0.0.1:53"
        if os.geteuid() != 0:
            pytest.skip(f"{why}: binding port 53 needs root (make test runs as root)")
        pytest.fail(f"{why}, and that port is taken")
    port = free_port()
    log = workdir / "access.log"
    stack = Stack(workdir, log, "squid")
    stack_factory.append(stack)
    proxy = Child("squid", [squid, "-N", "-f", str(squid_config(workdir, port, origin))], workdir)
    stack.children.append(proxy)
    proxy.wait_port(port)
    stack.start()

    truth = C.Truth()
    T.http_proxy(truth, ("127.0.0.1", port), origin, connect=True, dns=True)
    # A graceful stop flushes squid's log daemon: every line is on disk after it.
    proxy.send(signal.SIGTERM)
    assert proxy.wait(20.0) == 0, proxy.output()
    assert len(file_lines(log)) == len(truth.sent), (file_lines(log), truth.sent)
    stack.finish()
    logs = stack.logs() + log.read_text(errors="replace")
    check_all(stack.api, truth, squid_bounds, peaks={T.BURST: T.BURST_N, T.LONG: 1}, logs=logs)
    records = stack.activity()
    check_activity(records, truth, squid_bounds, squid_activity, origin_ports=origin.peer_ports, logs=logs)
    check_activity_api(stack.api, records, logs=logs)
