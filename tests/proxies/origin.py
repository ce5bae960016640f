"""The local origin the proxies talk to: everything on 127.0.0.1, all in threads.

- HTTP: `GET /size/<n>` answers exactly n body bytes; `GET /slow/<ms>` waits ms
  milliseconds, then answers a small body; `GET /stall/<n>` announces n body bytes,
  sends STALL_PREFIX of them and then stalls (up to STALL_S) before the rest, so a client
  that hangs up early always does so mid-transfer, whatever the socket buffers hold. Bodies are known to the byte, so the test
  knows what a proxy should have logged.
- TCP echo: sends back everything it reads until the client closes (tunnel target).
- A closed port: bound once and released without listen(), so connecting is refused.
- A DNS responder that answers NXDOMAIN to every query, for proxies with their own
  resolver and a configurable port (so name failures never need the network).
- `peer_ports`: the source port of every connection the HTTP and echo servers accepted:
  the origin's own view of the ports the proxies connected from (their `proxy_port`).

Every thread is a daemon and every server is closed in `Origin.close()`.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_BODY = b"slow-ok\n"
MAX_SIZE = 8 * 1024 * 1024  # refuse anything bigger: every test transfer is bounded
MAX_SLOW_MS = 10_000
CHUNK = 64 * 1024
STALL_PREFIX = 128 * 1024
STALL_S = 8.0
MAX_CONNS = 10_000  # per server: accept loops end after this many (a test makes < 100)
ECHO_MAX_BYTES = 64 * 1024 * 1024  # an echo connection closes after this much ...
ECHO_MAX_S = 60.0  # ... or after this long, whatever the client does


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "origin"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if "://" in path:  # absolute form, as haproxy forwards a proxy request
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        parts = path.strip("/").split("/")
        try:
            kind, value = parts[0], int(parts[1])
        except (IndexError, ValueError):
            self._answer(404, b"not found\n")
            return
        if kind == "size" and 0 <= value <= MAX_SIZE:
            self._answer(200, None, size=value)
        elif kind == "stall" and STALL_PREFIX <= value <= MAX_SIZE:
            self._answer(200, None, size=value, stall_after=STALL_PREFIX)
        elif kind == "slow" and 0 <= value <= MAX_SLOW_MS:
            time.sleep(value / 1000)
            self._answer(200, SLOW_BODY)
        else:
            self._answer(404, b"not found\n")

    def _answer(self, status: int, body: bytes | None, size: int = 0, stall_after: int | None = None) -> None:
        length = len(body) if body is not None else size
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            if body is not None:
                self.wfile.write(body)
                return
            block = b"x" * CHUNK
            left = size
            while left > 0:
                n = min(left, CHUNK)
                self.wfile.write(block[:n])
                left -= n
                if stall_after is not None and size - left >= stall_after:
                    self.wfile.flush()
                    time.sleep(STALL_S)  # bounded; the proxy has usually hung up by now
                    stall_after = None
        except (BrokenPipeError, ConnectionResetError):
            pass  # the aborting client: expected


class _Peers:
    """Source ports of accepted connections, shared by the server threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ports: set[int] = set()

    def add(self, addr: object) -> None:
        if isinstance(addr, tuple) and len(addr) >= 2:
            with self._lock:
                self.ports.add(int(addr[1]))

    def snapshot(self) -> set[int]:
        with self._lock:
            return set(self.ports)


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default 5 drops SYNs of a burst: 1 s retransmit delays
    peers: _Peers

    def verify_request(self, request: object, client_address: object) -> bool:
        self.peers.add(client_address)
        return True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _echo_conn(conn: socket.socket) -> None:
    deadline = time.monotonic() + ECHO_MAX_S
    with conn:
        conn.settimeout(30)
        try:
            for _ in range(ECHO_MAX_BYTES // CHUNK):
                data = conn.recv(CHUNK)
                if not data or time.monotonic() > deadline:
                    break
                conn.sendall(data)
        except OSError:
            pass


def _echo_loop(sock: socket.socket, stop: threading.Event, peers: _Peers) -> None:
    for _ in range(MAX_CONNS):
        if stop.is_set():
            return
        try:
            conn, addr = sock.accept()
        except OSError:
            return
        peers.add(addr)
        threading.Thread(target=_echo_conn, args=(conn,), daemon=True).start()


def _nxdomain(query: bytes) -> bytes | None:
    if len(query) < 12:
        return None
    qid, flags = struct.unpack("!HH", query[:4])
    rd = flags & 0x0100
    # QR=1, opcode copied 0, RD copied, RA=1, RCODE=3 (NXDOMAIN); the question echoed.
    header = struct.pack("!HHHHHH", qid, 0x8000 | rd | 0x0080 | 3, 1, 0, 0, 0)
    return header + query[12:]


def _dns_loop(sock: socket.socket, stop: threading.Event) -> None:
    for _ in range(MAX_CONNS):
        if stop.is_set():
            return
        try:
            query, addr = sock.recvfrom(2048)
        except OSError:
            return
        answer = _nxdomain(query)
        if answer is not None:
            try:
                sock.sendto(answer, addr)
            except OSError:
                pass


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port() -> int:
    return closed_port()


class Origin:
    def __init__(self, *, dns_port: int = 0) -> None:
        """dns_port: where the NXDOMAIN responder should listen (53 for resolvers that
        cannot be given a port); when that port cannot be bound, any free port."""
        self._stop = threading.Event()
        self._peers = _Peers()
        self.http = _QuietHTTPServer(("127.0.0.1", 0), _Handler)
        self.http.peers = self._peers
        self.http_port: int = self.http.server_address[1]
        self._echo = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._echo.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._echo.bind(("127.0.0.1", 0))
        self._echo.listen(64)
        self.echo_port: int = self._echo.getsockname()[1]
        self._dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._dns.bind(("127.0.0.1", dns_port))
        except OSError:
            self._dns.bind(("127.0.0.1", 0))
        self.dns_port: int = self._dns.getsockname()[1]
        self.closed_port = closed_port()
        self._threads = [
            threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True),
            threading.Thread(target=_echo_loop, args=(self._echo, self._stop, self._peers), daemon=True),
            threading.Thread(target=_dns_loop, args=(self._dns, self._stop), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def peer_ports(self) -> set[int]:
        return self._peers.snapshot()

    def close(self) -> None:
        self._stop.set()
        self.http.shutdown()
        self.http.server_close()
        for s in (self._echo, self._dns):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(timeout=5)
