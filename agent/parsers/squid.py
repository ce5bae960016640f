"""Squid access.log: the native `squid` logformat and the extended `proxymeter` one.

Recommended squid.conf (squid 4/5/6), exact lines:

    logformat proxymeter %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt %>st %<la %>lp %err_code/%err_detail %>la %<lp
    access_log daemon:/var/log/squid/access.log proxymeter

Lines sent through syslog (`access_log syslog:local4.info proxymeter`) parse too: the
syslog header is skipped, squid's own %ts gives the time. The plain native format also works (`access_log daemon:/var/log/squid/access.log squid`,
i.e. "%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt"); the parser tells the
two apart by the fields after the hierarchy field. The extended one appends six fields
to the native line, so tools that read the native prefix keep working. Lines of the
earlier extended format (native + the first four of them, without `%>la %<lp`) still
parse, without the listen address and the outgoing port.

What each field gives (`proxymeter` = native + the last six):
    %ts.%03tu        END of the transaction, epoch seconds with ms. Squid stamps the end:
                     start_ms = ts_ms - %tr. Exact to the millisecond.
    %6tr             elapsed ms (request read -> reply written; for CONNECT the whole
                     tunnel) -> duration_ms. Exact to the ms (squid truncates, so a start
                     can be early/late by < 1 ms).
    %>a              client address -> client_ip
    %Ss/%03>Hs       squid result code / HTTP status sent to the client -> status, error
    %<st             bytes squid sent to the client (headers + body; for CONNECT the
                     tunnelled bytes server->client) -> bytes_received (exact)
    %rm %ru          method and URL: CONNECT "host:port" -> protocol HTTPS; an absolute
                     URL -> protocol HTTP, host and port from the URL (80/443 by scheme)
    %[un             user name; "-" -> "". Squid's "[" quoting writes "%", control
                     bytes, bytes >= 0x7f, "[" and "]" as %XX but leaves spaces raw; the
                     parser decodes the %XX (then UTF-8, errors replaced) and anchors the
                     line from both ends, so a user name with spaces parses.
    %Sh/%<a          hierarchy code / server or peer address. A *_PARENT/SIBLING/PINNED
                     code -> peer_id = the peer; HIER_DIRECT -> no peer_id, and the
                     address is the target's IP -> target_ip.
    %mt              MIME type (ignored)
  extended only:
    %>st             bytes the client sent (request line + headers + body; CONNECT:
                     the tunnelled bytes client->server) -> bytes_sent (exact)
    %<la             squid's local address towards the server -> ip_out ("-"/0.0.0.0 -> "")
    %>lp             squid's port the client connected to -> listen_port
    %err_code/%err_detail
                     squid's own error (ERR_DNS_FAIL, ERR_CONNECT_FAIL/errno=111, ...)
                     -> exact error classification.
    %>la             squid's address the client connected to -> listen_address
    %<lp             squid's source port of its last connection to the server ->
                     proxy_port ("-"/0 -> none: no server connection was made)
Squid logs no handshake or tunnel times: handshake_ms and tunnel_ms stay None.

Native-format limits: bytes_sent is always 0 (squid's native line logs only the reply
size); ip_out, listen_port, listen_address and proxy_port are empty. Without %err_code
the error is inferred from %Ss, the status and the hierarchy: DENIED/407 -> auth_failed, DENIED/other ->
forbidden_host, *_ABORTED or status 000 -> client_aborted, a 4xx/5xx squid made itself
(hierarchy HIER_NONE, or result NONE_NONE) -> invalid_request (400/411/413/414/417/431/
501/505), timeout (504), dns_failure (500/502/503 with HIER_NONE: squid reached no
server, i.e. the name did not resolve) or upstream_error (NONE_NONE/5xx with a server:
a failed CONNECT). A plain-HTTP connect failure (TCP_MISS/503 HIER_DIRECT/ip) cannot be
told from the target's own 503 in the native format and counts as the target's status;
use the extended format for exact errors.

Lines with the URL "error:transaction-end-before-headers" (a connection that closed
before sending any request: port scans, TCP health checks) complete no request: the
parser returns None for them.
"""

from __future__ import annotations

import datetime
from urllib.parse import unquote_to_bytes

from agent import errors as E
from agent.parsers.common import BoundedCache, split_hostport, text, url_target
from agent.record import PROTOCOL_HTTP, PROTOCOL_HTTPS, ParseError, Record

HIER_CODES = frozenset(
    b"HIER_NONE HIER_DIRECT SIBLING_HIT PARENT_HIT DEFAULT_PARENT SINGLE_PARENT "
    b"FIRSTUP_PARENT FIRST_PARENT_MISS CLOSEST_PARENT_MISS CLOSEST_PARENT CLOSEST_DIRECT "
    b"NO_DIRECT_FAIL SOURCE_FASTEST ROUNDROBIN_PARENT CACHE_DIGEST_HIT CD_PARENT_HIT "
    b"CD_SIBLING_HIT NO_CACHE_DIGEST_DIRECT CARP ANY_OLD_PARENT USERHASH_PARENT "
    b"SOURCEHASH_PARENT PINNED ORIGINAL_DST STANDBY_POOL NONE DIRECT "
    b"TIMEOUT_DIRECT TIMEOUT_FIRST_PARENT_MISS TIMEOUT_CLOSEST_PARENT_MISS".split()
)
_PEER_WORDS = ("PARENT", "SIBLING", "PINNED", "CARP", "POOL")
_NO_REQUEST_URL = b"error:transaction-end-before-headers"
_HIER_DIRECT = b"HIER_DIRECT/"
_SQUID_MADE = frozenset(("NONE", "NONE_NONE", "TAG_NONE", "TAG_NONE_NONE"))
_MISS_LIKE = frozenset(("TCP_MISS", "TCP_TUNNEL", "TCP_CONNECT")) | _SQUID_MADE
_INVALID_STATUS = frozenset((400, 405, 411, 413, 414, 417, 431, 501, 505))
_ERRNO_TIMEOUT = frozenset(("errno=110", "errno=ETIMEDOUT"))
_ERRNO_UNREACH = frozenset(("errno=101", "errno=113", "errno=ENETUNREACH", "errno=EHOSTUNREACH"))

# squid %err_code -> code; None: decided by a rule in _classify_err
_ERR_CODES: dict[str, str | None] = {
    "ERR_CACHE_ACCESS_DENIED": E.AUTH_FAILED,
    "ERR_CACHE_MGR_ACCESS_DENIED": E.AUTH_FAILED,
    "ERR_ACCESS_DENIED": None,  # 407 -> auth_failed, else forbidden_host
    "ERR_FORWARDING_DENIED": E.FORBIDDEN_HOST,
    "ERR_DNS_FAIL": E.DNS_FAILURE,
    "ERR_CONNECT_FAIL": None,  # errno decides; HIER_NONE -> dns_failure
    "ERR_CANNOT_FORWARD": None,  # HIER_NONE -> dns_failure, else upstream_error
    "ERR_READ_ERROR": None,  # same (squid 5 logs a failed lookup as this with HIER_NONE)
    "ERR_READ_TIMEOUT": E.TIMEOUT,
    "ERR_LIFETIME_EXP": E.TIMEOUT,
    "ERR_GATEWAY_FAILURE": E.UPSTREAM_ERROR,
    "ERR_WRITE_ERROR": E.UPSTREAM_ERROR,
    "ERR_ZERO_SIZE_OBJECT": E.UPSTREAM_ERROR,
    "ERR_INVALID_RESP": E.UPSTREAM_ERROR,
    "ERR_SECURE_CONNECT_FAIL": E.UPSTREAM_ERROR,
    "ERR_FTP_FAILURE": E.UPSTREAM_ERROR,
    "ERR_FTP_UNAVAILABLE": E.UPSTREAM_ERROR,
    "ERR_FTP_NOT_FOUND": E.UPSTREAM_ERROR,
    "ERR_FTP_FORBIDDEN": E.UPSTREAM_ERROR,
    "ERR_FTP_PUT_ERROR": E.UPSTREAM_ERROR,
    "ERR_INVALID_REQ": E.INVALID_REQUEST,
    "ERR_INVALID_URL": E.INVALID_REQUEST,
    "ERR_UNSUP_REQ": E.INVALID_REQUEST,
    "ERR_UNSUP_HTTPVERSION": E.INVALID_REQUEST,
    "ERR_PROTOCOL_UNKNOWN": E.INVALID_REQUEST,
    "ERR_TOO_BIG": E.INVALID_REQUEST,
    "ERR_CLIENT_GONE": E.CLIENT_ABORTED,
    "ERR_REQUEST_START_TIMEOUT": E.CLIENT_ABORTED,
    "ERR_REQUEST_PARSE_TIMEOUT": E.CLIENT_ABORTED,
    "ERR_SOCKET_FAILURE": E.PROXY_ERROR,
    "ERR_SHUTTING_DOWN": E.PROXY_ERROR,
    "ERR_NO_RELAY": E.PROXY_ERROR,
    "ERR_ONLY_IF_CACHED_MISS": E.PROXY_ERROR,
    "ERR_ICAP_FAILURE": E.PROXY_ERROR,
    "ERR_ESI": E.PROXY_ERROR,
    "ERR_CONFLICT_HOST": E.INVALID_REQUEST,
    "ERR_PRECONDITION_FAILED": "",  # a normal 412 reply
}


def _native_error(ss: str, status: int, hier: str) -> str:
    if "DENIED" in ss:
        return E.AUTH_FAILED if status == 407 else E.FORBIDDEN_HOST
    if ss.endswith("_ABORTED") or status == 0:
        return E.CLIENT_ABORTED
    if status < 400:
        return ""
    made_by_squid = ss in _SQUID_MADE or (hier == "HIER_NONE" and ss in _MISS_LIKE)
    if not made_by_squid:
        return ""  # the target's own status, relayed (or a cached copy of it)
    if status == 407:
        return E.AUTH_FAILED
    if status == 403:
        return E.FORBIDDEN_HOST
    if status in _INVALID_STATUS:
        return E.INVALID_REQUEST
    if status == 504:
        return E.TIMEOUT
    if status in (500, 502, 503):
        return E.DNS_FAILURE if hier == "HIER_NONE" else E.UPSTREAM_ERROR
    return E.unknown_error(f"{ss}/{status:03d}")


def _classify_err(err_code: str, err_detail: str, status: int, hier: str) -> str:
    if err_code not in _ERR_CODES:
        return E.unknown_error(f"{err_code}/{err_detail}")
    mapped = _ERR_CODES[err_code]
    if mapped is not None:
        return mapped
    if err_code == "ERR_ACCESS_DENIED":
        return E.AUTH_FAILED if status == 407 else E.FORBIDDEN_HOST
    if hier == "HIER_NONE":
        return E.DNS_FAILURE  # no server address was ever tried
    if err_code == "ERR_CONNECT_FAIL":
        if err_detail in _ERRNO_TIMEOUT:
            return E.TIMEOUT
        if err_detail in _ERRNO_UNREACH:
            return E.UPSTREAM_ERROR
        return E.CONNECTION_REFUSED
    return E.UPSTREAM_ERROR


def _outcome(key: tuple[bytes, bytes, bytes]) -> tuple[int, str, str, str]:
    """(Ss/status, hierarchy token, err token or b"") -> (status, error, raw_error, peer_id)."""
    code_status, hier_tok, err_tok = key
    ss, _, st = text(code_status).partition("/")
    if not st.isdigit():
        raise ParseError("bad_status", text(code_status))
    status = int(st)
    hier, _, peer = text(hier_tok).partition("/")
    peer_id = peer if peer != "-" and any(w in hier for w in _PEER_WORDS) else ""
    error = ""
    raw = f"{ss}/{st}"
    if err_tok and err_tok != b"-/-" and err_tok != b"-":
        code, _, detail = text(err_tok).partition("/")
        if code != "-":
            error = _classify_err(code, detail, status, hier)
            raw = f"{raw} {code}/{detail}"
    if not error:
        error = _native_error(ss, status, hier)
    return status, error, (raw if error else ""), peer_id


def _user(raw: bytes) -> str:
    if raw == b"-":
        return ""
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    return text(raw)


def _connect_target(raw: bytes) -> tuple[str, int]:
    return split_hostport(text(raw), 443)


def _ip(raw: bytes) -> str:
    return "" if raw in (b"-", b"0.0.0.0", b"::") else text(raw)


def _port(raw: bytes) -> int:
    return int(raw) if raw.isdigit() and len(raw) <= 5 else 0


def _target_ip(hier_tok: bytes) -> str:
    """The server address of a direct fetch is the target's IP; a peer's is not."""
    if hier_tok[:12] != _HIER_DIRECT:
        return ""
    return _ip(hier_tok[12:])


def _is_addr(tok: bytes) -> bool:
    """An IPv4/IPv6 literal or "-" (squid's %>la): tells the two appended fields from
    other data appended to a line of the earlier four-field extension."""
    if tok == b"-":
        return True
    return bool(tok) and (b"." in tok or b":" in tok) and tok.strip(b"0123456789abcdefABCDEF.:") == b""


def _is_hier(tok: bytes) -> bool:
    slash = tok.find(b"/")
    return slash > 0 and tok[:slash] in HIER_CODES


def _direct(hier_tok: bytes) -> bytes:
    """The hierarchy token as the outcome memo's key: a direct fetch's server address
    (one per target IP: thousands) never changes the outcome, so it is left out."""
    return _HIER_DIRECT if hier_tok[:12] == _HIER_DIRECT else hier_tok


def _authority_target(raw: bytes) -> tuple[str, int]:
    return url_target(text(raw))


class SquidParser:
    """Parses native and `proxymeter` squid lines; see the module docstring.

    Speed: one bytes.split() per line; everything derived from a low-cardinality token
    (result code + hierarchy + err_code, user, client, URL authority) is memoised in a
    bounded dict, so the common line costs a few dict hits and two int() calls.

    Two paths, one meaning: `parse` handles the shape nearly every line has (no syslog
    header, a one-token user name right before a HIER_* field, the native 10 fields or
    the extended 14) with the fewest steps, and hands every other line (and every line
    it cannot finish, e.g. a bad number) to `parse_general`, which handles them all. A
    test checks both give the same result, or the same ParseError reason, on every line
    of the fixture corpus, generated logs and mutations of them.
    """

    def __init__(self, tz: datetime.tzinfo | None = None) -> None:
        self._outcome = BoundedCache(_outcome, 4096)
        self._user = BoundedCache(_user, 65536)
        self._connect = BoundedCache(_connect_target, 65536)
        self._authority = BoundedCache(_authority_target, 65536)
        self._ip = BoundedCache(_ip, 65536)
        # direct views of the memo dicts: a dict.get() hit avoids a Python-level call
        self._outcome_d = self._outcome.data
        self._user_d = self._user.data
        self._connect_d = self._connect.data
        self._authority_d = self._authority.data
        self._ip_d = self._ip.data

    def parse(self, line: bytes) -> Record | None:
        parts = line.split()  # also drops a trailing "\r"
        n = len(parts)
        if n == 10:
            extended = False
        elif (n == 16 or n == 14) and parts[10].isdigit() and b"/" in parts[13]:
            extended = True
            if n == 16 and not _is_addr(parts[14]):
                return self.parse_general(line)
        else:
            return self.parse_general(line)
        ts = parts[0]
        hier = parts[8]
        if hier[:5] != b"HIER_" or len(ts) < 5 or ts[-4] != 46 or not 48 <= ts[0] <= 57:
            return self.parse_general(line)
        target_ip = ""
        if hier[:12] == _HIER_DIRECT:  # _direct() and _target_ip() inlined
            server = hier[12:]
            target_ip = self._ip_d.get(server) or self._ip(server)
            hier = _HIER_DIRECT
        try:
            end_ms = int(ts.replace(b".", b"", 1))
            elapsed = int(parts[1])
            reply_size = int(parts[4])
        except ValueError:
            return self.parse_general(line)
        if extended:
            request_size = int(parts[10])
            ip_out = self._ip_d.get(parts[11]) or self._ip(parts[11])
            lp = parts[12]
            listen_port = int(lp) if lp.isdigit() else 0
            key = (parts[3], hier, parts[13])
            if n == 16:
                listen_address = self._ip_d.get(parts[14]) or self._ip(parts[14])
                proxy_port = _port(parts[15])
            else:  # the earlier four-field extension
                listen_address, proxy_port = "", 0
        else:
            request_size = listen_port = proxy_port = 0
            ip_out = listen_address = ""
            key = (parts[3], hier, b"")
        outcome = self._outcome_d.get(key)
        if outcome is None:
            try:
                outcome = self._outcome(key)
            except ParseError:
                return self.parse_general(line)
        url = parts[6]
        if url[:6] == b"error:":
            return self.parse_general(line)
        if parts[5] == b"CONNECT":
            host, port = self._connect_d.get(url) or self._connect(url)
            protocol = PROTOCOL_HTTPS
        else:
            sep = url.find(b"://")
            if sep > 0:
                slash = url.find(b"/", sep + 3)
                auth = url if slash < 0 else url[:slash]
                host, port = self._authority_d.get(auth) or self._authority(auth)
            else:
                host, port = "", 0
            protocol = PROTOCOL_HTTP
        user = self._user_d.get(parts[7])
        if user is None:
            user = self._user(parts[7])
        status, error, raw_error, peer_id = outcome
        # every field positionally (RECORD_FIELDS' order): keywords cost a name match each
        return Record(
            end_ms - elapsed, elapsed, request_size, reply_size,
            self._ip_d.get(parts[2]) or self._ip(parts[2]), user,
            host, port, protocol, error, raw_error, status, ip_out, peer_id, listen_port,
            "", 0, 0, 0, target_ip, proxy_port, listen_address, None, None,
        )  # fmt: skip

    def parse_general(self, line: bytes) -> Record | None:
        """Any line this format allows (syslog header, user names with spaces, peers
        and hierarchy codes anywhere, odd timestamps); the reference for `parse`."""
        if line[-1:] == b"\r":
            line = line[:-1]
        parts = line.split()
        n = len(parts)
        if n and not parts[0][:1].isdigit():
            # `access_log syslog:...`: drop the syslog header ("<PRI>Mmm dd hh:mm:ss
            # host squid[pid]: "); squid's own %ts follows and carries the time
            tag = line.find(b": ")
            if tag < 0:
                raise ParseError("bad_number", "line does not start with a timestamp")
            parts = line[tag + 2:].split()
            n = len(parts)
        if n < 10:
            raise ParseError("too_few_fields", f"{n} fields")
        # the hierarchy field anchors the variable-width user field from the right
        if parts[8][:5] == b"HIER_" or _is_hier(parts[8]):
            h = 8
        else:
            for h in range(9, n - 1):
                if _is_hier(parts[h]):
                    break
            else:
                raise ParseError("no_hierarchy_field")
        ts = parts[0]
        try:
            if len(ts) > 4 and ts[-4] == 46:  # b"." : seconds.milliseconds
                end_ms = int(ts.replace(b".", b"", 1))
            else:
                end_ms = int(float(ts) * 1000)
            elapsed = int(parts[1])
            reply_size = int(parts[4])
        except ValueError:
            raise ParseError("bad_number", text(b" ".join(parts[:5]))) from None
        listen_address, proxy_port = "", 0
        if n >= h + 6 and parts[h + 2].isdigit() and b"/" in parts[h + 5]:
            request_size = int(parts[h + 2])
            ip_out = self._ip(parts[h + 3])
            lp = parts[h + 4]
            listen_port = int(lp) if lp.isdigit() else 0
            err_tok = parts[h + 5]
            if n >= h + 8 and _is_addr(parts[h + 6]):
                listen_address = self._ip(parts[h + 6])
                proxy_port = _port(parts[h + 7])
        else:
            request_size = listen_port = 0
            ip_out = ""
            err_tok = b""
        url = parts[6]
        status, error, raw_error, peer_id = self._outcome((parts[3], _direct(parts[h]), err_tok))
        if url[:6] == b"error:":
            if url == _NO_REQUEST_URL:
                return None
            if not error:
                error = E.INVALID_REQUEST
                raw_error = text(parts[3] + b" " + url)
        if parts[5] == b"CONNECT":
            host, port = self._connect(url)
            protocol = PROTOCOL_HTTPS
        else:
            sep = url.find(b"://")
            if sep > 0:
                slash = url.find(b"/", sep + 3)
                host, port = self._authority(url if slash < 0 else url[:slash])
            else:
                host, port = "", 0
            protocol = PROTOCOL_HTTP
        user = self._user(parts[7] if h == 8 else b" ".join(parts[7:h]))
        return Record(
            end_ms - elapsed, elapsed, request_size, reply_size, self._ip(parts[2]), user,
            host, port, protocol, error, raw_error, status, ip_out, peer_id, listen_port,
            target_ip=_target_ip(parts[h]), proxy_port=proxy_port, listen_address=listen_address,
        )
