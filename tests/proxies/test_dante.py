"""Real dante (danted) on loopback: SOCKS5 with username/password logins, GETs and
tunnels, refused, blocked, DNS failure, a failed login, abort; the README's log lines.

Dante's `username` method checks the system's own accounts (getpwnam/getspnam and
crypt). The test does not touch the host's: danted runs in a private mount namespace
(root only) where /etc/passwd is the host's file plus the test's users, /etc/shadow
holds only the test's users' hashes, and /etc/resolv.conf points at the test's NXDOMAIN
responder, so the DNS case never leaves loopback. The mounts end with the namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.proxies import client as C
from tests.proxies import readme
from tests.proxies import traffic as T
from tests.proxies.checks import ANY_PORT, LOOPBACK, ORIGIN_PORT, WHOLE_MS, check_activity, check_activity_api, check_all, client_side, split_target, target
from tests.proxies.origin import Origin, free_port
from tests.proxies.procs import Child, find_binary, stable_file
from tests.proxies.stack import Stack

pytestmark = pytest.mark.proxies

FIRST_UID = 61000  # the test users' uids, inside the namespace only
SALT = b"$6$proxymeter$"  # SHA-512 crypt, which every libcrypt checks


def _crypt(password: str) -> str:
    """The system's crypt(3), the function dante checks passwords with."""
    name = ctypes.util.find_library("crypt")
    if name is None:
        pytest.fail("libcrypt not found (Debian: libcrypt1)")
    lib = ctypes.CDLL(name)
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    hashed = lib.crypt(password.encode(), SALT)
    if not hashed or not hashed.startswith(SALT):
        pytest.fail(f"crypt() cannot make SHA-512 hashes: {hashed!r}")
    return hashed.decode()


def accounts(d: Path) -> tuple[Path, Path]:
    """passwd (the host's entries, which dante needs for its own users, plus the test's)
    and shadow (the test's users only). BADAUTH's real password is one the client never
    sends."""
    passwords = dict(T.PASSWORDS, **{T.BADAUTH: "right"})
    passwd, shadow = d / "passwd", d / "shadow"
    host = Path("/etc/passwd").read_text(encoding="utf-8")
    passwd.write_text(host.rstrip("\n") + "\n" + "".join(
        f"{u}:x:{FIRST_UID + i}:{FIRST_UID + i}::/nonexistent:/usr/sbin/nologin\n" for i, u in enumerate(passwords)))
    shadow.write_text("".join(f"{u}:{_crypt(p)}:19000:0:99999:7:::\n" for u, p in passwords.items()))
    os.chmod(shadow, 0o600)
    os.chmod(passwd, 0o644)
    return passwd, shadow


def dante_config(d: Path, port: int) -> Path:
    conf = d / "danted.conf"
    conf.write_text(f"""# the README's lines (section proxy-setup), read from it: the log file and the
# rules' log settings; only the path and the denied target differ
{readme.dante_logoutput(d / "danted.log")}
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
socksmethod: username
clientmethod: none
user.privileged: root
user.unprivileged: nobody
{readme.dante_client_pass()}
# the ACL denial: a target address off limits to SOCKS clients
{readme.dante_socks_block(f"{T.BLOCKED_IP}/32")}
{readme.dante_socks_pass()}
""")
    return conf


def dante_command(binary: str, conf: Path, d: Path) -> list[str]:
    """danted in a private mount namespace with the test's accounts and resolver."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) not found")
    passwd, shadow = accounts(d)
    resolv = d / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    mounts = " && ".join(f'mount --bind "{src}" "{dst}"' for src, dst in
                         ((resolv, "/etc/resolv.conf"), (passwd, "/etc/passwd"), (shadow, "/etc/shadow")))
    return [unshare, "-m", "--propagation", "private", "sh", "-c", f'{mounts} && exec "{binary}" -f "{conf}"']


def dante_bounds(s: C.Sent) -> tuple[tuple[int, int], tuple[int, int]]:
    """The disconnect line counts both directions of the tunnel payload: exact; after the
    client's hang-up dante may have relayed more than the client read (at most the
    origin's reply), while the request it had read is exact."""
    if s.error == "client_aborted":
        return (s.total_up, s.total_up), (s.total_down, T.ABORT_SIZE + 1024)
    return (s.total_up, s.total_up), (s.total_down, s.total_down)


def dante_activity(s: C.Sent) -> dict[str, object]:
    """The README's dante activity table from the client's view: a session dante
    connected has its open line, so it was a tunnel from start to end, from dante's
    outgoing address and a port the origin saw; a refused connect names the address and
    port it came from (never seen by the origin). A failed login names no target, a
    name that did not resolve no port."""
    connected = s.error in ("", "client_aborted")
    tried = connected or s.error == "connection_refused"
    host, port = split_target(s.target, 0) if s.error != "auth_failed" else (None, None)
    if s.error == "dns_failure":
        port = None
    return client_side(s, protocol="socks") | target(host, port) | {
        "listen_address": LOOPBACK,
        "proxy_address": LOOPBACK if tried else None,
        "proxy_port": ORIGIN_PORT if connected else ANY_PORT if tried else None,
        "handshake_ms": None,
        "tunnel_ms": WHOLE_MS if connected else None,
    }


def test_dante_totals_match_client(origin: Origin, workdir: Path, stack_factory: list[Stack]) -> None:
    binary = find_binary("danted")
    if os.geteuid() != 0:
        pytest.skip("dante's logins need a private mount namespace with the test's accounts: "
                    "root only (make test runs as root)")
    if origin.dns_port != 53:
        pytest.fail("127.0.0.1:53 is taken: dante (the C library) needs the test's NXDOMAIN responder there")
    port = free_port()
    log = workdir / "danted.log"
    stack = Stack(workdir, log, "dante")
    stack_factory.append(stack)
    proxy = Child("danted", dante_command(binary, dante_config(workdir, port), workdir), workdir)
    stack.children.append(proxy)
    proxy.wait_port(port)
    stack.start()

    truth = C.Truth()
    T.socks_proxy(truth, ("127.0.0.1", port), origin, dns=True)
    stable_file(log)
    proxy.stop(signal.SIGTERM, 10.0)
    stack.finish()
    logs = stack.logs() + log.read_text(errors="replace")
    check_all(stack.api, truth, dante_bounds, peaks={T.BURST: T.BURST_N, T.LONG: 1}, logs=logs)
    records = stack.activity()
    check_activity(records, truth, dante_bounds, dante_activity, origin_ports=origin.peer_ports, logs=logs)
    check_activity_api(stack.api, records, logs=logs)
