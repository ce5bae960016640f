"""The test's client: drives traffic through a proxy over raw sockets and records the truth.

Raw sockets (not an HTTP library) because the test must control every byte: the
Proxy-Authorization header, the exact request sent, reading only part of a body and
hanging up. Every call has a socket timeout and every loop a bound, so a misbehaving
proxy fails the test instead of hanging it.

`Truth` is the oracle: one `Sent` per request the client made, with what the client
itself observed (bytes, times, outcome) and the normalised error code the test expects
the agent to report. The assertions compare the collector's answers with sums over it.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TIMEOUT_S = 20.0
MAX_HEAD = 64 * 1024
READ = 256 * 1024


@dataclass
class Sent:
    """One request as the client saw it."""

    user: str  # proxy user name sent ("" = none)
    kind: str  # "get", "connect", "socks", "tcp"
    target: str  # "host:port" as asked
    error: str  # expected normalised error code ("" = served)
    status: int = 0  # HTTP status (or SOCKS reply code) the client got
    up: int = 0  # bytes the client sent after the request head (tunnel payload)
    head_up: int = 0  # bytes of the request head itself
    down: int = 0  # body / tunnel bytes the client received
    head_down: int = 0  # bytes of the response head
    start: float = 0.0
    end: float = 0.0
    note: str = ""


@dataclass
class Truth:
    sent: list[Sent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, s: Sent) -> Sent:
        with self._lock:
            self.sent.append(s)
        return s

    def by_user(self, user: str) -> list[Sent]:
        return [s for s in self.sent if s.user == user]

    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sent:
            if s.error:
                out[s.error] = out.get(s.error, 0) + 1
        return out


def _connect(addr: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(addr, timeout=TIMEOUT_S)
    sock.settimeout(TIMEOUT_S)
    return sock


def _read_head(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], int]:
    """Reads one HTTP response head into buf; returns (status, headers, head length)."""
    for _ in range(1000):
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(buf) > MAX_HEAD:
            raise OSError("response head too long")
        data = sock.recv(READ)
        if not data:
            raise OSError(f"connection closed inside the response head: {bytes(buf[:200])!r}")
        buf += data
    else:
        raise OSError("response head never ended")
    head = bytes(buf[: end + 4]).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, end + 4


def _read_body(sock: socket.socket, buf: bytearray, length: int | None, limit: int | None) -> int:
    """Reads the body (length bytes, or to EOF when None), stopping early at `limit`."""
    got = len(buf)
    want = length if length is not None else 1 << 62
    if limit is not None:
        want = min(want, limit)
    for _ in range(100_000):
        if got >= want:
            break
        data = sock.recv(READ)
        if not data:
            break
        got += len(data)
    return got


def auth_header(user: str | None, password: str | None, header: str = "Proxy-Authorization") -> str:
    if user is None:
        return ""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"{header}: Basic {token}\r\n"


def http_get(
    truth: Truth,
    proxy: tuple[str, int],
    url: str,
    *,
    user: str | None,
    password: str | None = None,
    error: str = "",
    abort_after: int | None = None,
    log_user: str | None = None,
    auth_header_name: str = "Proxy-Authorization",
) -> Sent:
    """GET `url` (absolute form) through an HTTP proxy; abort_after: hang up after that
    many body bytes. `log_user` is the name the proxy is expected to log (defaults to
    `user`; a failed login may be logged without a name)."""
    host = url.split("//", 1)[1].split("/", 1)[0]
    head = (
        f"GET {url} HTTP/1.1\r\nHost: {host}\r\n"
        f"{auth_header(user, password, auth_header_name)}User-Agent: proxymeter-test\r\nConnection: close\r\n\r\n"
    ).encode()
    s = Sent(user=(user or "") if log_user is None else log_user, kind="get", target=host, error=error,
             head_up=len(head), start=time.time())
    try:
        with _connect(proxy) as sock:
            sock.sendall(head)
            buf = bytearray()
            status, headers, hlen = _read_head(sock, buf)
            s.status, s.head_down = status, hlen
            del buf[:hlen]
            length = int(headers["content-length"]) if "content-length" in headers else None
            s.down = _read_body(sock, buf, length, abort_after)
            if abort_after is not None:
                # RST instead of FIN: an abrupt hang-up mid-download, as a killed client does.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError as exc:
        s.note = f"{type(exc).__name__}: {exc}"
    s.end = time.time()
    return truth.add(s)


def _echo(sock: socket.socket, payload: bytes, hold_s: float) -> int:
    """Sends payload, reads the echo back, keeps the tunnel open hold_s; returns bytes echoed."""
    got = 0
    if payload:
        sock.sendall(payload)
        for _ in range(100_000):
            if got >= len(payload):
                break
            data = sock.recv(READ)
            if not data:
                break
            got += len(data)
    if hold_s > 0:
        time.sleep(hold_s)
    return got


def _abort(sock: socket.socket, payload: bytes, abort_after: int) -> int:
    """Sends payload, reads abort_after bytes of the echo, then resets the connection
    (an abrupt hang-up, as a killed client does); returns the bytes read."""
    sock.sendall(payload)
    got = 0
    for _ in range(10_000):
        if got >= abort_after:
            break
        data = sock.recv(min(READ, abort_after - got))
        if not data:
            break
        got += len(data)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return got


def connect_tunnel(
    truth: Truth,
    proxy: tuple[str, int],
    target: str,
    *,
    user: str | None,
    password: str | None = None,
    payload: bytes = b"",
    hold_s: float = 0.0,
    error: str = "",
    log_user: str | None = None,
) -> Sent:
    head = (f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth_header(user, password)}\r\n").encode()
    s = Sent(user=(user or "") if log_user is None else log_user, kind="connect", target=target, error=error,
             head_up=len(head), start=time.time())
    try:
        with _connect(proxy) as sock:
            sock.sendall(head)
            buf = bytearray()
            status, headers, hlen = _read_head(sock, buf)
            s.status, s.head_down = status, hlen
            del buf[:hlen]
            if status == 200:
                s.up = len(payload)
                s.down = _echo(sock, payload, hold_s)
            else:
                length = int(headers.get("content-length", "0"))
                s.down = _read_body(sock, buf, length, None)
    except OSError as exc:
        s.note = f"{type(exc).__name__}: {exc}"
    s.end = time.time()
    return truth.add(s)


SOCKS_REPLIES = {0: "succeeded", 1: "general failure", 2: "not allowed", 3: "network unreachable",
                 4: "host unreachable", 5: "connection refused", 6: "ttl expired", 7: "command not supported",
                 8: "address type not supported"}


def socks5(
    truth: Truth,
    proxy: tuple[str, int],
    host: str,
    port: int,
    *,
    user: str | None = None,
    password: str | None = None,
    payload: bytes = b"",
    hold_s: float = 0.0,
    error: str = "",
    log_user: str | None = None,
    abort_after: int | None = None,
) -> Sent:
    """A SOCKS5 CONNECT (RFC 1928), with username/password (RFC 1929) when user is given."""
    s = Sent(user=(user or "") if log_user is None else log_user, kind="socks", target=f"{host}:{port}",
             error=error, start=time.time())
    try:
        with _connect(proxy) as sock:
            method = 2 if user is not None else 0
            sock.sendall(bytes([5, 1, method]))
            reply = _recv_exact(sock, 2)
            if reply[1] == 0xFF:
                s.status = 0xFF
                raise OSError("no acceptable SOCKS method")
            if reply[1] == 2:
                u, p = (user or "").encode(), (password or "").encode()
                sock.sendall(bytes([1, len(u)]) + u + bytes([len(p)]) + p)
                if _recv_exact(sock, 2)[1] != 0:
                    s.status = 0xFE
                    raise OSError("SOCKS authentication failed")
            try:
                addr = bytes([1]) + socket.inet_aton(host)
            except OSError:
                addr = bytes([3, len(host)]) + host.encode()
            sock.sendall(bytes([5, 1, 0]) + addr + struct.pack("!H", port))
            head = _recv_exact(sock, 4)
            s.status = head[1]
            rest = {1: 4, 4: 16}.get(head[3])
            if rest is None:
                rest = _recv_exact(sock, 1)[0]
            _recv_exact(sock, rest + 2)
            if head[1] == 0 and abort_after is not None:
                s.up, s.down = len(payload), _abort(sock, payload, abort_after)
            elif head[1] == 0:
                s.up = len(payload)
                s.down = _echo(sock, payload, hold_s)
            else:
                s.note = SOCKS_REPLIES.get(head[1], str(head[1]))
    except OSError as exc:
        s.note = s.note or f"{type(exc).__name__}: {exc}"
    s.end = time.time()
    return truth.add(s)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    for _ in range(1000):
        if len(buf) >= n:
            return buf
        data = sock.recv(n - len(buf))
        if not data:
            raise OSError(f"closed after {len(buf)} of {n} bytes")
        buf += data
    raise OSError("short read")


def tcp_echo(
    truth: Truth,
    addr: tuple[str, int],
    *,
    target: str,
    payload: bytes = b"",
    hold_s: float = 0.0,
    error: str = "",
    abort_after: int | None = None,
) -> Sent:
    """A plain TCP session through a forwarding proxy (haproxy tcp mode, nginx stream)."""
    s = Sent(user="", kind="tcp", target=target, error=error, start=time.time())
    try:
        with _connect(addr) as sock:
            if abort_after is not None:
                s.up, s.down = len(payload), _abort(sock, payload, abort_after)
            else:
                s.up = len(payload)
                s.down = _echo(sock, payload, hold_s)
                # A refused upstream shows as an immediate close with nothing echoed.
                if not payload:
                    sock.settimeout(5)
                    try:
                        sock.recv(1)
                    except OSError:
                        pass
    except OSError as exc:
        s.note = f"{type(exc).__name__}: {exc}"
    s.end = time.time()
    return truth.add(s)


def parallel(calls: list[Callable[[], object]], timeout_s: float = 60.0) -> None:
    """Runs calls at once in threads; all must finish within timeout_s."""
    threads = [threading.Thread(target=c, daemon=True) for c in calls]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    if alive:
        raise AssertionError(f"{alive} client threads still running after {timeout_s} s")


def peak(intervals: list[tuple[float, float]]) -> int:
    """The true peak of simultaneously open intervals (client clock)."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best
