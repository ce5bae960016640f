"""nginx: the tab-separated `proxymeter` log_format, for the stream and the http module.

Recommended nginx.conf (nginx 1.18+; the stream module is libnginx-mod-stream on
Debian). Copy the format strings exactly; fields are separated by TAB ("\\t" inside the
single-quoted string) and the default escaping must stay on (no `escape=json`/`none`):

    stream {
        log_format proxymeter '$msec\\t$session_time\\t$remote_addr\\t$server_port\\t$protocol\\t$status\\t$bytes_received\\t$bytes_sent\\t$upstream_addr\\t-\\t-\\t$server_addr\\t$upstream_connect_time';
        access_log /var/log/nginx/stream.log proxymeter;
        ...
    }
    http {
        log_format proxymeter '$msec\\t$request_time\\t$remote_addr\\t$server_port\\t$scheme\\t$status\\t$request_length\\t$bytes_sent\\t$upstream_addr\\t$remote_user\\t$host\\t$request_method';
        access_log /var/log/nginx/proxymeter.log proxymeter;
        ...
    }

In the stream format the eleventh field may be `$ssl_preread_server_name` instead of
`-` when `ssl_preread on;` is set: the TLS SNI then becomes the target host. The stream
format's last two fields (`$server_addr`, `$upstream_connect_time`) came later: lines
of the earlier eleven-field format still parse, without the listen address and times.

What each field gives (stream | http):
    $msec                 END of the session/request, epoch seconds with ms
    $session_time | $request_time   duration, seconds with ms -> duration_ms;
                          start_ms = msec - duration (exact to the ms)
    $remote_addr          client_ip
    $server_port          the port nginx accepted on -> listen_port
    $protocol | $scheme   TCP/UDP -> protocol HTTPS (an opaque tunnel, like CONNECT);
                          http -> HTTP, https or a CONNECT method -> HTTPS
    $status               stream: 200 ok, 400 invalid_request, 403 forbidden_host,
                          500/503 proxy_error, 502 upstream_error (nginx does not log
                          whether the connect was refused or timed out; its error log
                          does). http: see below.
    $bytes_received | $request_length   bytes from the client -> bytes_sent (exact in
                          stream; http: request line + headers + body as received)
    $bytes_sent           bytes to the client -> bytes_received (exact)
    $upstream_addr        the upstream (last one tried, when nginx retried) -> peer_id;
                          stream: also the target host and port
    -  | $remote_user     user: stream has no authentication, so the user is "" (the
                          default user); http: the basic-auth user
    -  | $host            target host (stream: "-" or $ssl_preread_server_name)
    $request_method       (http only)
  stream only, for activity records:
    $upstream_addr        an IP literal -> target_ip (nginx logs the address it connected to)
    $server_addr          the address nginx accepted on -> listen_address
    $upstream_connect_time  seconds with ms, one value per upstream tried ("0.001, 0.002"):
                          their sum (at most the duration) -> handshake_ms;
                          tunnel_ms = duration - handshake_ms;
                          "-" (no upstream connection) -> both None
nginx logs neither its outgoing address nor port: ip_out and proxy_port stay empty.

http status -> error: 499 -> client_aborted; with no upstream (nginx answered itself):
401/407 auth_failed, 403 forbidden_host, 400/405/411/413/414/431/494 invalid_request,
5xx proxy_error; with an upstream: 502 upstream_error, 504 timeout, anything else is
the target's own status. nginx cannot tell its own 502 from an upstream's 502.
Stream sessions the client aborts are logged with status 200 (not an error).
Values are escaped by nginx as \\xHH (quote, backslash, bytes < 0x20 or >= 0x7f); the
parser undoes that, then decodes UTF-8 (errors replaced).
"""

from __future__ import annotations

import datetime
import ipaddress
import re

from agent import errors as E
from agent.parsers.common import norm_host, split_hostport, text
from agent.record import PROTOCOL_HTTP, PROTOCOL_HTTPS, ParseError, Record

_ESC = re.compile(rb"\\x([0-9A-Fa-f]{2})")
_STREAM_ERRORS = {400: E.INVALID_REQUEST, 403: E.FORBIDDEN_HOST, 500: E.PROXY_ERROR,
                  502: E.UPSTREAM_ERROR, 503: E.PROXY_ERROR}
_HTTP_INVALID = frozenset((400, 405, 411, 413, 414, 431, 494))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _connect_ms(raw: bytes) -> int | None:
    """$upstream_connect_time -> ms summed over the upstreams tried; None when nginx made
    no upstream connection ("-") or the field is not such a list (other appended data)."""
    total = None
    for part in raw.replace(b":", b",").split(b","):
        part = part.strip()
        if part == b"-":
            continue
        whole, dot, frac = part.partition(b".")
        if not whole.isdigit() or not dot or not frac.isdigit():
            return None
        total = (total or 0) + _ms(part, "upstream_connect_time")
    return total


def _field(raw: bytes) -> str:
    if raw == b"-" or not raw:
        return ""
    if b"\\x" in raw:
        raw = _ESC.sub(lambda m: bytes((int(m[1], 16),)), raw)
    return text(raw)


def _ms(raw: bytes, what: str) -> int:
    """"1795333162.361" or "0.404" (nginx always writes 3 decimals) -> ms."""
    try:
        if len(raw) > 4 and raw[-4] == 46:
            return int(raw.replace(b".", b"", 1))
        return round(float(raw) * 1000)
    except ValueError:
        raise ParseError("bad_number", f"{what}={text(raw)}") from None


def _http_error(status: int, upstream: str) -> str:
    if status == 499:
        return E.CLIENT_ABORTED
    if not upstream:
        if status in (401, 407):
            return E.AUTH_FAILED
        if status == 403:
            return E.FORBIDDEN_HOST
        if status in _HTTP_INVALID:
            return E.INVALID_REQUEST
        if status >= 500:
            return E.PROXY_ERROR
        return ""
    if status == 502:
        return E.UPSTREAM_ERROR
    if status == 504:
        return E.TIMEOUT
    return ""


class NginxParser:
    """Parses stream and http lines of the `proxymeter` log_format."""

    def __init__(self, tz: datetime.tzinfo | None = None) -> None:
        self.tz = tz

    def parse(self, line: bytes) -> Record | None:
        if line[-1:] == b"\r":
            line = line[:-1]
        f = line.split(b"\t")
        if len(f) < 11:
            raise ParseError("too_few_fields", f"{len(f)} fields")
        end_ms = _ms(f[0], "msec")
        duration = _ms(f[1], "duration")
        try:
            listen_port = int(f[3]) if f[3] != b"-" else 0
            status = int(f[5])
            from_client = int(f[6])
            to_client = int(f[7])
        except ValueError:
            raise ParseError("bad_number", text(b" ".join(f[3:8]))) from None
        upstream = _field(f[8].rsplit(b", ", 1)[-1].rsplit(b" : ", 1)[-1].strip())
        kind = f[4].lower()
        user = _field(f[9])
        host = norm_host(_field(f[10].split(b" ", 1)[0]))
        target_ip = listen_address = ""
        handshake = tunnel = None
        if kind in (b"tcp", b"udp"):
            protocol = PROTOCOL_HTTPS
            up_host, port = split_hostport(upstream) if upstream else ("", 0)
            host = host or up_host
            if up_host and _is_ip(up_host):
                target_ip = up_host
            if len(f) >= 13 and _is_ip(_field(f[11])):
                listen_address = _field(f[11])
                handshake = _connect_ms(f[12])
                if handshake is not None:
                    handshake = min(handshake, duration)  # rounded apart: never past the end
                    tunnel = duration - handshake
            error = _STREAM_ERRORS.get(status, "") if status != 200 else ""
            if status != 200 and not error:
                error = E.unknown_error(f"stream/{status}")
        elif kind in (b"http", b"https"):
            if len(f) < 12:
                raise ParseError("too_few_fields", "http line without method")
            method = f[11].split(b" ", 1)[0]
            https = kind == b"https" or method == b"CONNECT"
            protocol = PROTOCOL_HTTPS if https else PROTOCOL_HTTP
            if method == b"CONNECT" and host:
                host, port = split_hostport(host, 443)
            else:
                host, port = split_hostport(host, 443 if https else 80)
            error = _http_error(status, upstream)
        else:
            raise ParseError("bad_protocol", text(f[4]))
        return Record(
            end_ms - duration, duration, from_client, to_client, _field(f[2]), user, host,
            port, protocol, error, f"{text(f[4])}/{status}" if error else "", status, "",
            upstream, listen_port, target_ip=target_ip, listen_address=listen_address,
            handshake_ms=handshake, tunnel_ms=tunnel,
        )
