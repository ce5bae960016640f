"""Real dante (danted) on loopback: SOCKS5 tunnels, refused, blocked, DNS failure, abort.

No authentication: dante's `username` method checks the system's own accounts and its
PAM method runs helpers in a way pam_exec cannot serve, so a test would have to create
system users. Every session therefore belongs to the default user (README says so).
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.proxies import client as C
from tests.proxies import traffic as T
from tests.proxies.checks import check_all
from tests.proxies.origin import Origin, free_port
from tests.proxies.procs import Child, find_binary, stable_file
from tests.proxies.stack import Stack

pytestmark = pytest.mark.proxies

ERRORS = {"refused": "connection_refused", "denied": "forbidden_host", "dns": "dns_failure",
          "abort": "client_aborted"}


def dante_config(d: Path, port: int, origin: Origin) -> Path:
    conf = d / "danted.conf"
    privileged = "user.privileged: root\nuser.unprivileged: nobody\n" if os.geteuid() == 0 else ""
    conf.write_text(f"""logoutput: {d}/danted.log
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
socksmethod: none
clientmethod: none
{privileged}
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: error }}
# the ACL denial: the origin's HTTP port is off limits to SOCKS clients
socks block {{ from: 0.0.0.0/0 to: 127.0.0.1/32 port = {origin.http_port} log: connect error }}
socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect disconnect error }}
""")
    return conf


def dante_command(binary: str, conf: Path, d: Path, origin: Origin) -> tuple[list[str], bool]:
    """danted resolves names with the C library, which reads /etc/resolv.conf. As root,
    run it in a private mount namespace whose resolv.conf points at the test's NXDOMAIN
    responder on 127.0.0.1:53, so the DNS case never leaves loopback. Otherwise: no DNS
    case. Returns (argv, dns_case_possible)."""
    unshare = shutil.which("unshare")
    if os.geteuid() == 0 and unshare and origin.dns_port == 53:
        resolv = d / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        script = f'mount --bind "{resolv}" /etc/resolv.conf && exec "{binary}" -f "{conf}"'
        return [unshare, "-m", "--propagation", "private", "sh", "-c", script], True
    return [binary, "-f", str(conf)], False


def dante_bounds(s: C.Sent) -> tuple[tuple[int, int], tuple[int, int]]:
    """The disconnect line counts both directions of the tunnel payload: exact; after the
    client's hang-up dante may have relayed more than the client read."""
    if s.target == "abort":
        return (0, s.up), (s.down, s.up)
    return (s.up, s.up), (s.down, s.down)


def test_dante_totals_match_client(origin: Origin, workdir: Path, stack_factory: list[Stack]) -> None:
    binary = find_binary("danted")
    port = free_port()
    log = workdir / "danted.log"
    stack = Stack(workdir, log, "dante")
    stack_factory.append(stack)
    argv, dns_ok = dante_command(binary, dante_config(workdir, port, origin), workdir, origin)
    proxy = Child("danted", argv, workdir)
    stack.children.append(proxy)
    proxy.wait_port(port)
    stack.start()

    truth = C.Truth()
    P = ("127.0.0.1", port)

    def socks(name: str, host: str, p: int, **kw: object) -> C.Sent:
        s = C.socks5(truth, P, host, p, error=ERRORS.get(name, ""), **kw)  # type: ignore[arg-type]
        s.target = name
        return s

    T.forwarder(truth, T.Forwarder(
        echo=lambda payload, hold: socks("echo", "127.0.0.1", origin.echo_port, payload=payload, hold_s=hold),
        refused=lambda: socks("refused", "127.0.0.1", origin.closed_port),
        denied=lambda: socks("denied", "127.0.0.1", origin.http_port),
        dns=(lambda: socks("dns", T.NOSUCH_HOST, 80)) if dns_ok else None,
        abort=lambda: socks("abort", "127.0.0.1", origin.echo_port, payload=b"a" * 200_000, abort_after=1000),
    ))
    stable_file(log)
    proxy.stop(signal.SIGTERM, 10.0)
    stack.finish()
    check_all(stack.api, truth, dante_bounds, peaks={"": T.BURST_N}, logs=stack.logs() + log.read_text(errors="replace"))
