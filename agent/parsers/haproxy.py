"""HAProxy: `option httplog` and `option tcplog` lines, with or without syslog framing.

Recommended haproxy.cfg (HAProxy 2.2+; the default formats also work, see below):

    global
        log stdout format raw local0          # or: log /dev/log local0 (syslog framing)
    frontend http_in
        mode http
        http-request set-var(txn.pm_user) req.hdr(proxy-authorization),word(2,' '),b64dec,field(1,:)
        log-format "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r %U %bi %si:%sp %{+Q}[var(txn.pm_user)] %bp %fi:%fp"
    frontend tcp_in
        mode tcp
        log-format "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq %U %bi %si:%sp %bp %fi:%fp"

Both are HAProxy's own httplog / tcplog format strings with fields appended
(`%U %bi %si:%sp`, for HTTP the proxy user, then `%bp %fi:%fp`); lines in the plain
default formats (`option httplog`, `option tcplog`) parse too, without them, and so
do lines of the earlier recommendation that ended before `%bp %fi:%fp`. The user
comes from the Proxy-Authorization header (basic auth, user part); for a frontend that
authenticates with `http_auth(<userlist>)` on the Authorization header use
`http-request set-var(txn.pm_user) http_auth_user` instead. Plain lines (log stdout,
a file written by `log-format` to a pipe) and RFC 3164 syslog lines
("<134>Nov 22 10:00:00 [host] haproxy[123]: ...", with or without <PRI> and host, as
rsyslog writes /var/log/haproxy.log) are both accepted; the syslog header is ignored.
Data after the last field (more fields appended to either format, quoted or not) is
ignored: the appended fields are recognised by the shape of `%si:%sp`.

What each field gives:
    %ci:%cp          client address -> client_ip (IPv6 is logged without brackets)
    [%tr] / [%t]     httplog: when the request started to arrive; tcplog: accept time.
                     LOCAL time without an offset: read in the source's `timezone`
                     -> start_ms (exact to the ms). During the repeated hour when DST
                     ends the local time is ambiguous; the first occurrence is taken.
                     HAProxy logs at the END of a session but stamps its start, so
                     lines arrive out of start order (the aggregator copes).
    %ft              frontend (ignored)
    %b/%s            backend/server -> peer_id ("" for <NOSRV>)
    %TR/%Tw/%Tc/%Tr/%Ta  http: Ta (active time of the request) -> duration_ms (exact, ms)
    %Tw/%Tc/%Tt      tcp: Tt (whole session) -> duration_ms (exact, ms). A "+" prefix
                     (option logasap) is dropped: the value is then a lower bound.
    %ST              HTTP status -> status (tcplog: 0)
    %B               bytes from server to client -> bytes_received. tcplog: exact.
                     httplog: HAProxy counts the response in its internal (HTX) form,
                     so the header framing is not counted the way it crosses the wire:
                     observed on 2.6, 20-30 bytes LESS per response than the client got
                     (bodies exact). Replies HAProxy makes itself (401/403/503) likewise.
    %tsc / %ts       termination state -> error (table below)
    %{+Q}r           request line: an absolute URI gives host and port; CONNECT gives
                     protocol HTTPS, otherwise HTTP
  appended fields:
    %U               bytes from client to server -> bytes_sent (tcplog exact; httplog
                     counts the request's HTX form, same caveat as %B)
    %bi              haproxy's source address towards the server -> ip_out
    %si:%sp          the server -> host and port when the request line has no absolute
                     URI (reverse-proxy setups), and for every tcplog line
    %{+Q}[var(txn.pm_user)]  user name ("" when absent)
    %bp              haproxy's source port towards the server -> proxy_port
    %fi:%fp          the address and port the client connected to -> listen_address,
                     listen_port
  activity times (from the timers, None when a timer is -1: that step never happened):
    http: handshake_ms = %TR + %Tw + %Tc (request received, queued, server connected),
          at most %Ta;
          tunnel_ms None (haproxy opens no tunnels in http mode)
    tcp:  handshake_ms = %Tw + %Tc (queued, server connected), at most %Tt (the
          timers are rounded one by one); tunnel_ms = %Tt - handshake_ms
    %si (when not "-") is the address haproxy connected to -> target_ip

Without the appended fields: bytes_sent = 0, ip_out = "", tcplog host/port unknown,
httplog user = "" (HAProxy logs no user by default); without `%bp %fi:%fp`:
proxy_port, listen_address and listen_port unknown. TCP-mode sessions count as
protocol HTTPS (opaque tunnels, like CONNECT).

Termination state (first two characters) -> error:
    "--"                                           no error; the status is the target's
    L* (HAProxy replied itself: `http-request auth`, `http-request return`, stats)
        401/407 -> auth_failed, 403 -> forbidden_host, 400/408/411/413/414/431/501
        -> invalid_request, 5xx -> proxy_error, anything else no error
    C* (client aborted), c* (client timeout)       client_aborted
    PR/PT with 401/407 -> auth_failed, 400/408/411/413/414/431/501 -> invalid_request,
        other PR/PT (deny, tarpit) -> forbidden_host
    SC (connect failed; <NOSRV> = no server up)    connection_refused (<NOSRV>: upstream_error)
    sC, sQ, sH, sD, sL, sT (server-side timeout)   timeout
    SH, SD, SL, PH (server broke, bad response)    upstream_error
    D* (server marked down), U*                    upstream_error
    I*, R*, K*, other P*                           proxy_error
    anything else                                  other:<state>
Lines that are not traffic (startup/health notices, "[NOTICE] ...") return None.
"""

from __future__ import annotations

import datetime

from agent import errors as E
from agent.parsers.common import split_hostport, text, url_target
from agent.record import PROTOCOL_HTTP, PROTOCOL_HTTPS, ParseError, Record

_MONTHS = {m.encode(): i + 1 for i, m in enumerate(
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}
_INVALID = frozenset((400, 405, 408, 411, 413, 414, 431, 501, 505))
_NOTICE_WORDS = (b"Proxy ", b"Server ", b"backend ", b"Backend ", b"Health check",
                 b"Stopping", b"Pausing", b"Resuming", b"Connect from", b"[NOTICE]",
                 b"[WARNING]", b"[ALERT]", b"haproxy version", b"Loading success")


def _local_reply(status: int) -> str:
    """Error for a reply HAProxy made itself (L*: `http-request auth`, `return`, stats)."""
    if status < 400:
        return ""
    if status in (401, 407):
        return E.AUTH_FAILED
    if status == 403:
        return E.FORBIDDEN_HOST
    if status in _INVALID:
        return E.INVALID_REQUEST
    if status >= 500:
        return E.PROXY_ERROR
    return ""


def _termination(state: str, status: int, nosrv: bool) -> str:
    a, b = state[:1], state[1:2]
    if a == "-":
        return ""
    if a == "L":
        return _local_reply(status)
    if a in "Cc":
        return E.CLIENT_ABORTED
    if a == "P" and b in "RT":
        if status in (401, 407):
            return E.AUTH_FAILED
        if status in _INVALID:
            return E.INVALID_REQUEST
        return E.FORBIDDEN_HOST
    if a == "S" and b == "C":
        return E.UPSTREAM_ERROR if nosrv else E.CONNECTION_REFUSED
    if a == "s":
        return E.TIMEOUT
    if (a == "S" and b in "HDLQ") or (a == "P" and b == "H") or a in "DU":
        return E.UPSTREAM_ERROR
    if a in "IRKP":
        return E.PROXY_ERROR
    return E.unknown_error(state)


def _appended(ext: list[bytes]) -> bool:
    """Do the tokens after the request (httplog) or after %sq/%bq (tcplog) start with the
    appended fields `%U %bi %si:%sp`? Told by the shape of `%si:%sp` (host:port or -:-),
    so other data an operator appended to a default format line is ignored, while a
    damaged `%U` on a line that has the fields is still a ParseError naming it."""
    if len(ext) < 3:
        return False
    target = ext[2]
    if target == b"-:-":
        return True
    colon = target.rfind(b":")
    return colon > 0 and target[colon + 1:].isdigit()


def _listener(ext: list[bytes]) -> tuple[int, str, int] | None:
    """`%bp %fi:%fp` at the start of ext -> (proxy_port, listen_address, listen_port);
    None when ext does not start with them (a line of an earlier format, or other data
    appended), told by their shape."""
    if len(ext) < 2 or not (ext[0].isdigit() or ext[0] == b"-"):
        return None
    addr, colon, port = ext[1].rpartition(b":")
    if not colon or not addr or not port.isdigit():
        return None
    bp = int(ext[0]) if ext[0].isdigit() and len(ext[0]) <= 5 else 0
    # haproxy writes IPv6 without brackets (as %ci); brackets, if any, are dropped
    return bp, text(addr).strip("[]"), int(port) if len(port) <= 5 else 0


def _sum_timers(values: list[int]) -> int | None:
    """The sum of haproxy timers, None when one is -1 (that step never happened)."""
    return None if any(v < 0 for v in values) else sum(values)


def _closing_quote(tail: bytes, start: int) -> int:
    """End of the quoted user field that starts at `start`: the first quote followed by a
    space or the end of the line (data appended after the field may hold quotes too)."""
    j = tail.find(b'"', start)
    while j >= 0:
        if j + 1 == len(tail) or tail[j + 1:j + 2] in (b" ", b"\t"):
            return j
        j = tail.find(b'"', j + 1)
    return len(tail)  # unterminated: the rest of the line


def _counters(tok: bytes, parts: int, what: str) -> None:
    if tok.count(b"/") != parts - 1:
        raise ParseError("bad_counters", f"{what}={text(tok)}")


def _num(tok: bytes, what: str) -> int:
    if tok[:1] == b"+":
        tok = tok[1:]
    try:
        return int(tok)
    except ValueError:
        raise ParseError("bad_number", f"{what}={text(tok)}") from None


class HaproxyParser:
    """Parses httplog/tcplog lines (default or with the appended fields)."""

    def __init__(self, tz: datetime.tzinfo) -> None:
        self.tz = tz
        self._seconds: dict[bytes, int] = {}  # b"22/Nov/2026:10:00:00" -> epoch seconds

    def _start_ms(self, tok: bytes) -> int:
        # tok = b"[22/Nov/2026:10:00:00.123]"
        if len(tok) != 26 or tok[:1] != b"[" or tok[-1:] != b"]" or tok[21:22] != b".":
            raise ParseError("bad_timestamp", text(tok))
        key = tok[1:21]
        sec = self._seconds.get(key)
        if sec is None:
            try:
                month = _MONTHS[key[3:6]]
                dt = datetime.datetime(int(key[7:11]), month, int(key[0:2]), int(key[12:14]),
                                       int(key[15:17]), int(key[18:20]), tzinfo=self.tz)
            except (KeyError, ValueError):
                raise ParseError("bad_timestamp", text(tok)) from None
            sec = int(dt.timestamp())
            if len(self._seconds) >= 4096:
                self._seconds.clear()
            self._seconds[key] = sec
        ms = tok[22:25]
        if not ms.isdigit():
            raise ParseError("bad_timestamp", text(tok))
        return sec * 1000 + int(ms)

    @staticmethod
    def _payload(line: bytes) -> bytes | None:
        """The log message without any syslog header; None when it is not traffic."""
        head = line[:1]
        if head == b"<" or line[:3] in _MONTHS or line[4:5] == b"-" and line[10:11] == b"T":
            tag = line.find(b"]: ")
            if tag >= 0:
                return line[tag + 3:]
            tag = line.find(b": ", 16)
            return line[tag + 2:] if tag >= 0 else None
        return line

    def parse(self, line: bytes) -> Record | None:
        if line[-1:] == b"\r":
            line = line[:-1]
        payload = self._payload(line)
        if payload is None:
            return None
        quote = payload.find(b'"')
        head = (payload if quote < 0 else payload[:quote]).split()
        if len(head) < 2 or not head[1].startswith(b"["):
            if any(w in payload for w in _NOTICE_WORDS):
                return None
            raise ParseError("not_a_traffic_line")
        start_ms = self._start_ms(head[1])
        if len(head) < 9:
            raise ParseError("too_few_fields", f"{len(head)} fields")
        client = text(head[0].rpartition(b":")[0] or head[0])  # %ci:%cp, v6 unbracketed
        backend, _, server = text(head[3]).partition("/")
        nosrv = server.startswith("<")
        peer_id = "" if nosrv else f"{backend}/{server}"
        timers = head[4].split(b"/")
        if len(timers) == 5:  # httplog
            if len(head) < 12 or quote < 0:
                raise ParseError("too_few_fields", "httplog without request")
            duration = _num(timers[4], "Ta")
            status = _num(head[5], "status")
            received = _num(head[6], "bytes_read")
            state = text(head[9])
            end_q = payload.find(b'"', quote + 1)
            if end_q < 0:
                raise ParseError("unterminated_request")
            request = payload[quote + 1:end_q].split()
            method = request[0] if request else b""
            uri = text(request[1]) if len(request) > 1 else ""
            tail = payload[end_q + 1:]
            uq = tail.find(b'"')
            ext = (tail if uq < 0 else tail[:uq]).split()
            user = ""
            listener = None
            if uq >= 0 and _appended(ext):
                cq = _closing_quote(tail, uq + 1)
                user = text(tail[uq + 1:cq])
                if user == "-":
                    user = ""
                listener = _listener(tail[cq + 1:].split())
            handshake = _sum_timers([_num(t, w) for t, w in zip(timers[:3], ("TR", "Tw", "Tc"))])
            if handshake is not None and duration >= 0:
                handshake = min(handshake, duration)  # rounded one by one, see tcplog below
            tunnel = None
            if method == b"CONNECT":
                protocol = PROTOCOL_HTTPS
                host, port = split_hostport(uri, 443)
            else:
                protocol = PROTOCOL_HTTP
                host, port = url_target(uri)
        elif len(timers) == 3:  # tcplog
            _counters(head[7], 5, "%ac/%fc/%bc/%sc/%rc")
            _counters(head[8], 2, "%sq/%bq")
            duration = _num(timers[2], "Tt")
            status = 0
            received = _num(head[5], "bytes_read")
            state = text(head[6])
            ext = head[9:]
            user = ""
            protocol = PROTOCOL_HTTPS
            host, port = "", 0
            listener = _listener(ext[3:5]) if _appended(ext) else None
            handshake = _sum_timers([_num(timers[0], "Tw"), _num(timers[1], "Tc")])
            tunnel = None
            if handshake is not None and duration >= 0:
                # each timer is rounded to the ms on its own: Tw + Tc can exceed Tt by one
                handshake = min(handshake, duration)
                tunnel = duration - handshake
        else:
            raise ParseError("bad_timers", text(head[4]))
        if duration < 0:
            duration = 0
        sent, ip_out, target_ip = 0, "", ""
        if _appended(ext):
            sent = _num(ext[0], "U")
            ip_out = "" if ext[1] == b"-" else text(ext[1])
            if ext[2] != b"-:-":
                server_ip, server_port = split_hostport(text(ext[2]))
                target_ip = server_ip
                if not host:
                    host, port = server_ip, server_port
        proxy_port, listen_address, listen_port = listener or (0, "", 0)
        error = _termination(state, status, nosrv)
        return Record(
            start_ms, duration, sent, received, client, user, host, port, protocol, error,
            f"{state} {status}" if error else "", max(status, 0), ip_out, peer_id, listen_port,
            target_ip=target_ip, proxy_port=proxy_port, listen_address=listen_address,
            handshake_ms=handshake, tunnel_ms=tunnel,
        )
