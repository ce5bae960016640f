"""The one record every parser produces, and the one error every parser raises.

A parser turns one log line (bytes, without its newline) into a `Record`, or raises
`ParseError(reason)`. `reason` is a short, stable, snake_case token (it becomes a
metric label), e.g. "bad_timestamp", "too_few_fields", "not_utf8_user".

Conventions, shared by every format:
- times are UTC epoch milliseconds; `start_ms` is when the client's request began
  (squid stamps the end, so its parser subtracts the elapsed time);
- `bytes_sent` is what the client sent towards the target (upload),
  `bytes_received` what the client got back (download); a format that does not log a
  direction leaves it 0 and the README says so;
- `error` is a code from `agent.errors` ("" = the proxy served the request; a status
  returned by the target site is not a proxy error); `raw_error` keeps the proxy's own
  words (e.g. "TCP_DENIED/403", "SC--") for any error, so unknown ones are never lost;
- `domain`, `user_id`, `order_id` are filled after parsing by `agent.enrich`
  (Public Suffix List, user-name pattern), never by a parser.
- the fields after `order_id` feed the activity records (agent.activity) and never
  the per-minute rows: a format that does not log one leaves its default ("", 0 or
  None), which becomes `null` in the activity record.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

PROTOCOL_HTTP = "HTTP"
PROTOCOL_HTTPS = "HTTPS"  # CONNECT tunnels, usually TLS to port 443
PROTOCOL_SOCKS = "SOCKS"
PROTOCOLS = (PROTOCOL_HTTP, PROTOCOL_HTTPS, PROTOCOL_SOCKS)


class ParseError(ValueError):
    """A line that is not a valid record of its format; `reason` is a metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Record:
    start_ms: int
    duration_ms: int
    bytes_sent: int
    bytes_received: int
    client_ip: str
    user: str  # proxy user name as logged ("" when the proxy has no authentication)
    host: str  # target host name or IP literal ("" when unknown)
    port: int  # target port (0 when unknown)
    protocol: str  # one of PROTOCOLS
    error: str = ""  # normalised code from agent.errors, "" when the proxy served it
    raw_error: str = ""  # the proxy's own words for the outcome, kept for unknown errors
    status: int = 0  # HTTP status the proxy logged (0 when none)
    ip_out: str = ""  # proxy's outgoing address, when logged
    peer_id: str = ""  # upstream peer / backend server, when logged
    listen_port: int = 0  # proxy port the client connected to, when logged
    # filled by agent.enrich after parsing:
    domain: str = ""
    user_id: int = 0
    order_id: int = 0
    # for activity records only (agent.activity):
    start_us_rem: int = 0  # microseconds after start_ms (0..999), for logs stamped in µs
    target_ip: str = ""  # the target's IP address, when logged (a name asked is in `host`)
    proxy_port: int = 0  # proxy's source port towards the target, when logged
    listen_address: str = ""  # proxy address the client connected to, when logged
    handshake_ms: int | None = None  # client accepted -> target connected, when logged
    tunnel_ms: int | None = None  # target connected -> end, when logged

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_ms


# Record's fields in order: the parsers' fast paths pass every one positionally, so an
# import fails here, not a parse silently, if the order moves.
RECORD_FIELDS = (
    "start_ms", "duration_ms", "bytes_sent", "bytes_received", "client_ip", "user", "host",
    "port", "protocol", "error", "raw_error", "status", "ip_out", "peer_id", "listen_port",
    "domain", "user_id", "order_id", "start_us_rem", "target_ip", "proxy_port",
    "listen_address", "handshake_ms", "tunnel_ms",
)  # fmt: skip
if tuple(f.name for f in fields(Record)) != RECORD_FIELDS:
    raise ImportError("agent.record.Record changed its field order; update RECORD_FIELDS and the parsers")
