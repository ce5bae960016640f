"""collector.fastdecode answers exactly what the reference decode_body answers.

The oracle is agent.wire.batch.decode_body itself: for every body (valid ones of several
shapes, and bodies broken in one field each) both decoders must return equal Batches or
raise WireErrors with the same path and message.
"""

from __future__ import annotations

import copy
import gc
import json
import random
from typing import Any

import msgpack
import pytest

from agent.wire.batch import CONTENT_TYPE_JSON, CONTENT_TYPE_MSGPACK, Batch, WireError, decode_body
from collector.fastdecode import decode


def agent_row(rnd: random.Random, minute: int) -> dict[str, Any]:
    count = 1 + rnd.randrange(40)
    row: dict[str, Any] = {
        "ts": f"2026-03-15 10:{minute:02d}:{rnd.randrange(60):02d}",
        "user_id": rnd.randrange(1000), "order_id": rnd.randrange(50), "port": rnd.choice([80, 443, 3128]),
        "protocol": rnd.choice(["HTTP", "HTTPS"]), "ip_out": "198.51.100.7", "ip_from": f"10.0.0.{rnd.randrange(250)}",
        "peer_id": "", "worker": f"w{rnd.randrange(3)}", "domain": f"site{rnd.randrange(99)}.com",
        "error": rnd.choice(["", "", "timeout"]), "count": count, "bytes_sent": count * 700,
        "bytes_received": rnd.randrange(10**9), "error_count": rnd.randrange(3), "duration_ms": rnd.randrange(10**6),
        "conn_ms": rnd.randrange(60000), "max_concurrency": rnd.randrange(30), "duration_max_ms": rnd.randrange(9000),
    }  # fmt: skip
    if rnd.random() < 0.8:
        row["latency"] = [[b, 1 + rnd.randrange(9)] for b in sorted(rnd.sample(range(0, 120), rnd.randrange(1, 5)))]
    return row


def body_obj(seed: int, n: int = 50) -> dict[str, Any]:
    rnd = random.Random(seed)
    return {"logs": [agent_row(rnd, k % 60) for k in range(n)]}


def outcome(body: bytes, ctype: str, max_rows: int | None = None) -> tuple[str, object]:
    try:
        return "ok", decode_body(body, ctype, max_rows)
    except WireError as exc:
        return "error", (exc.path, exc.message)


def fast_outcome(body: bytes, ctype: str, max_rows: int | None = None) -> tuple[str, object]:
    try:
        return "ok", decode(body, ctype, max_rows)
    except WireError as exc:
        return "error", (exc.path, exc.message)


def encodings(obj: Any) -> list[tuple[bytes, str]]:
    return [
        (msgpack.packb(obj, use_bin_type=True), CONTENT_TYPE_MSGPACK),
        (json.dumps(obj).encode(), CONTENT_TYPE_JSON),
    ]


@pytest.mark.parametrize("seed", range(5))
def test_valid_agent_bodies_decode_identically(seed: int) -> None:
    obj = body_obj(seed)
    for body, ctype in encodings(obj):
        expected = decode_body(body, ctype)
        got = decode(body, ctype)
        assert isinstance(got, Batch) and got == expected
        assert len(got.rows) == 50


def test_other_shapes_fall_back_to_the_same_answer() -> None:
    base = body_obj(7, 6)
    partial = copy.deepcopy(base)
    del partial["logs"][2]["conn_ms"]  # a FonProxy-shaped row without our extensions
    repeated = copy.deepcopy(base)
    repeated["logs"][1]["latency"] = [[5, 1], [5, 2]]  # a repeated bucket adds up
    with_profiles = copy.deepcopy(base)
    with_profiles["concurrency"] = [
        {"ts": "2026-03-15 10:00:00", "user_id": 1, "order_id": 2, "worker": "w", "active": list(range(60))}
    ]
    offsets = copy.deepcopy(base)
    offsets["logs"][0]["ts"] = "2026-03-15T12:00:30+02:00"
    empty = {"logs": []}
    for obj in (partial, repeated, with_profiles, offsets, empty):
        for body, ctype in encodings(obj):
            assert fast_outcome(body, ctype) == outcome(body, ctype)
            assert fast_outcome(body, ctype)[0] == "ok"
    got = decode(json.dumps(repeated).encode(), CONTENT_TYPE_JSON)
    assert got.rows[1].latency == {5: 3}


BREAKAGES: list[tuple[str, Any]] = [
    ("user_id", -1), ("order_id", True), ("port", 1.5), ("count", 1 << 63), ("bytes_sent", "12"),
    ("conn_ms", None), ("duration_max_ms", -5), ("domain", 12), ("worker", "x" * 256), ("error", None),
    ("ts", "yesterday"), ("ts", 1773569700), ("latency", [[1, 2, 3]]), ("latency", [[-1, 2]]),
    ("latency", [[513, 1]]), ("latency", [[1, -2]]), ("latency", [[1, True]]), ("latency", {"1": 2}),
    ("latency", [["a", 1]]), ("latency", [[1.0, 1]]), ("unknown_field", 1),
    ("bytes_received", 1 << 53), ("max_concurrency", 1 << 53), ("latency", [[3, 1 << 53]]),
    ("ts", "1969-12-31 23:59:00"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), BREAKAGES)
def test_broken_field_gives_the_reference_error(field: str, value: Any) -> None:
    obj = body_obj(3, 20)
    obj["logs"][13][field] = value
    for body, ctype in encodings(obj):
        ref = outcome(body, ctype)
        assert ref[0] == "error", (field, value)
        assert fast_outcome(body, ctype) == ref


def test_broken_bodies_give_the_reference_error() -> None:
    good = body_obj(4, 5)
    cases: list[tuple[bytes, str, int | None]] = [
        (b"\xc1", CONTENT_TYPE_MSGPACK, None),
        (b"{not json", CONTENT_TYPE_JSON, None),
        (json.dumps(good).encode(), "text/plain", None),
        (json.dumps({"logs": {}}).encode(), CONTENT_TYPE_JSON, None),
        (json.dumps({"rows": []}).encode(), CONTENT_TYPE_JSON, None),
        (json.dumps([1, 2]).encode(), CONTENT_TYPE_JSON, None),
        (json.dumps({"logs": [1]}).encode(), CONTENT_TYPE_JSON, None),
        (json.dumps(good).encode(), CONTENT_TYPE_JSON, 4),
        (json.dumps({"logs": [], "concurrency": [{"ts": "2026-03-15 10:00:00"}]}).encode(), CONTENT_TYPE_JSON, None),
    ]
    for body, ctype, limit in cases:
        ref = outcome(body, ctype, limit)
        assert ref[0] == "error"
        assert fast_outcome(body, ctype, limit) == ref


def test_gc_is_enabled_again_after_decoding() -> None:
    body, ctype = encodings(body_obj(1, 3))[0]
    assert gc.isenabled()
    decode(body, ctype)
    with pytest.raises(WireError):
        decode(b"\xc1", CONTENT_TYPE_MSGPACK)
    assert gc.isenabled()


def test_lone_surrogates_and_deep_nesting_give_the_reference_error() -> None:
    obj = body_obj(4, 20)
    obj["logs"][7]["ip_from"] = "10.0.0.\ud800"
    body = json.dumps(obj).encode()  # ensure_ascii: written as the escape \ud800
    assert fast_outcome(body, CONTENT_TYPE_JSON) == outcome(body, CONTENT_TYPE_JSON) == (
        "error", ("logs[7].ip_from", "not valid Unicode text (a lone UTF-16 surrogate)"))
    deep = b'{"logs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert fast_outcome(deep, CONTENT_TYPE_JSON) == outcome(deep, CONTENT_TYPE_JSON) == (
        "error", ("", "body is nested too deeply"))
