"""The ingest body: FonProxy's `{"logs": [row, ...]}` plus proxymeter's extensions.

This is version 1, the row shape. Agents send version 2, the same batch in columns
with a string table ({"v": 2, ...}, see agent.wire.compact); `decode_body` reads both.

Body (JSON or msgpack, same structure):
    {"logs": [row, ...],            # required (may be empty)
     "concurrency": [profile, ...], # optional extension
     "activity": [record, ...]}     # optional extension: one per request (Webshare)

Row fields (FonProxy), with the default used when a field is absent:
    ts               "YYYY-MM-DD HH:MM:SS" in UTC (ISO 8601 with an offset is also
                     accepted); floored to its minute. Required.
    user_id, order_id, port                      int >= 0, default 0
    protocol, ip_out, ip_from, peer_id, worker,
    domain, error                                str (<= 255 chars), default ""
    count, bytes_sent, bytes_received,
    error_count, duration_ms                     int 0..2**53-1, default 0 (added on merge)
    max_concurrency                              int 0..2**53-1, default 0 (max on merge)
Extensions (optional):
    conn_ms          int 0..2**53-1: connection-milliseconds inside this minute (added)
    duration_max_ms  int 0..2**53-1: longest request of the row (max on merge)
    latency          [[bucket, count], ...] on the scheme of `histogram`, counts
                     0..2**53-1 (added)
Profile fields (extension, one per minute, user_id, order_id, worker):
    ts, user_id, order_id, worker    as in a row
    active           list of 60 ints 0..2**53-1: connections open during each second of the
                     minute (a delta: profiles for the same key add up)

Activity record fields (extension, one per request or connection; every field is
required, `null` where the proxy's log does not hold it; see ACTIVITY_FIELDS):
    ts_us            int >= 0: start of the request, UTC epoch MICROseconds
    protocol         "http" | "socks"
    duration_ms      int 0..2**53-1: whole request (Webshare's request_duration)
    handshake_ms, tunnel_ms       int 0..2**53-1 or null
    error            str: our error code ("" = no error; see agent.wire.errorcodes)
    auth_username, proxy_address, ip_address, hostname, domain, listen_address
                     str (<= 255 chars) or null
    client_address   str (<= 255 chars)
    port, proxy_port, listen_port int 0..65535 or null
    user_id, order_id             int >= 0
    worker           str (<= 255 chars)
    bytes_sent, bytes_received    int 0..2**53-1 (Webshare's `bytes` is their sum)
Activity records are not deltas: each is one request, appended once (the batch's
Idempotency-Key keeps a resent batch from appending them twice).

Rules: every row is a delta, merged into what is stored; unknown fields are rejected.
Ids (user_id, order_id, port) may use the whole int64 range; counters are capped at
2**53-1 (MAX_COUNTER) so that the sums a store keeps of many rows stay exact in 64-bit
integers (and in the doubles a JSON reader may use) instead of overflowing.
`ts` is at or after 1970-01-01.
`decode_body` validates the whole body before returning anything, so a caller that
stores only after it returns never stores half a body; that includes JSON nested too
deeply for the parser and strings that are not valid Unicode (lone surrogates).
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgpack

from agent.wire import histogram

CONTENT_TYPE_MSGPACK = "application/msgpack"
CONTENT_TYPE_JSON = "application/json"
MSGPACK_TYPES = (CONTENT_TYPE_MSGPACK, "application/x-msgpack", "application/vnd.msgpack")

INT_DIMENSIONS = ("user_id", "order_id", "port")
STR_DIMENSIONS = ("protocol", "ip_out", "ip_from", "peer_id", "worker", "domain", "error")
DIMENSIONS = INT_DIMENSIONS + STR_DIMENSIONS
SUM_COUNTERS = ("count", "bytes_sent", "bytes_received", "error_count", "duration_ms", "conn_ms")
MAX_COUNTERS = ("max_concurrency", "duration_max_ms")
COUNTERS = SUM_COUNTERS + MAX_COUNTERS
ROW_FIELDS = ("ts",) + DIMENSIONS + COUNTERS + ("latency",)
ACTIVITY_PROTOCOLS = ("http", "socks")
# Activity fields in Activity's positional order, by kind (see the module docstring).
ACTIVITY_FIELDS = (
    "ts_us", "protocol", "duration_ms", "handshake_ms", "tunnel_ms", "error", "auth_username",
    "proxy_address", "client_address", "ip_address", "hostname", "domain", "port", "proxy_port",
    "listen_address", "listen_port", "user_id", "order_id", "worker", "bytes_sent", "bytes_received",
)  # fmt: skip
ACTIVITY_COUNTERS = ("duration_ms", "bytes_sent", "bytes_received")
ACTIVITY_OPT_COUNTERS = ("handshake_ms", "tunnel_ms")
ACTIVITY_OPT_STRS = ("auth_username", "proxy_address", "ip_address", "hostname", "domain", "listen_address")
ACTIVITY_STRS = ("error", "client_address", "worker")
ACTIVITY_OPT_PORTS = ("port", "proxy_port", "listen_port")
ACTIVITY_IDS = ("user_id", "order_id")
MAX_PORT = 65535
PROFILE_FIELDS = ("ts", "user_id", "order_id", "worker", "active")
SECONDS_PER_MINUTE = 60
MAX_STR = 255
MAX_INT = (1 << 63) - 1
MAX_COUNTER = histogram.MAX_COUNT  # 2**53-1


class WireError(ValueError):
    """A body that is not a valid ingest batch; `path` names the field, e.g. logs[3].count."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(slots=True)
class Row:
    ts: int  # minute start, UTC epoch seconds, multiple of 60
    user_id: int = 0
    order_id: int = 0
    port: int = 0
    protocol: str = ""
    ip_out: str = ""
    ip_from: str = ""
    peer_id: str = ""
    worker: str = ""
    domain: str = ""
    error: str = ""
    count: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    error_count: int = 0
    duration_ms: int = 0
    conn_ms: int = 0
    max_concurrency: int = 0
    duration_max_ms: int = 0
    latency: histogram.Histogram = field(default_factory=dict)


@dataclass(slots=True)
class Profile:
    ts: int  # minute start, UTC epoch seconds
    user_id: int
    order_id: int
    worker: str
    active: list[int]  # SECONDS_PER_MINUTE counts


@dataclass(slots=True)
class Activity:
    """One request as Webshare's activity object needs it (see the module docstring)."""

    ts_us: int  # request start, UTC epoch microseconds
    protocol: str  # "http" | "socks"
    duration_ms: int
    handshake_ms: int | None
    tunnel_ms: int | None
    error: str  # our error code, "" when the proxy served the request
    auth_username: str | None
    proxy_address: str | None
    client_address: str
    ip_address: str | None
    hostname: str | None
    domain: str | None
    port: int | None
    proxy_port: int | None
    listen_address: str | None
    listen_port: int | None
    user_id: int
    order_id: int
    worker: str
    bytes_sent: int
    bytes_received: int


@dataclass(slots=True)
class Batch:
    # a list, or the aggregator's agent.wire.compact.RowColumns (the same rows, built
    # into Row objects only when read)
    rows: Sequence[Row] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    # a list, or the agent's agent.wire.compact.ActivityRecords (tuples, built into
    # Activity objects only when read)
    activity: Sequence[Activity] = field(default_factory=list)


def _format_ts(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# Encoding stamps every row with its minute, and a batch holds few distinct minutes:
# strftime costs more than packing the whole row, so each string is made once.
_TS_TEXT: dict[int, str] = {}
_TS_TEXT_LIMIT = 4096


def format_ts(epoch_s: int) -> str:
    text = _TS_TEXT.get(epoch_s)
    if text is None:
        text = _format_ts(epoch_s)
        if len(_TS_TEXT) >= _TS_TEXT_LIMIT:
            _TS_TEXT.clear()
        _TS_TEXT[epoch_s] = text
    return text


def parse_ts(value: object, path: str) -> int:
    """Minute start (UTC epoch seconds) of a wire timestamp."""
    if not isinstance(value, str):
        raise WireError(path, "expected a timestamp string 'YYYY-MM-DD HH:MM:SS' (UTC)")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise WireError(path, f"not a timestamp: {value[:40]!r}; expected 'YYYY-MM-DD HH:MM:SS' (UTC)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    epoch = int(dt.timestamp())
    if epoch < 0:
        raise WireError(path, f"timestamp before 1970-01-01: {value[:40]!r}")
    return epoch - epoch % SECONDS_PER_MINUTE


def _int(value: object, path: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise WireError(path, f"expected an integer >= 0, got {_show(value)}")
    return value


def _count(value: object, path: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNTER:
        raise WireError(path, f"expected an integer 0..{MAX_COUNTER} (2**53-1), got {_show(value)}")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_STR:
        raise WireError(path, f"expected a string of at most {MAX_STR} characters, got {_show(value)}")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_ROW_FIELD_SET = frozenset(ROW_FIELDS)
_PROFILE_FIELD_SET = frozenset(PROFILE_FIELDS)


def row_from_obj(obj: object, path: str) -> Row:
    if not isinstance(obj, dict):
        raise WireError(path, "expected an object")
    for key in obj:
        if key not in _ROW_FIELD_SET:
            raise WireError(f"{path}.{key}" if isinstance(key, str) else path, f"unknown field {_show(key)}")
    if "ts" not in obj:
        raise WireError(f"{path}.ts", "required field is missing")
    row = Row(parse_ts(obj["ts"], f"{path}.ts"))
    for name in INT_DIMENSIONS:
        if name in obj:
            setattr(row, name, _int(obj[name], f"{path}.{name}"))
    for name in STR_DIMENSIONS:
        if name in obj:
            setattr(row, name, _str(obj[name], f"{path}.{name}"))
    for name in COUNTERS:
        if name in obj:
            setattr(row, name, _count(obj[name], f"{path}.{name}"))
    if "latency" in obj:
        try:
            row.latency = histogram.from_wire(obj["latency"], f"{path}.latency")
        except ValueError as exc:
            where, _, msg = str(exc).partition(": ")
            raise WireError(where, msg) from None
    return row


def profile_from_obj(obj: object, path: str) -> Profile:
    if not isinstance(obj, dict):
        raise WireError(path, "expected an object")
    for key in obj:
        if key not in _PROFILE_FIELD_SET:
            raise WireError(f"{path}.{key}" if isinstance(key, str) else path, f"unknown field {_show(key)}")
    for key in PROFILE_FIELDS:
        if key not in obj:
            raise WireError(f"{path}.{key}", "required field is missing")
    active = obj["active"]
    if not isinstance(active, list) or len(active) != SECONDS_PER_MINUTE:
        raise WireError(f"{path}.active", f"expected a list of {SECONDS_PER_MINUTE} integers")
    return Profile(
        ts=parse_ts(obj["ts"], f"{path}.ts"),
        user_id=_int(obj["user_id"], f"{path}.user_id"),
        order_id=_int(obj["order_id"], f"{path}.order_id"),
        worker=_str(obj["worker"], f"{path}.worker"),
        active=[_count(v, f"{path}.active[{i}]") for i, v in enumerate(active)],
    )


_ACTIVITY_FIELD_SET = frozenset(ACTIVITY_FIELDS)


def activity_from_obj(obj: object, path: str) -> Activity:
    if not isinstance(obj, dict):
        raise WireError(path, "expected an object")
    for key in obj:
        if key not in _ACTIVITY_FIELD_SET:
            raise WireError(f"{path}.{key}" if isinstance(key, str) else path, f"unknown field {_show(key)}")
    for key in ACTIVITY_FIELDS:
        if key not in obj:
            raise WireError(f"{path}.{key}", "required field is missing (null where unknown)")
    out: dict[str, Any] = {}
    ts = obj["ts_us"]
    if type(ts) is not int or not 0 <= ts <= MAX_INT:
        raise WireError(f"{path}.ts_us", f"expected epoch microseconds (an integer >= 0), got {_show(ts)}")
    out["ts_us"] = ts
    if obj["protocol"] not in ACTIVITY_PROTOCOLS:
        raise WireError(f"{path}.protocol", f"expected one of {', '.join(ACTIVITY_PROTOCOLS)}, got {_show(obj['protocol'])}")
    out["protocol"] = obj["protocol"]
    for name in ACTIVITY_COUNTERS:
        out[name] = _count(obj[name], f"{path}.{name}")
    for name in ACTIVITY_OPT_COUNTERS:
        v = obj[name]
        out[name] = None if v is None else _count(v, f"{path}.{name}")
    for name in ACTIVITY_STRS:
        out[name] = _str(obj[name], f"{path}.{name}")
    for name in ACTIVITY_OPT_STRS:
        v = obj[name]
        out[name] = None if v is None else _str(v, f"{path}.{name}")
    for name in ACTIVITY_OPT_PORTS:
        v = obj[name]
        if v is not None and (type(v) is not int or not 0 <= v <= MAX_PORT):
            raise WireError(f"{path}.{name}", f"expected a port 0..{MAX_PORT} or null, got {_show(v)}")
        out[name] = v
    for name in ACTIVITY_IDS:
        out[name] = _int(obj[name], f"{path}.{name}")
    return Activity(**out)


def activity_to_obj(rec: Activity) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in ACTIVITY_FIELDS}


def batch_from_obj(obj: object, max_rows: int | None = None) -> Batch:
    if not isinstance(obj, dict):
        raise WireError("", "body must be an object with a 'logs' list")
    if "v" in obj:  # version 2, columns (agent.wire.compact); version 1 has no "v"
        from agent.wire.compact import batch_from_columns

        return batch_from_columns(obj, max_rows)
    for key in obj:
        if key not in ("logs", "concurrency", "activity"):
            raise WireError(str(key), "unknown top-level field (expected 'logs' and optionally 'concurrency', 'activity')")
    logs = obj.get("logs")
    if not isinstance(logs, list):
        raise WireError("logs", "required list is missing" if logs is None else "expected a list of rows")
    profiles = obj.get("concurrency", [])
    if not isinstance(profiles, list):
        raise WireError("concurrency", "expected a list of profiles")
    activity = obj.get("activity", [])
    if not isinstance(activity, list):
        raise WireError("activity", "expected a list of activity records")
    if max_rows is not None and len(logs) + len(profiles) + len(activity) > max_rows:
        raise WireError("logs", f"too many rows: {len(logs) + len(profiles) + len(activity)} > limit {max_rows}")
    return Batch(
        rows=[row_from_obj(r, f"logs[{i}]") for i, r in enumerate(logs)],
        profiles=[profile_from_obj(p, f"concurrency[{i}]") for i, p in enumerate(profiles)],
        activity=[activity_from_obj(a, f"activity[{i}]") for i, a in enumerate(activity)],
    )


def decode_body(body: bytes, content_type: str, max_rows: int | None = None) -> Batch:
    """Parse and validate a whole ingest body; raise WireError on the first problem."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype in MSGPACK_TYPES:
        try:
            obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise WireError("", f"body is not valid msgpack: {exc}") from None
    elif ctype == CONTENT_TYPE_JSON or ctype == "":
        try:
            obj = json.loads(body)
        except RecursionError:
            raise WireError("", "body is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise WireError("", f"body is not valid JSON: {exc}") from None
    else:
        raise WireError("", f"unsupported Content-Type {ctype!r}; use {CONTENT_TYPE_MSGPACK} or {CONTENT_TYPE_JSON}")
    batch = batch_from_obj(obj, max_rows)
    if ctype not in MSGPACK_TYPES and may_hold_surrogates(body):
        path = first_unencodable(batch)
        if path is not None:
            raise WireError(path, "not valid Unicode text (a lone UTF-16 surrogate)")
    return batch


# JSON lets a body carry lone UTF-16 surrogates ("\ud800", or the bytes ED A0 80, which
# the json module decodes with "surrogatepass"): such a string cannot be encoded as
# UTF-8, so no store can write it. msgpack strings are decoded as strict UTF-8 and never
# hold one. A body holds one only if its bytes hold one of the two spellings, so the
# per-string scan runs only when this C-speed search finds one (rare false positives,
# such as an escaped backslash before "ud800", only cost the scan).
_SURROGATE_SPELLINGS = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def may_hold_surrogates(body: bytes) -> bool:
    return _SURROGATE_SPELLINGS.search(body) is not None


def _unencodable(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def first_unencodable(batch: Batch) -> str | None:
    """Path of the first string field that is not valid Unicode text, e.g. logs[3].domain."""
    for i, row in enumerate(batch.rows):
        for name in STR_DIMENSIONS:
            if _unencodable(getattr(row, name)):
                return f"logs[{i}].{name}"
    for i, profile in enumerate(batch.profiles):
        if _unencodable(profile.worker):
            return f"concurrency[{i}].worker"
    for i, rec in enumerate(batch.activity):
        for name in ACTIVITY_STRS + ACTIVITY_OPT_STRS:
            value = getattr(rec, name)
            if value is not None and _unencodable(value):
                return f"activity[{i}].{name}"
    return None


# Encoding is on the agent's hot path (about one row per log line). A dict display with
# constant keys is built by one opcode, far faster than any loop over the field names;
# its key order is ROW_FIELDS' order (checked at import), so the bytes are the same as
# those of a field-by-field construction.
_ROW_KEYS = ("ts",) + DIMENSIONS + COUNTERS
_hist_to_wire = histogram.to_wire


def _row_obj(row: Row, ts: str) -> dict[str, Any]:
    return {
        "ts": ts,
        "user_id": row.user_id,
        "order_id": row.order_id,
        "port": row.port,
        "protocol": row.protocol,
        "ip_out": row.ip_out,
        "ip_from": row.ip_from,
        "peer_id": row.peer_id,
        "worker": row.worker,
        "domain": row.domain,
        "error": row.error,
        "count": row.count,
        "bytes_sent": row.bytes_sent,
        "bytes_received": row.bytes_received,
        "error_count": row.error_count,
        "duration_ms": row.duration_ms,
        "conn_ms": row.conn_ms,
        "max_concurrency": row.max_concurrency,
        "duration_max_ms": row.duration_max_ms,
    }


if tuple(_row_obj(Row(0), "")) != _ROW_KEYS:
    raise ImportError("agent.wire.batch._row_obj does not list the row fields in ROW_FIELDS order")


def row_to_obj(row: Row) -> dict[str, Any]:
    obj = _row_obj(row, format_ts(row.ts))
    if row.latency:
        obj["latency"] = _hist_to_wire(row.latency)
    return obj


def profile_to_obj(profile: Profile) -> dict[str, Any]:
    return {
        "ts": format_ts(profile.ts),
        "user_id": profile.user_id,
        "order_id": profile.order_id,
        "worker": profile.worker,
        "active": list(profile.active),
    }


def _emit_row_objs(rows: list[Row], emit: Callable[[dict[str, Any]], object]) -> None:
    """Call `emit` with each row's wire object, in order."""
    hist_to_wire = _hist_to_wire
    ts_text = _TS_TEXT
    for row in rows:
        # _row_obj inlined: a call per row is a measurable share of encoding
        obj = {
            "ts": ts_text.get(row.ts) or format_ts(row.ts),
            "user_id": row.user_id,
            "order_id": row.order_id,
            "port": row.port,
            "protocol": row.protocol,
            "ip_out": row.ip_out,
            "ip_from": row.ip_from,
            "peer_id": row.peer_id,
            "worker": row.worker,
            "domain": row.domain,
            "error": row.error,
            "count": row.count,
            "bytes_sent": row.bytes_sent,
            "bytes_received": row.bytes_received,
            "error_count": row.error_count,
            "duration_ms": row.duration_ms,
            "conn_ms": row.conn_ms,
            "max_concurrency": row.max_concurrency,
            "duration_max_ms": row.duration_max_ms,
        }
        latency = row.latency
        if latency:
            if len(latency) == 1:  # most rows hold one request
                ((bucket, n),) = latency.items()
                obj["latency"] = [[bucket, n]] if n else []
            else:
                obj["latency"] = hist_to_wire(latency)
        emit(obj)


def _rows_to_objs(rows: list[Row]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    _emit_row_objs(rows, out.append)
    return out


def batch_to_obj(batch: Batch) -> dict[str, Any]:
    obj: dict[str, Any] = {"logs": _rows_to_objs(batch.rows)}
    if batch.profiles:
        obj["concurrency"] = [profile_to_obj(p) for p in batch.profiles]
    if batch.activity:
        obj["activity"] = [activity_to_obj(a) for a in batch.activity]
    return obj


def _without_gc(build: Callable[[Batch], bytes]) -> Callable[[Batch], bytes]:
    """Run an encoder with the cyclic garbage collector paused.

    Encoding makes a few containers per row (a dict, the latency lists) that all live
    until the batch is packed, none in a cycle: left on, the collector would run every
    few hundred rows and walk them all again each time (about a quarter of the encoding
    time on a large batch). Reference counting frees them right after, as always."""

    def encode(batch: Batch) -> bytes:
        if not gc.isenabled():
            return build(batch)
        gc.disable()
        try:
            return build(batch)
        finally:
            gc.enable()

    encode.__doc__ = build.__doc__
    encode.__name__ = build.__name__
    return encode


@_without_gc
def encode_msgpack(batch: Batch) -> bytes:
    # The bytes of packb(batch_to_obj(batch)), packed row by row into one buffer: no
    # list of every row's dict is ever held (a 10,000-row batch would hold ~12 MB of
    # them), and each dict is freed while still in the CPU cache.
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    pack = packer.pack
    packer.pack_map_header(1 + bool(batch.profiles) + bool(batch.activity))
    pack("logs")
    packer.pack_array_header(len(batch.rows))
    _emit_row_objs(batch.rows, pack)
    if batch.profiles:
        pack("concurrency")
        pack([profile_to_obj(p) for p in batch.profiles])
    if batch.activity:
        pack("activity")
        packer.pack_array_header(len(batch.activity))
        for rec in batch.activity:
            pack(activity_to_obj(rec))
    return packer.bytes()


@_without_gc
def encode_json(batch: Batch) -> bytes:
    return json.dumps(batch_to_obj(batch), separators=(",", ":")).encode()
