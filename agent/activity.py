"""Activity records: one wire `Activity` per request, next to the per-minute rows.

Pure: no clocks, no I/O. `to_activity(rec, worker)` turns one enriched Record into the
Webshare-style activity object of agent.wire.batch; `ActivityLog` keeps the ones to send
until the service drains them into the same batch (and spool file) as the rows.

Mapping (the README's per-proxy tables say which Record fields each format fills):
    ts_us           start_ms * 1000 + start_us_rem (microseconds where the log has them)
    protocol        SOCKS -> "socks"; HTTP and HTTPS (CONNECT tunnels, TCP forwards) ->
                    "http", as Webshare counts a CONNECT through an HTTP proxy
    duration_ms, bytes_sent, bytes_received, error, user_id, order_id   as in the Record
    handshake_ms, tunnel_ms   as logged, null when the format does not log them
    auth_username   the user name as logged; null when there is none ("")
    proxy_address   ip_out (the proxy's outgoing address); null when not logged
    client_address  client_ip ("" when not logged: the wire requires a string)
    hostname        the host the client asked for, when it is a NAME; null for an IP
                    literal (then it is the ip_address) or when unknown
    ip_address      the target's IP: target_ip when the log has it, else the host when
                    that is an IP literal; null otherwise (a name the proxy never resolved)
    domain          the registrable domain (agent.enrich) of a host NAME; null for an IP
                    literal or an unknown host
    port, proxy_port, listen_port   null when 0 (not logged)
    listen_address  null when not logged
    worker          the agent's `agent.worker`, whatever aggregate.drop_dimensions says
                    (an activity record is one request: there is no cardinality to cut)

Limits: a string over the wire's 255 characters is cut to 255 and counted in `fixed`
(like the rows' values_fixed); a port over 65535 or a handshake/tunnel time over
2**53-1 becomes null, an id outside 0..2**63-1 becomes 0 and a start before 1970 becomes
0, each counted too, so the collector never refuses a batch for one bad value. (Bytes
and durations were already checked by the aggregator, which refuses such a record.)

Sampling (`[activity] sample_rate`): a record is kept when a CRC-32 of its identifying
fields falls below rate * 2**32. Deterministic (the same line always gets the same
answer, in tests and after a restart) and independent of arrival order; no clock. Only
activity records are sampled: the per-minute rows and concurrency profiles are made from
every record, so the statistics stay exact whatever the rate.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from agent.record import PROTOCOL_SOCKS, Record
from agent.wire.batch import ACTIVITY_FIELDS, MAX_COUNTER, MAX_INT, MAX_PORT, MAX_STR, Activity
from agent.wire.compact import ActivityRecords

DEFAULT_SAMPLE_RATE = 1.0
DEFAULT_MAX_RECORDS_PER_BATCH = 20_000
MAX_RECORDS_PER_BATCH_CAP = 100_000  # with max_batch_rows, must fit the collector's server.max_rows
_HASH_SPACE = 1 << 32

_ip_memo: dict[str, bool] = {}
_IP_MEMO_LIMIT = 65536
# An Activity as the tuple ActivityRecords holds (ACTIVITY_FIELDS is its field order).
_VALUES = attrgetter(*ACTIVITY_FIELDS)


def is_ip(host: str) -> bool:
    """Is host an IPv4 or IPv6 literal (brackets already removed by the parsers)?"""
    known = _ip_memo.get(host)
    if known is None:
        try:
            ipaddress.ip_address(host)
            known = True
        except ValueError:
            known = False
        if len(_ip_memo) >= _IP_MEMO_LIMIT:
            _ip_memo.clear()
        _ip_memo[host] = known
    return known


@dataclass(frozen=True)
class ActivitySettings:
    """What the service needs of `[activity]` (agent.config validates the values)."""

    enabled: bool = True
    sample_rate: float = DEFAULT_SAMPLE_RATE
    max_records_per_batch: int = DEFAULT_MAX_RECORDS_PER_BATCH


class _Fitter:
    """Cuts strings and ports to the wire's limits, counting each fix."""

    __slots__ = ("fixed",)

    def __init__(self) -> None:
        self.fixed = 0

    def text(self, value: str) -> str | None:
        if not value:
            return None
        if len(value) > MAX_STR:
            self.fixed += 1
            return value[:MAX_STR]
        return value

    def ms(self, value: int | None) -> int | None:
        if value is None or 0 <= value <= MAX_COUNTER:
            return value
        self.fixed += 1
        return None

    def ident(self, value: int) -> int:
        if 0 <= value <= MAX_INT:
            return value
        self.fixed += 1
        return 0

    def port(self, value: int) -> int | None:
        if value <= 0:
            return None
        if value > MAX_PORT:
            self.fixed += 1
            return None
        return value


def _to_activity(rec: Record, worker: str, fit: _Fitter) -> Activity:
    host = rec.host
    host_is_ip = bool(host) and is_ip(host)
    name = fit.text(host) if host and not host_is_ip else None
    target_ip = rec.target_ip or (host if host_is_ip else "")
    client = rec.client_ip
    if len(client) > MAX_STR:
        fit.fixed += 1
        client = client[:MAX_STR]
    ts_us = rec.start_ms * 1000 + rec.start_us_rem
    if ts_us < 0:
        fit.fixed += 1
        ts_us = 0
    return Activity(
        ts_us=ts_us,
        protocol="socks" if rec.protocol == PROTOCOL_SOCKS else "http",
        duration_ms=rec.duration_ms,
        handshake_ms=fit.ms(rec.handshake_ms),
        tunnel_ms=fit.ms(rec.tunnel_ms),
        error=rec.error[:MAX_STR],
        auth_username=fit.text(rec.user),
        proxy_address=fit.text(rec.ip_out),
        client_address=client,
        ip_address=fit.text(target_ip),
        hostname=name,
        domain=fit.text(rec.domain) if name is not None else None,
        port=fit.port(rec.port),
        proxy_port=fit.port(rec.proxy_port),
        listen_address=fit.text(rec.listen_address),
        listen_port=fit.port(rec.listen_port),
        user_id=fit.ident(rec.user_id),
        order_id=fit.ident(rec.order_id),
        worker=worker[:MAX_STR],
        bytes_sent=rec.bytes_sent,
        bytes_received=rec.bytes_received,
    )


def to_activity(rec: Record, worker: str) -> Activity:
    """The activity record of one enriched Record (see the module docstring)."""
    return _to_activity(rec, worker, _Fitter())


def sample_key(rec: Record) -> int:
    """CRC-32 of the fields that tell one request from another, 0..2**32-1."""
    ident = (f"{rec.start_ms}.{rec.start_us_rem}|{rec.duration_ms}|{rec.client_ip}|{rec.user}|"
             f"{rec.host}|{rec.port}|{rec.bytes_sent}|{rec.bytes_received}|{rec.error}")
    return zlib.crc32(ident.encode("utf-8", "surrogatepass"))


def sampled_in(rec: Record, rate: float) -> bool:
    """Is rec kept at sample_rate `rate` (0 < rate <= 1)?"""
    return rate >= 1.0 or sample_key(rec) < rate * _HASH_SPACE


class ActivityLog:
    """The activity records waiting for the next flush, and what happened to the others.

    `add` is called with every record the aggregator accepted; `drain` hands back the
    records kept since the last drain. Counters (for the metrics): `kept`, `sampled_out`
    and `fixed` (values cut to the wire's limits); `disabled` counts the records seen
    while `enabled` is false. Nothing is ever dropped silently: a record is kept, or
    counted as sampled out or disabled.
    """

    def __init__(self, worker: str, settings: ActivitySettings = ActivitySettings()) -> None:
        if not 0.0 < settings.sample_rate <= 1.0:
            raise ValueError(f"sample_rate: {settings.sample_rate!r} is outside 0 < rate <= 1")
        if settings.max_records_per_batch < 1:
            raise ValueError("max_records_per_batch: must be >= 1")
        self.worker = worker
        self._worker = worker[:MAX_STR]
        self.settings = settings
        self._rate = settings.sample_rate
        self._pending: list[tuple[Any, ...]] = []  # ActivityRecords.values
        self._fit = _Fitter()
        self._kept_drained = 0  # records kept and drained; `kept` adds the pending ones
        # every record is kept: add() then skips both tests with one
        self._every = settings.enabled and self._rate >= 1.0
        self.sampled_out = 0
        self.disabled = 0

    @property
    def fixed(self) -> int:
        return self._fit.fixed

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """As many records waiting as `max_records_per_batch`: time to flush."""
        return len(self._pending) >= self.settings.max_records_per_batch

    @property
    def kept(self) -> int:
        # counted from the pending list at drain (not once per line in add)
        return self._kept_drained + len(self._pending)

    def add(self, rec: Record) -> None:
        if not self._every:
            if not self.settings.enabled:
                self.disabled += 1
                return
            if sample_key(rec) >= self._rate * _HASH_SPACE:
                self.sampled_out += 1
                return
        # _to_activity as a tuple of ActivityRecords, inline (this runs once per log
        # line), with the checks of the common record (nothing to fit) folded into a few
        # comparisons
        host, user, ip_out, tip = rec.host, rec.user, rec.ip_out, rec.target_ip
        la, domain, client = rec.listen_address, rec.domain, rec.client_ip
        hs, tn = rec.handshake_ms, rec.tunnel_ms
        port, proxy_port, listen_port = rec.port, rec.proxy_port, rec.listen_port
        user_id, order_id, start = rec.user_id, rec.order_id, rec.start_ms
        # x | y | z of ints >= 0 stays under 2**k iff each does (MAX_PORT, MAX_INT and
        # MAX_COUNTER are all 2**k - 1); the summed length bounds each string's length
        if not (
            0 <= port | proxy_port | listen_port <= MAX_PORT
            and 0 <= user_id | order_id <= MAX_INT
            and start >= 0
            and len(host) + len(user) + len(ip_out) + len(tip) + len(la) + len(domain) + len(client) <= MAX_STR
            and (hs is None or 0 <= hs <= MAX_COUNTER)
            and (tn is None or 0 <= tn <= MAX_COUNTER)
        ):
            self._pending.append(_VALUES(_to_activity(rec, self.worker, self._fit)))
            return
        if host:
            host_is_ip = _ip_memo.get(host)
            if host_is_ip is None:
                host_is_ip = is_ip(host)
            name = None if host_is_ip else host
        else:
            host_is_ip = False
            name = None
        self._pending.append((
            start * 1000 + rec.start_us_rem,
            "socks" if rec.protocol == PROTOCOL_SOCKS else "http",
            rec.duration_ms, hs, tn, rec.error, user or None, ip_out or None, client,
            tip or (host if host_is_ip else None), name, (domain or None) if name is not None else None,
            port or None, proxy_port or None, la or None, listen_port or None,
            user_id, order_id, self._worker, rec.bytes_sent, rec.bytes_received,
        ))  # fmt: skip

    def drain(self) -> ActivityRecords:
        """The records kept since the last drain (a sequence of Activity, made only if
        read: the encoder sends the tuples as they are)."""
        out = self._pending
        self._pending = []
        self._kept_drained += len(out)
        return ActivityRecords(out)
