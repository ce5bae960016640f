"""Small helpers every format shares: text decoding, host:port splitting, bounded caches.

Text decoding rule (all formats): log bytes are decoded as UTF-8 with errors="replace",
so a byte that is not UTF-8 becomes U+FFFD. Surrogate escapes were rejected because the
strings end up in JSON and msgpack, which refuse lone surrogates; a user name with a
broken byte is still counted, under its "replaced" spelling.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ws": 80, "wss": 443, "gopher": 70}


class BoundedCache(Generic[K, V]):
    """A dict memo that is emptied when it reaches `limit` entries.

    Cheaper per hit than an LRU; the hit rate stays high because hot keys (a proxy's
    few hundred target hosts, its users) come straight back after a reset.
    """

    __slots__ = ("fn", "limit", "data")

    def __init__(self, fn: Callable[[K], V], limit: int = 65536) -> None:
        self.fn = fn
        self.limit = limit
        self.data: dict[K, V] = {}

    def __call__(self, key: K) -> V:
        data = self.data
        try:
            return data[key]
        except KeyError:
            pass
        value = self.fn(key)
        if len(data) >= self.limit:
            data.clear()
        data[key] = value
        return value


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def norm_host(host: str) -> str:
    """Lowercase, no trailing dot, no IPv6 brackets."""
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def split_hostport(authority: str, default_port: int = 0) -> tuple[str, int]:
    """"host:port", "[v6]:port", "user@host", bare "host" or bare IPv6 -> (host, port)."""
    at = authority.rfind("@")
    if at >= 0:
        authority = authority[at + 1:]
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            return norm_host(authority), default_port
        host, rest = authority[1:close], authority[close + 1:]
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
        return norm_host(host), port
    colon = authority.rfind(":")
    if colon >= 0 and authority.find(":") == colon:
        tail = authority[colon + 1:]
        port = int(tail) if tail.isdigit() and len(tail) <= 5 else default_port
        return norm_host(authority[:colon]), port
    return norm_host(authority), default_port  # no port, or a bare IPv6 literal


def url_target(url: str) -> tuple[str, int]:
    """Target (host, port) of an absolute URL; ("", 0) for anything else."""
    sep = url.find("://")
    if sep <= 0:
        return "", 0
    scheme = url[:sep].lower()
    end = len(url)
    for ch in "/?#":
        i = url.find(ch, sep + 3)
        if 0 <= i < end:
            end = i
    return split_hostport(url[sep + 3:end], DEFAULT_PORTS.get(scheme, 0))
