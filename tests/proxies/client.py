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

TIMEOUT_S = 20.0  # every socket operation
CALL_S = 60.0  # every request as a whole: each read loop also stops at this deadline
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
    via: tuple[str, int] = ("", 0)  # the proxy address the client connected to

    @property
    def total_up(self) -> int:
        """Everything the client wrote after the proxy's own handshake (CONNECT/SOCKS)."""
        return self.head_up + self.up

    @property
    def total_down(self) -> int:
        """Everything the client read after the proxy's own handshake."""
        return self.head_down + self.down


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


def _deadline() -> float:
    return time.monotonic() + CALL_S


def _in_time(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise OSError(f"request still running after {CALL_S} s")


def _read_head(sock: socket.socket, buf: bytearray, deadline: float) -> tuple[int, dict[str, str], int]:
    """Reads one HTTP response head into buf; returns (status, headers, head length)."""
    for _ in range(1000):
        _in_time(deadline)
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


def _read_body(sock: socket.socket, buf: bytearray, length: int | None, limit: int | None,
               deadline: float) -> int:
    """Reads the body (length bytes, or to EOF when None), stopping early at `limit`."""
    got = len(buf)
    want = length if length is not None else 1 << 62
    if limit is not None:
        want = min(want, limit)
    for _ in range(100_000):
        _in_time(deadline)
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


def _get_head(url_or_path: str, host: str, auth: str) -> bytes:
    return (f"GET {url_or_path} HTTP/1.1\r\nHost: {host}\r\n{auth}User-Agent: proxymeter-test\r\n"
            "Connection: close\r\n\r\n").encode()


def _exchange(sock: socket.socket, s: Sent, head: bytes, abort_after: int | None, deadline: float) -> None:
    """Sends one GET head on sock and reads the response into s (head, status, body
    bytes); abort_after: hang up with a reset after that many body bytes."""
    s.head_up = len(head)
    sock.sendall(head)
    buf = bytearray()
    status, headers, hlen = _read_head(sock, buf, deadline)
    s.status, s.head_down = status, hlen
    del buf[:hlen]
    length = int(headers["content-length"]) if "content-length" in headers else None
    s.down = _read_body(sock, buf, length, abort_after, deadline)
    if abort_after is not None:
        # RST instead of FIN: an abrupt hang-up mid-download, as a killed client does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


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
    head = _get_head(url, host, auth_header(user, password, auth_header_name))
    s = Sent(user=(user or "") if log_user is None else log_user, kind="get", target=host, error=error,
             start=time.time(), via=proxy)
    try:
        with _connect(proxy) as sock:
            _exchange(sock, s, head, abort_after, _deadline())
    except OSError as exc:
        s.note = f"{type(exc).__name__}: {exc}"
    s.end = time.time()
    return truth.add(s)


def tcp_get(truth: Truth, addr: tuple[str, int], path: str, *, target: str, host: str,
            error: str = "", abort_after: int | None = None) -> Sent:
    """GET `path` through a TCP forwarder whose upstream is an HTTP server (haproxy tcp
    mode, nginx stream): the forwarder relays the request and response as payload."""
    s = Sent(user="", kind="tcp", target=target, error=error, start=time.time(), via=addr)
    try:
        with _connect(addr) as sock:
            _exchange(sock, s, _get_head(path, host, ""), abort_after, _deadline())
    except OSError as exc:
        s.note = f"{type(exc).__name__}: {exc}"
    s.end = time.time()
    return truth.add(s)


def _echo(sock: socket.socket, payload: bytes, hold_s: float, deadline: float) -> int:
    """Sends payload, reads the echo back, keeps the tunnel open hold_s; returns bytes echoed."""
    got = 0
    if payload:
        sock.sendall(payload)
        for _ in range(100_000):
            _in_time(deadline)
            if got >= len(payload):
                break
            data = sock.recv(READ)
            if not data:
                break
            got += len(data)
    if hold_s > 0:
        time.sleep(hold_s)
    return got


def _abort(sock: socket.socket, payload: bytes, abort_after: int, deadline: float) -> int:
    """Sends payload, reads abort_after bytes of the echo, then resets the connection
    (an abrupt hang-up, as a killed client does); returns the bytes read."""
    sock.sendall(payload)
    got = 0
    for _ in range(10_000):
        _in_time(deadline)
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
             head_up=len(head), start=time.time(), via=proxy)
    deadline = _deadline()
    try:
        with _connect(proxy) as sock:
            sock.sendall(head)
            buf = bytearray()
            status, headers, hlen = _read_head(sock, buf, deadline)
            s.status, s.head_down = status, hlen
            del buf[:hlen]
            if status == 200:
                s.up = len(payload)
                s.down = _echo(sock, payload, hold_s, deadline)
            else:
                length = int(headers.get("content-length", "0"))
                s.down = _read_body(sock, buf, length, None, deadline)
    except OSError as exc:
        s.note = f"{type(exc).__name__}: {exc}"
    s.end = time.time()
    return truth.add(s)


SOCKS_REPLIES = {0: "succeeded", 1: "general failure", 2: "not allowed", 3: "network unreachable",
                 4: "host unreachable", 5: "connection refused", 6: "ttl expired", 7: "command not supported",
                 8: "address type not supported"}


def _socks_open(sock: socket.socket, s: Sent, host: str, port: int, user: str | None,
                password: str | None) -> bool:
    """SOCKS5 greeting, RFC 1929 login when user is given, CONNECT host:port; True when
    the proxy answered "succeeded" (s.status holds its reply code, s.note why not)."""
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
    if head[1] != 0:
        s.note = SOCKS_REPLIES.get(head[1], str(head[1]))
    return head[1] == 0


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
    """A SOCKS5 CONNECT (RFC 1928), with username/password (RFC 1929) when user is given;
    then payload to an echo target (or a reset after abort_after bytes of its echo)."""
    s = Sent(user=(user or "") if log_user is None else log_user, kind="socks", target=f"{host}:{port}",
             error=error, start=time.time(), via=proxy)
    deadline = _deadline()
    try:
        with _connect(proxy) as sock:
            if _socks_open(sock, s, host, port, user, password):
                s.up = len(payload)
                if abort_after is not None:
                    s.down = _abort(sock, payload, abort_after, deadline)
                else:
                    s.down = _echo(sock, payload, hold_s, deadline)
    except OSError as exc:
        s.note = s.note or f"{type(exc).__name__}: {exc}"
    s.end = time.time()
    return truth.add(s)


def socks_get(
    truth: Truth,
    proxy: tuple[str, int],
    host: str,
    port: int,
    path: str,
    *,
    user: str | None = None,
    password: str | None = None,
    error: str = "",
    abort_after: int | None = None,
) -> Sent:
    """A GET of `path` from the HTTP server host:port through a SOCKS5 tunnel."""
    s = Sent(user=user or "", kind="socks", target=f"{host}:{port}", error=error, start=time.time(), via=proxy)
    try:
        with _connect(proxy) as sock:
            if _socks_open(sock, s, host, port, user, password):
                _exchange(sock, s, _get_head(path, f"{host}:{port}", ""), abort_after, _deadline())
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
    s = Sent(user="", kind="tcp", target=target, error=error, start=time.time(), via=addr)
    deadline = _deadline()
    try:
        with _connect(addr) as sock:
            if abort_after is not None:
                s.up, s.down = len(payload), _abort(sock, payload, abort_after, deadline)
            else:
                s.up = len(payload)
                s.down = _echo(sock, payload, hold_s, deadline)
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
