"""Dante (danted 1.4): SOCKS sessions from the connect/disconnect lines.

Recommended danted.conf lines (log to a FILE: its lines carry an exact epoch stamp):

    logoutput: /var/log/danted.log
    socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 log: connect disconnect error }
    socks block { from: 0.0.0.0/0 to: ... log: connect error }   # any ACL denial
    client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 log: error }

Dante logs a session twice: an open line when the connect succeeds and a close line
when it ends. The parser is a small stateful pairer (pure: no clock): an open line is
remembered under its (client address, proxy address) pair and returns None; the close
line returns the session, starting at the remembered open time (exact). A close line
whose open line was not seen (the agent started mid-session, or `log: connect` is
off) starts at end - "Session duration", which dante logs in whole seconds: that start
can be off by up to about one second. At most `max_open` open sessions are remembered
(the source's `max_open_sessions`, default 65536; the oldest is forgotten first, its
close then uses the fallback).

Lines, as danted 1.4.2 writes them (addresses are "ip.port"; with authentication the
client is "username%alice@10.0.0.1.5000", the name written raw, spaces included):
    Nov 22 07:41:07 (1795333267.348448) danted[17203]: info: pass(2): tcp/connect [: CLIENT PROXY_IN -> PROXY_OUT TARGET
    ... info: pass(2): tcp/connect ]: A -> CLIENT PROXY_IN -> B, C -> PROXY_OUT TARGET -> D: remote peer closed.  Session duration: 1s
    ... info: block(1): tcp/connect ]: CLIENT PROXY_IN -> 0.0.0.0.0 TARGET
    ... info: block(1): tcp/connect ]: CLIENT PROXY_IN: could not resolve hostname "x.invalid": ...
    ... info: block(1): tcp/accept ]: CLIENT PROXY_IN: error after reading 19 bytes in 0 seconds: system password authentication failed for user "alice"
A failed login never reaches a tcp/connect line: dante logs it (with `log: error` on
the client rule) as the blocked tcp/accept line above, the user named in the message
("... could not access user "bob"'s records in the system password file" for an unknown
name); that line is the session, with auth_failed, no target and no bytes.

What each part gives:
    (epoch.micro)     the event time (UTC) -> open line: start_ms (and its microseconds,
                      start_us_rem); close line: end
    CLIENT            client_ip, and the user name after "%" and before "@" ("" without
                      authentication: the default user)
    PROXY_IN          dante's listening address and port -> listen_address, listen_port
    PROXY_OUT         dante's outgoing address and port -> ip_out, proxy_port
    TARGET            host (IP or name as the client asked) and port; an IP -> target_ip
    A                 bytes dante wrote to the client -> bytes_received (exact)
    B                 bytes dante read from the client -> bytes_sent (exact)
    Session duration  whole seconds (only used without an open line, see above)
    (a user name with spaces: the client token runs from "%" to the "@" that is
                      followed by an address; spaces in it are read as part of the name)
    reason            "local client closed"/"remote peer closed" -> no error;
                      "remote peer error (Connection refused)" -> connection_refused;
                      "(Connection timed out)" -> timeout; "(No route to host)",
                      "(Network is unreachable)", other remote peer errors ->
                      upstream_error; "local client error (...)" -> client_aborted;
                      "could not resolve hostname" -> dns_failure; a block(N) line ->
                      forbidden_host; "authentication failed"/"password" -> auth_failed;
                      "i/o timeout" (idle session closed by dante) -> no error.
Times for activity records: dante writes the open line once the connection to the target
is up, so a session paired with its open line was a tunnel from start to end: tunnel_ms
= duration_ms; without its open line tunnel_ms is None. handshake_ms (the SOCKS
negotiation before) is not logged: always None.
All sessions are protocol SOCKS. Only tcp/connect lines and failed logins are counted:
the other tcp/accept lines (the client-rule view of the same session) and udp/bind
lines return None, so a denial by a `client block` rule is not counted (deny with
`socks block` rules).
"""

from __future__ import annotations

import datetime
import ipaddress
import re

from agent import errors as E
from agent.parsers.common import norm_host, text
from agent.record import PROTOCOL_SOCKS, ParseError, Record

DEFAULT_MAX_OPEN_SESSIONS = 65536  # sources[].max_open_sessions (agent.config)

_DURATION = re.compile(rb"Session duration: (\d+)s")
_HOSTNAME = re.compile(rb'could not resolve hostname "([^"]*)"')
_OCTAL = re.compile(r"\\([0-7]{3})")
# the user part of "method%user@ip.port ": up to the first "@" followed by an address
_USER = re.compile(rb"%(.*?)@(?=[0-9A-Fa-f.:]+\.[0-9]+(?: |$))")
_AUTH_USER = re.compile(rb'user "([^"]*)"')
_AFTER_READING = re.compile(rb"^error after reading \d+ bytes? in \d+ seconds?: ")


def _unescape(user: str) -> str:
    """dante writes unusual bytes of a name with vis(3) octal escapes."""
    return _OCTAL.sub(lambda m: chr(int(m[1], 8)), user) if "\\" in user else user


def _protect_user(body: bytes) -> bytes:
    """Spaces in the user name (dante writes them raw) as the octal escape \\040, so the
    client address stays one token; _addr turns it back into a space."""
    m = _USER.search(body)
    if m is None or b" " not in m[1]:
        return body
    return body[:m.start(1)] + m[1].replace(b" ", b"\\040") + body[m.end(1):]


def _is_auth_failure(reason: bytes) -> bool:
    r = reason.lower()
    return b"authentication failed" in r or b"password" in r


def _addr(tok: bytes) -> tuple[str, str, int]:
    """b"username%alice@10.0.0.1.5000" -> ("alice", "10.0.0.1", 5000)."""
    user = ""
    if b"@" in tok:
        cred, _, tok = tok.rpartition(b"@")
        user = _unescape(text(cred.partition(b"%")[2]))
    host, dot, port = tok.rpartition(b".")
    if not dot or not port.isdigit():
        raise ParseError("bad_address", text(tok))
    return user, text(host), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _error(reason: bytes, blocked: bool) -> str:
    r = reason.lower()
    if _is_auth_failure(r):
        return E.AUTH_FAILED
    if b"could not resolve" in r:
        return E.DNS_FAILURE
    if blocked:
        return E.FORBIDDEN_HOST
    if not r or r.startswith(b"local client closed") or r.startswith(b"remote peer closed"):
        return ""
    if b"i/o timeout" in r:
        return ""
    if b"connection refused" in r:
        return E.CONNECTION_REFUSED
    if b"timed out" in r or b"timeout" in r:
        return E.TIMEOUT
    if r.startswith(b"local client"):
        return E.CLIENT_ABORTED
    if r.startswith(b"remote peer"):
        return E.UPSTREAM_ERROR
    return E.unknown_error(text(reason))


class DanteParser:
    """Pairs danted open/close lines; see the module docstring."""

    def __init__(self, tz: datetime.tzinfo | None = None, max_open: int = DEFAULT_MAX_OPEN_SESSIONS) -> None:
        if not isinstance(max_open, int) or max_open < 1:
            raise ValueError(f"max_open must be an integer >= 1, got {max_open!r}")
        self.max_open = max_open
        self._open: dict[tuple[bytes, bytes], int] = {}  # -> open time, epoch microseconds
        self.forgotten = 0  # open sessions dropped because max_open was reached

    @property
    def open_sessions(self) -> int:
        return len(self._open)

    def take_open_sessions(self, old: DanteParser) -> None:
        """Continue `old`'s remembered open lines (a reload that rebuilds the source: its
        read position resumes right after them, so their closes are still to come); the
        oldest beyond this parser's `max_open` are forgotten and counted."""
        for key, t_us in old._open.items():
            if key not in self._open and len(self._open) >= self.max_open:
                del self._open[next(iter(self._open))]
                self.forgotten += 1
            self._open[key] = t_us

    def parse(self, line: bytes) -> Record | None:
        if line[-1:] == b"\r":
            line = line[:-1]
        lp = line.find(b" (")
        rp = line.find(b")", lp)
        if lp < 0 or rp < 0:
            raise ParseError("no_epoch_timestamp")
        stamp = line[lp + 2:rp]
        sec, _, frac = stamp.partition(b".")
        micro = (frac + b"000000")[:6]
        if not sec.isdigit() or not micro[:3].isdigit():
            raise ParseError("bad_timestamp", text(stamp))
        t_ms = int(sec) * 1000 + int(micro[:3])
        # the microseconds matter only for an open line (a session's start); a stamp with
        # fewer digits, or junk after the milliseconds, keeps the milliseconds
        t_us = t_ms * 1000 + (int(micro[3:]) if micro[3:].isdigit() else 0)
        i = line.find(b"tcp/connect ", rp)
        if i < 0:
            j = line.find(b"tcp/accept ]: ", rp)
            if j >= 0 and line.rfind(b"block(", rp, j) >= 0:
                return self._login_failed(line[j + 14:].strip(), t_us)
            return None  # other tcp/accept lines, udp, startup and shutdown notices
        blocked = line.rfind(b"block(", rp, i) >= 0
        kind = line[i + 12:i + 15]
        body = line[i + 15:].strip()
        if b"%" in body:
            body = _protect_user(body)
        if kind == b"[: ":
            return self._remember(body, t_us)
        if kind != b"]: ":
            raise ParseError("bad_event", text(line[i:i + 15]))
        return self._close(body, t_ms, blocked)

    def _remember(self, body: bytes, t_us: int) -> None:
        parts = body.split()
        if len(parts) < 2:
            raise ParseError("too_few_fields", "open line")
        key = (parts[0], parts[1])
        if key not in self._open and len(self._open) >= self.max_open:
            del self._open[next(iter(self._open))]
            self.forgotten += 1
        self._open[key] = t_us
        return None

    @staticmethod
    def _login_failed(body: bytes, t_us: int) -> Record | None:
        """A blocked tcp/accept line: a failed login is a session of its own (the
        client never got to a tcp/connect line); any other reason is not counted."""
        colon = body.find(b": ")
        if colon < 0:
            return None
        reason = body[colon + 2:].strip().rstrip(b".")
        if not _is_auth_failure(reason):
            return None
        p = body[:colon].split()
        if len(p) < 2:
            raise ParseError("too_few_fields", "tcp/accept line")
        _, client_ip, _ = _addr(p[0])
        _, listen_address, listen_port = _addr(p[1])
        m = _AUTH_USER.search(reason)
        user = _unescape(text(m[1])) if m else ""
        raw = text(_AFTER_READING.sub(b"", reason))
        t_ms, t_rem = divmod(t_us, 1000)
        return Record(
            t_ms, 0, 0, 0, client_ip, user, "", 0, PROTOCOL_SOCKS, E.AUTH_FAILED,
            f"block: {raw}", 0, "", "", listen_port, start_us_rem=t_rem, listen_address=listen_address,
        )

    def _close(self, body: bytes, end_ms: int, blocked: bool) -> Record:
        colon = body.find(b": ")
        head, reason = (body, b"") if colon < 0 else (body[:colon], body[colon + 2:])
        reason = reason.strip()
        p = head.replace(b",", b" ").split()
        if p and p[0].isdigit():
            # A -> CLIENT PROXY_IN -> B  C -> PROXY_OUT TARGET -> D
            if len(p) < 12 or p[1] != b"->" or p[4] != b"->" or p[7] != b"->" or p[10] != b"->":
                raise ParseError("too_few_fields", "close line")
            received, sent = int(p[0]), int(p[5])
            client_tok, in_tok, out_tok, target_tok = p[2], p[3], p[8], p[9]
        else:
            # CLIENT PROXY_IN [-> PROXY_OUT TARGET]: a request that was not performed
            if len(p) < 2:
                raise ParseError("too_few_fields", "close line")
            received = sent = 0
            client_tok, in_tok = p[0], p[1]
            out_tok, target_tok = (p[3], p[4]) if len(p) >= 5 and p[2] == b"->" else (b"", b"")
        user, client_ip, _ = _addr(client_tok)
        _, listen_address, listen_port = _addr(in_tok)
        ip_out, proxy_port = "", 0
        if out_tok:
            _, ip_out, proxy_port = _addr(out_tok)
            if ip_out in ("0.0.0.0", "::"):
                ip_out, proxy_port = "", 0  # no outgoing connection was made
        host, port = "", 0
        if target_tok:
            _, host, port = _addr(target_tok)
        else:
            m = _HOSTNAME.search(reason)
            if m:
                host = text(m[1])
        opened = self._open.pop((client_tok, in_tok), None)
        if opened is None:
            m = _DURATION.search(reason)
            start, start_us_rem = (end_ms - int(m[1]) * 1000 if m else end_ms), 0
        else:
            start, start_us_rem = divmod(opened, 1000)
        reason_text = reason.split(b".  Session duration")[0].rstrip(b".")
        error = _error(reason_text, blocked)
        raw = text(reason_text)
        if blocked:
            raw = f"block: {raw}" if raw else "block"
        host = norm_host(host)
        duration = max(end_ms - start, 0)
        return Record(
            start, duration, sent, received, client_ip, user, host,
            port, PROTOCOL_SOCKS, error, raw if error else "", 0, ip_out, "", listen_port,
            start_us_rem=start_us_rem, target_ip=host if target_tok and _is_ip(host) else "",
            proxy_port=proxy_port, listen_address=listen_address,
            tunnel_ms=None if opened is None else duration,
        )
