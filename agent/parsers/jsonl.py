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
    ip_address         (also) -> target_ip, the target's IP in activity records
    proxy_port         number -> proxy_port (the proxy's source port towards the target)
    listen_address     string -> listen_address
    handshake_duration, tunnel_duration   numbers, seconds -> handshake_ms, tunnel_ms
                       (rounded to the ms; null or absent -> None)
  proxymeter extensions (optional):
    bytes_sent, bytes_received   numbers: upload / download separately. When either is
                       present both are taken from them (a missing one is 0) and `bytes`
                       is ignored; otherwise all of `bytes` counts as bytes_received
                       (download), bytes_sent = 0.
    status             number: HTTP status
    peer_id            string: upstream peer

Exactness: everything is as exact as the writer makes it; durations are rounded to the
millisecond; the timestamp's microseconds are kept for activity records (start_us_rem).
Ignored: domain (the agent derives the registrable domain itself),
error_reason_how_to_fix.
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


def _opt_ms(obj: dict[str, Any], key: str) -> int | None:
    """A duration in seconds -> ms; None when null or absent."""
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ParseError("bad_field", key)
    return round(v * 1000)


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


# json.loads' own C scanner, called without its two whitespace regex matches: a line
# whose object does not end the line (trailing blanks, extra data) goes the general way
_scan = json.JSONDecoder().scan_once
_MS = {f"{ms:03d}": ms for ms in range(1000)}  # the ".mmm" of a timestamp, ASCII digits only
_CACHE_LIMIT = 65536


class JsonlParser:
    """Parses one activity object per line; see the module docstring.

    Two paths, one meaning: `parse` takes the shape a worker writes (an object with the
    usual field types, a millisecond timestamp with an offset or "Z") with the fewest
    steps, and hands anything else to `parse_general`, the reference that handles every
    line. Field errors are raised in the same order by both, so even the ParseError
    detail is the same; a test compares the two on the fixture corpus, generated logs
    and mutations of them.
    """

    def __init__(self, tz: datetime.tzinfo) -> None:
        self.tz = tz
        # "YYYY-MM-DDTHH:MM:SS.<offset>" (the milliseconds cut out) -> epoch ms of the second
        self._seconds: dict[str, int] = {}
        self._hosts: dict[str, str] = {}  # raw host -> norm_host(raw host)

    def _start_ms(self, ts: object) -> int:
        return self._start_us(ts) // 1000

    def _start_us(self, ts: object) -> int:
        """Epoch microseconds of a timestamp (the fast path's memo works in ms)."""
        if not isinstance(ts, str):
            raise ParseError("bad_timestamp", repr(ts)[:40])
        try:
            dt = datetime.datetime.fromisoformat(ts)
        except ValueError:
            raise ParseError("bad_timestamp", ts[:40]) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.tz)
        return int(dt.timestamp()) * 1_000_000 + dt.microsecond

    def _fast_start_ms(self, ts: str) -> int | None:
        """`_start_ms` for "...SS.mmm+HH:MM" / "...SS.mmmZ" from a per-second memo; None
        for any other spelling (or a time before 1970, where int() rounds the other way)."""
        n = len(ts)
        if not ((n == 29 and ts[23] in "+-") or (n == 24 and ts[23] == "Z")) or ts[19] != ".":
            return None
        ms = _MS.get(ts[20:23])
        if ms is None:
            return None
        key = ts[:20] + ts[23:]
        second = self._seconds.get(key)
        if second is None:
            try:
                second = self._start_ms(ts[:20] + "000" + ts[23:])
            except ParseError:
                return None
            if second < 0:
                return None
            if len(self._seconds) >= _CACHE_LIMIT:
                self._seconds.clear()
            self._seconds[key] = second
        return second + ms

    def parse(self, line: bytes) -> Record | None:
        # json.loads(bytes) guesses the encoding from the first bytes: a line opening with
        # "{" and no NUL is UTF-8, which it decodes with "surrogatepass" exactly like this
        if line[:1] != b"{" or line[1:2] == b"\0":
            return self.parse_general(line)
        try:
            doc = line.decode("utf-8", "surrogatepass")
            obj, end = _scan(doc, 0)
        except (ValueError, StopIteration):  # UnicodeDecodeError, JSONDecodeError, nothing
            raise ParseError("bad_json") from None
        if end != len(doc) or obj.__class__ is not dict:
            return self.parse_general(line)
        get = obj.get
        ts = get("timestamp")
        proto = get("protocol")
        dur = get("request_duration")
        if ts.__class__ is not str or proto.__class__ is not str or dur.__class__ not in (int, float):
            return self.parse_general(line)
        protocol = _PROTOCOLS.get(proto)
        start_ms = self._fast_start_ms(ts)
        if protocol is None or start_ms is None or dur < 0:
            return self.parse_general(line)
        # from here on, the same checks in the same order as parse_general
        if get("bytes_sent") is not None or get("bytes_received") is not None:
            sent = v if (v := get("bytes_sent")).__class__ is int and v >= 0 else _int(obj, "bytes_sent")
            received = v if (v := get("bytes_received")).__class__ is int and v >= 0 else _int(obj, "bytes_received")
        else:
            sent = 0
            received = v if (v := get("bytes")).__class__ is int and v >= 0 else _int(obj, "bytes")
        host = v if (v := get("hostname")).__class__ is str and v.isascii() else _str(obj, "hostname")
        if not host:
            host = v if (v := get("ip_address")).__class__ is str and v.isascii() else _str(obj, "ip_address")
        error = get("error_reason")
        if error is not None:
            error = _str(obj, "error_reason").strip()
        else:
            error = ""
        client = v if (v := get("client_address")).__class__ is str and v.isascii() else _str(obj, "client_address")
        user = v if (v := get("auth_username")).__class__ is str and v.isascii() else _str(obj, "auth_username")
        port = v if (v := get("port")).__class__ is int and v >= 0 else _int(obj, "port")
        status = v if (v := get("status")).__class__ is int and v >= 0 else _int(obj, "status")
        ip_out = v if (v := get("proxy_address")).__class__ is str and v.isascii() else _str(obj, "proxy_address")
        peer_id = v if (v := get("peer_id")).__class__ is str and v.isascii() else _str(obj, "peer_id")
        listen_port = v if (v := get("listen_port")).__class__ is int and v >= 0 else _int(obj, "listen_port")
        target_ip = _str(obj, "ip_address")
        proxy_port = _int(obj, "proxy_port")
        listen_address = _str(obj, "listen_address")
        handshake = _opt_ms(obj, "handshake_duration")
        tunnel = _opt_ms(obj, "tunnel_duration")
        norm = self._hosts.get(host)
        if norm is None:
            norm = norm_host(host)
            if len(self._hosts) >= _CACHE_LIMIT:
                self._hosts.clear()
            self._hosts[host] = norm
        if target_ip:
            # the same normalisation as the host's, from the same memo
            tip = self._hosts.get(target_ip)
            if tip is None:
                tip = norm_host(target_ip)
                if len(self._hosts) >= _CACHE_LIMIT:
                    self._hosts.clear()
                self._hosts[target_ip] = tip
        else:
            tip = ""
        # every field positionally (RECORD_FIELDS' order): keywords cost a name match each
        return Record(
            start_ms, round(dur * 1000), sent, received, client, user, norm, port, protocol,
            error[:_MAX_ERROR], error, status, ip_out, peer_id, listen_port,
            "", 0, 0, 0, tip, proxy_port, listen_address, handshake, tunnel,
        )  # fmt: skip

    def parse_general(self, line: bytes) -> Record | None:
        """Any line: the reference for `parse`."""
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise ParseError("bad_json") from None
        if not isinstance(obj, dict):
            raise ParseError("not_an_object")
        for key in ("timestamp", "protocol", "request_duration"):
            if obj.get(key) is None:
                raise ParseError("missing_field", key)
        start_us = self._start_us(obj["timestamp"])
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
            start_ms=start_us // 1000,
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
            start_us_rem=start_us % 1000,
            target_ip=norm_host(_str(obj, "ip_address")),
            proxy_port=_int(obj, "proxy_port"),
            listen_address=_str(obj, "listen_address"),
            handshake_ms=_opt_ms(obj, "handshake_duration"),
            tunnel_ms=_opt_ms(obj, "tunnel_duration"),
        )
