"""JSON lines: one Webshare-style proxy activity object per line (your own proxy worker).

Write one JSON object per line, UTF-8, with these fields (Webshare's "Proxy Activity
Object"; fields not listed are accepted and ignored, `null` means absent):

    timestamp          string, ISO 8601 WITH an offset, e.g. "2026-11-22T10:00:00.517-07:00"
                       or "...Z": when the request STARTED. Required. A timestamp without
                       an offset is read in the source's configured timezone.
    protocol           "http" | "https" | "socks" (also "socks4"/"socks5", "connect")
                       -> HTTP | HTTPS | SOCKS. Required.
    request_duration   number, seconds -> duration_ms = round(seconds * 1000). Required.
    bytes              number: upload + download in total (see "bytes" below)
    client_address     string -> client_ip
    auth_username      string -> user (null -> "", the default user)
    hostname           string -> host (lowercased, trailing dot removed); when null,
    ip_address         string -> host
    port               number -> target port
    error_reason       string -> error, kept as given (already normalised, e.g.
                       "client_connect_forbidden_host"); null or "" -> no error
    proxy_address      string -> ip_out
    listen_port        number -> listen_port
  proxymeter extensions (optional):
    bytes_sent, bytes_received   numbers: upload / download separately. When either is
                       present both are taken from them (a missing one is 0) and `bytes`
                       is ignored; otherwise all of `bytes` counts as bytes_received
                       (download), bytes_sent = 0.
    status             number: HTTP status
    peer_id            string: upstream peer

Exactness: everything is as exact as the writer makes it; duration is rounded to the
millisecond. Ignored: handshake_duration, tunnel_duration, domain (the agent derives the
registrable domain itself), error_reason_how_to_fix, proxy_port, listen_address.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from agent.parsers.common import norm_host
from agent.record import PROTOCOL_HTTP, PROTOCOL_HTTPS, PROTOCOL_SOCKS, ParseError, Record

_PROTOCOLS = {
    "http": PROTOCOL_HTTP,
    "https": PROTOCOL_HTTPS,
    "connect": PROTOCOL_HTTPS,
    "socks": PROTOCOL_SOCKS,
    "socks4": PROTOCOL_SOCKS,
    "socks5": PROTOCOL_SOCKS,
}
_MAX_ERROR = 64


def _int(obj: dict[str, Any], key: str) -> int:
    v = obj.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ParseError("bad_field", key)
    return int(v)


def _str(obj: dict[str, Any], key: str) -> str:
    v = obj.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ParseError("bad_field", key)
    if not v.isascii():
        try:
            v.encode()
        except UnicodeEncodeError:  # a lone surrogate from a "\\ud800" escape
            v = v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return v


class JsonlParser:
    """Parses one activity object per line; see the module docstring."""

    def __init__(self, tz: datetime.tzinfo) -> None:
        self.tz = tz
        self._seconds: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS<offset>" -> epoch ms

    def _start_ms(self, ts: object) -> int:
        if not isinstance(ts, str):
            raise ParseError("bad_timestamp", repr(ts)[:40])
        try:
            dt = datetime.datetime.fromisoformat(ts)
        except ValueError:
            raise ParseError("bad_timestamp", ts[:40]) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.tz)
        return int(dt.timestamp()) * 1000 + dt.microsecond // 1000

    def parse(self, line: bytes) -> Record | None:
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise ParseError("bad_json") from None
        if not isinstance(obj, dict):
            raise ParseError("not_an_object")
        for key in ("timestamp", "protocol", "request_duration"):
            if obj.get(key) is None:
                raise ParseError("missing_field", key)
        start_ms = self._start_ms(obj["timestamp"])
        proto = obj["protocol"]
        protocol = _PROTOCOLS.get(proto.lower()) if isinstance(proto, str) else None
        if protocol is None:
            raise ParseError("bad_field", "protocol")
        dur = obj["request_duration"]
        if isinstance(dur, bool) or not isinstance(dur, (int, float)) or dur < 0:
            raise ParseError("bad_field", "request_duration")
        if obj.get("bytes_sent") is not None or obj.get("bytes_received") is not None:
            sent, received = _int(obj, "bytes_sent"), _int(obj, "bytes_received")
        else:
            sent, received = 0, _int(obj, "bytes")
        host = _str(obj, "hostname") or _str(obj, "ip_address")
        error = _str(obj, "error_reason").strip()
        return Record(
            start_ms=start_ms,
            duration_ms=round(dur * 1000),
            bytes_sent=sent,
            bytes_received=received,
            client_ip=_str(obj, "client_address"),
            user=_str(obj, "auth_username"),
            host=norm_host(host),
            port=_int(obj, "port"),
            protocol=protocol,
            error=error[:_MAX_ERROR],
            raw_error=error,
            status=_int(obj, "status"),
            ip_out=_str(obj, "proxy_address"),
            peer_id=_str(obj, "peer_id"),
            listen_port=_int(obj, "listen_port"),
        )
