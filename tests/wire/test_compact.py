"""Body version 2 (columns + string table) against version 1 (the row shape).

The oracle is version 1: decoding a batch's version 2 body must give exactly the Batch
that decoding its version 1 body gives (the collector stores either the same way). Bad
version 2 bodies must raise a WireError whose path names the bad value; the collector's
fast decoder must answer exactly what the reference answers, for good and bad bodies.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import msgpack
import pytest

from agent.wire.batch import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_MSGPACK,
    Activity,
    Batch,
    Profile,
    Row,
    WireError,
    activity_to_obj,
    decode_body,
    encode_json,
    encode_msgpack,
)
from agent.wire.compact import MAX_MINUTE, RowColumns, batch_to_columns, encode_compact
from collector.fastdecode import decode
from test_encode_bytes import random_batch


def random_activity(rng: random.Random, n: int) -> list[Activity]:
    def opt(value: Any) -> Any:
        return None if rng.random() < 0.3 else value

    return [
        Activity(
            ts_us=1_773_569_700_000_000 + rng.randrange(10**9), protocol=rng.choice(("http", "socks")),
            duration_ms=rng.randrange(10**6), handshake_ms=opt(rng.randrange(500)), tunnel_ms=opt(rng.randrange(10**5)),
            error=rng.choice(("", "timeout")), auth_username=opt(rng.choice(("user-1-order-2", "b\u00fcro"))),
            proxy_address=opt("192.0.2.7"), client_address=rng.choice(("10.0.0.1", "2001:db8::1")),
            ip_address=opt("198.51.100.4"), hostname=opt(rng.choice(("www.example.com", "x.org"))),
            domain=opt("example.com"), port=opt(rng.choice((0, 443, 65535))), proxy_port=opt(3128),
            listen_address=opt("0.0.0.0"), listen_port=opt(8080), user_id=rng.randrange(10**6),
            order_id=rng.randrange(50), worker="w1", bytes_sent=rng.randrange(2**40), bytes_received=rng.randrange(2**53),
        )
        for _ in range(n)
    ]  # fmt: skip


def v1_with_activity(batch: Batch) -> bytes:
    obj = msgpack.unpackb(encode_msgpack(Batch(rows=batch.rows, profiles=batch.profiles)), raw=False)
    if batch.activity:
        obj["activity"] = [activity_to_obj(a) for a in batch.activity]
    return msgpack.packb(obj, use_bin_type=True)


def outcome(decoder: Any, body: bytes, ctype: str = CONTENT_TYPE_MSGPACK, max_rows: int | None = None) -> Any:
    try:
        return "ok", decoder(body, ctype, max_rows)
    except WireError as exc:
        return "error", (exc.path, exc.message)


SIZES = ((0, 0, 0), (1, 0, 0), (0, 2, 0), (0, 0, 3), (300, 20, 0), (2000, 7, 40))


@pytest.mark.parametrize("seed", range(4))
def test_version_2_decodes_to_the_batch_version_1_decodes_to(seed: int) -> None:
    rng = random.Random(seed)
    for n_rows, n_profiles, n_activity in SIZES:
        batch = random_batch(rng, n_rows, n_profiles)
        batch.activity = random_activity(rng, n_activity)
        want = decode_body(v1_with_activity(batch), CONTENT_TYPE_MSGPACK)
        body = encode_compact(batch)
        assert decode_body(body, CONTENT_TYPE_MSGPACK) == want
        assert decode(body, CONTENT_TYPE_MSGPACK) == want
        as_json = json.dumps(batch_to_columns(batch)).encode()
        assert decode_body(as_json, CONTENT_TYPE_JSON) == want
        assert decode(as_json, CONTENT_TYPE_JSON) == want


def test_version_1_stays_accepted_and_version_2_is_smaller() -> None:
    batch = random_batch(random.Random(5), 500, 10)
    v1 = encode_msgpack(batch)
    assert decode(v1, CONTENT_TYPE_MSGPACK) == decode_body(encode_json(batch), CONTENT_TYPE_JSON)
    assert len(encode_compact(batch)) * 3 < len(v1)


def test_edges_of_the_ranges() -> None:
    big = 2**53 - 1
    rows = [Row(0, user_id=2**63 - 1, count=big, duration_max_ms=big, latency={0: big, 512: 0, 7: 1}),
            Row(MAX_MINUTE * 60 + 59, domain="x" * 255)]
    batch = Batch(rows=rows, profiles=[Profile(MAX_MINUTE * 60, 0, 2**63 - 1, "", [big] * 60)])
    want = decode_body(encode_msgpack(batch), CONTENT_TYPE_MSGPACK)
    assert want.rows[0].latency == {0: big, 7: 1}
    assert decode_body(encode_compact(batch), CONTENT_TYPE_MSGPACK) == want
    assert decode(encode_compact(batch), CONTENT_TYPE_MSGPACK) == want


def good_obj() -> dict[str, Any]:
    rng = random.Random(9)
    batch = random_batch(rng, 20, 3)
    for row in batch.rows:
        row.latency = {1: 1}
    batch.rows[4].latency = {3: 1, 9: 2}  # pairs 4 and 5 of the flattened columns
    batch.activity = random_activity(rng, 4)
    return batch_to_columns(batch)


def broken(change: Any) -> dict[str, Any]:
    obj = copy.deepcopy(good_obj())
    change(obj)
    return obj


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(obj: dict[str, Any]) -> None:
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


BAD: list[tuple[Any, str]] = [
    (_set(("v",), 3), "v"),
    (_set(("v",), True), "v"),
    (_set(("extra",), 1), "extra"),
    (_set(("strings",), "abc"), "strings"),
    (_set(("strings", 2), "x" * 256), "strings[2]"),
    (_set(("strings", 0), 5), "strings[0]"),
    (_set(("t0",), -1), "t0"),
    (_set(("t0",), MAX_MINUTE + 1), "t0"),
    (lambda o: o.pop("logs"), "logs"),
    (lambda o: o["logs"].pop("count"), "logs.count"),
    (_set(("logs", "colour"), []), "logs.colour"),
    (_set(("logs", "domain"), 7), "logs.domain"),
    (lambda o: o["logs"]["bytes_sent"].pop(), "logs.bytes_sent"),
    (_set(("logs", "count", 5), -1), "logs[5].count"),
    (_set(("logs", "bytes_received", 3), 2**53), "logs[3].bytes_received"),
    (_set(("logs", "user_id", 2), True), "logs[2].user_id"),
    (_set(("logs", "port", 1), 1.5), "logs[1].port"),
    (_set(("logs", "domain", 6), 10**6), "logs[6].domain"),
    (_set(("logs", "error", 0), None), "logs[0].error"),
    (_set(("logs", "ts", 8), "2026-03-15 10:00:00"), "logs[8].ts"),
    (_set(("logs", "ts", 8), MAX_MINUTE + 1), "logs[8].ts"),
    (_set(("logs", "latency", 4), 600), "logs[4].latency"),
    (lambda o: o["logs"]["latency_bucket"].append(1), "logs.latency_bucket"),
    (_set(("logs", "latency_bucket", 5), 3), "logs[4].latency[1]"),  # not increasing
    (_set(("logs", "latency_count", 0), 2**53), "logs[0].latency[0]"),
    (_set(("concurrency", "active", 61), -1), "concurrency[1].active[1]"),
    (lambda o: o["concurrency"]["active"].pop(), "concurrency.active"),
    (_set(("concurrency", "worker", 2), -1), "concurrency[2].worker"),
    (_set(("activity", "protocol", 1), 0), "activity[1].protocol"),
    (_set(("activity", "client_address", 2), None), "activity[2].client_address"),
    (_set(("activity", "port", 3), 65536), "activity[3].port"),
    (_set(("activity", "ts_us", 0), -5), "activity[0].ts_us"),
    (lambda o: o["activity"].pop("worker"), "activity.worker"),
]


@pytest.mark.parametrize(("change", "path"), BAD)
def test_bad_version_2_bodies_name_the_field(change: Any, path: str) -> None:
    obj = broken(change)
    for body, ctype in ((msgpack.packb(obj, use_bin_type=True), CONTENT_TYPE_MSGPACK),
                        (json.dumps(obj).encode(), CONTENT_TYPE_JSON)):
        ref = outcome(decode_body, body, ctype)
        assert ref[0] == "error" and ref[1][0] == path, ref
        assert outcome(decode, body, ctype) == ref


def test_row_limit_counts_every_section() -> None:
    body = msgpack.packb(good_obj(), use_bin_type=True)
    for limit in (26, 27):
        ref = outcome(decode_body, body, max_rows=limit)
        assert ref[0] == ("ok" if limit == 27 else "error")
        assert outcome(decode, body, max_rows=limit) == ref


def test_lone_surrogates_in_the_string_table_are_named() -> None:
    obj = good_obj()
    domain = obj["logs"]["domain"][3]
    obj["strings"][domain] = "a\ud800"
    body = json.dumps(obj).encode()
    ref = outcome(decode_body, body, CONTENT_TYPE_JSON)
    assert ref[0] == "error" and ref[1][1] == "not valid Unicode text (a lone UTF-16 surrogate)"
    assert outcome(decode, body, CONTENT_TYPE_JSON) == ref


def as_row_columns(rows: list[Row]) -> RowColumns:
    values = [(r.ts, r.user_id, r.order_id, r.port, r.protocol, r.ip_out, r.ip_from, r.peer_id, r.worker, r.domain,
               r.error, r.count, r.bytes_sent, r.bytes_received, r.error_count, r.duration_ms, r.conn_ms,
               r.max_concurrency, r.duration_max_ms) for r in rows]  # fmt: skip
    ns, buckets, counts = [], [], []
    for r in rows:
        pairs = [(b, c) for b, c in sorted(r.latency.items()) if c]
        ns.append(len(pairs))
        buckets += [b for b, _ in pairs]
        counts += [c for _, c in pairs]
    out = RowColumns()
    out.extend(list(zip(*values)) if values else [[] for _ in out.columns])
    out.latency, out.latency_bucket, out.latency_count = ns, buckets, counts
    return out


def test_row_columns_encode_as_their_rows_and_a_changed_row_is_sent() -> None:
    batch = random_batch(random.Random(11), 400, 5)
    want = decode_body(encode_msgpack(batch), CONTENT_TYPE_MSGPACK)
    columns = Batch(rows=as_row_columns(want.rows), profiles=batch.profiles)
    assert decode_body(encode_compact(columns), CONTENT_TYPE_MSGPACK) == want  # straight from the columns
    assert columns.rows == want.rows and len(columns.rows) == 400 and columns.rows[3] == want.rows[3]
    columns.rows[3].count += 1  # read, then changed: the Row objects are the truth now
    got = decode_body(encode_compact(columns), CONTENT_TYPE_MSGPACK)
    assert got.rows[3].count == want.rows[3].count + 1 and got.rows[4:] == want.rows[4:]


def test_the_collector_reads_valid_version_2_bodies_without_the_reference() -> None:
    # the fast decoder's own checks accept the agents' bodies (activity included); the
    # reference is only asked about bodies that break a rule
    import collector.fastdecode as fast

    obj = good_obj()
    assert fast._fast(msgpack.unpackb(msgpack.packb(obj), raw=False, strict_map_key=False), None) == decode_body(
        msgpack.packb(obj), CONTENT_TYPE_MSGPACK)
