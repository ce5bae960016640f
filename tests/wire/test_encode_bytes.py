"""Encoding against a field-by-field reference built here: the exact same bytes.

The encoder takes shortcuts (memoised minute strings, dict displays, a one-bucket
histogram fast path); the reference below is the plain reading of the format in
agent.wire.batch's docstring, so any drift in key order, values or defaults shows up
as different bytes, in msgpack and in JSON.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import msgpack

from agent.wire.batch import (
    COUNTERS,
    DIMENSIONS,
    Batch,
    Profile,
    Row,
    encode_json,
    encode_msgpack,
)


def reference_obj(batch: Batch) -> dict:
    def ts(epoch_s: int) -> str:
        return datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    logs = []
    for row in batch.rows:
        obj = {"ts": ts(row.ts)}
        for name in DIMENSIONS + COUNTERS:
            obj[name] = getattr(row, name)
        if row.latency:
            obj["latency"] = [[k, v] for k, v in sorted(row.latency.items()) if v]
        logs.append(obj)
    out: dict = {"logs": logs}
    if batch.profiles:
        out["concurrency"] = [
            {"ts": ts(p.ts), "user_id": p.user_id, "order_id": p.order_id, "worker": p.worker, "active": list(p.active)}
            for p in batch.profiles
        ]
    return out


def random_batch(rng: random.Random, n_rows: int, n_profiles: int) -> Batch:
    minutes = [1_773_569_700 + 60 * rng.randrange(-5000, 5000) for _ in range(7)]
    latencies = [{}, {0: 1}, {41: 3}, {7: 0}, {3: 2, 0: 1, 7: 0}, {90: 1, 12: 4, 500: 2}]
    rows = []
    for _ in range(n_rows):
        rows.append(Row(
            rng.choice(minutes), rng.randrange(10**6), rng.randrange(50), rng.choice((0, 80, 443, 65535)),
            rng.choice(("HTTP", "HTTPS", "SOCKS", "")), rng.choice(("", "192.0.2.1")),
            rng.choice(("10.0.0.1", "2001:db8::1", "")), rng.choice(("", "peer-\u00e9")),
            rng.choice(("w1", "")), rng.choice(("example.com", "b\u00fccher.de", "")),
            rng.choice(("", "timeout", "unknown:X/1")),
            *(rng.randrange(2**40) for _ in COUNTERS), dict(rng.choice(latencies)),
        ))  # fmt: skip
    profiles = [Profile(rng.choice(minutes), rng.randrange(100), rng.randrange(5), "w1",
                        [rng.randrange(4) for _ in range(60)]) for _ in range(n_profiles)]
    return Batch(rows=rows, profiles=profiles)


def test_msgpack_and_json_bytes_equal_the_reference() -> None:
    rng = random.Random(12)
    for n_rows, n_profiles in ((0, 0), (1, 0), (0, 2), (300, 20), (2000, 0)):
        batch = random_batch(rng, n_rows, n_profiles)
        want = reference_obj(batch)
        assert encode_msgpack(batch) == msgpack.packb(want, use_bin_type=True)
        assert encode_json(batch) == json.dumps(want, separators=(",", ":")).encode()


def test_minutes_far_apart_still_get_their_own_strings() -> None:
    # more distinct minutes than the encoder memoises: each row keeps its own time
    rows = [Row(60 * m, count=1) for m in range(0, 10_000 * 7, 7)]
    got = msgpack.unpackb(encode_msgpack(Batch(rows=rows)))["logs"]
    assert [r["ts"] for r in got] == [
        datetime.fromtimestamp(60 * m, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") for m in range(0, 10_000 * 7, 7)
    ]


def test_encoding_leaves_the_garbage_collector_as_it_found_it() -> None:
    import gc

    import pytest

    batch = Batch(rows=[Row(60, count=1)])
    was = gc.isenabled()
    try:
        gc.enable()
        encode_msgpack(batch)
        assert gc.isenabled()
        gc.disable()
        encode_json(batch)
        assert not gc.isenabled()
        gc.enable()
        with pytest.raises(TypeError):  # an unencodable value: the collector is back on
            encode_msgpack(Batch(rows=[Row(60, domain=object())]))  # type: ignore[arg-type]
        assert gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
