"""Version 2 bodies reach the SQLite store as columns (collector.fastdecode.ColumnRows) and
are staged from them without Row objects: every table must end up exactly as the same
rows sent as version 1 bodies (Row objects) leave it, staged and folded."""

from __future__ import annotations

import random
from pathlib import Path

import msgpack
import pytest

from agent.wire.batch import Batch, Profile, Row, WireError, decode_body, encode_msgpack
from agent.wire.compact import encode_compact
from collector.fastdecode import ColumnRows, decode
from collector.storage.sqlite import SQLiteStore, hist_unpack
from tests.collector.conftest import sqlite_dump as raw_dump

T0 = 1773532800  # 2026-03-15 00:00:00 UTC
MSGPACK = "application/msgpack"


def rand_batch(rnd: random.Random, n: int, pairs: tuple[int, ...], tag: int) -> Batch:
    rows = []
    for _ in range(n):
        k = rnd.choice(pairs)
        buckets = sorted(rnd.sample(range(0, 200), k))
        rows.append(Row(
            ts=T0 + rnd.randrange(3 * 60) * 60,
            user_id=rnd.choice([1, 2, 3]), order_id=rnd.choice([1, 2]), port=rnd.choice([80, 443, 0]),
            protocol=rnd.choice(["HTTP", "HTTPS", ""]), ip_out=rnd.choice(["198.51.100.7", "198.51.100.8"]),
            ip_from=f"10.0.0.{rnd.randrange(4)}", peer_id=rnd.choice(["", "p1"]),
            worker=rnd.choice(["w1", f"w-{tag}"]),
            domain=rnd.choice(["a.com", "b.com", f"new{tag}.com", f"n{tag % 3}.org", ""]),
            error=rnd.choice(["", "", "timeout", f"err-{tag}"]),
            count=rnd.randrange(1, 9), bytes_sent=rnd.randrange(1000), bytes_received=rnd.randrange(10**6),
            error_count=rnd.randrange(3), duration_ms=rnd.randrange(5000), conn_ms=rnd.randrange(60000),
            max_concurrency=rnd.randrange(30), duration_max_ms=rnd.randrange(5000),
            latency={b: rnd.randrange(0, 5) for b in buckets},  # zero counts are sent too
        ))  # fmt: skip
    profiles = [Profile(T0 + 60 * i, 1, 2, "w1", [rnd.randrange(4) for _ in range(60)]) for i in range(2)]
    return Batch(rows=rows, profiles=profiles)


def sqlite_dump(db: Path) -> list[tuple[object, ...]]:
    """Every table's rows, a stored histogram (a msgpack stream whose concatenation order
    depends on how rows were grouped into folds) as its sum."""

    def cell(table: object, v: object) -> object:
        if isinstance(v, bytes) and not str(table).startswith("conc"):  # conc_*: packed seconds
            return ("hist", sorted(hist_unpack(v).items()))
        return v

    return sorted((tuple(cell(t[0], v) for v in t) for t in raw_dump(db)), key=repr)


# one pair per row (the decoder's short cut), none at all, and mixed
SHAPES = [(1,), (0,), (0, 1, 3, 20)]


@pytest.mark.parametrize("fold_rows", [1, 10**9])  # folded each drain / staged until close
@pytest.mark.parametrize("touch", [False, True])  # columns bound as they are / Rows read first
async def test_v2_columns_store_what_v1_rows_store(tmp_path: Path, fold_rows: int, touch: bool) -> None:
    rnd = random.Random(11)
    batches = [rand_batch(rnd, rnd.randrange(1, 120), SHAPES[i % len(SHAPES)], i) for i in range(9)]
    stores = {v: SQLiteStore(tmp_path / f"{v}.db", fold_rows=fold_rows, fold_interval=0) for v in ("v1", "v2")}
    for s in stores.values():
        await s.open()
    dumps = {}
    try:
        for i, b in enumerate(batches):
            v1 = decode(encode_msgpack(b), MSGPACK)
            v2 = decode(encode_compact(b), MSGPACK)
            assert isinstance(v2.rows, ColumnRows) and v2.rows.untouched
            assert v2 == v1 == decode_body(encode_compact(b), MSGPACK)  # reads the rows
            if not touch:
                v2 = decode(encode_compact(b), MSGPACK)
            assert v2.rows.untouched is not touch
            assert await stores["v1"].ingest(v1, f"k{i}", T0)
            assert await stores["v2"].ingest(v2, f"k{i}", T0)
            assert not await stores["v2"].ingest(decode(encode_compact(b), MSGPACK), f"k{i}", T0)  # a duplicate
        for s in stores.values():
            if fold_rows == 1:
                await s._fold_staged()  # noqa: SLF001 - the background folds, finished
        dumps = {v: sqlite_dump(tmp_path / f"{v}.db") for v in stores}
        assert any(t[0] == "stage" for t in dumps["v1"]) is (fold_rows > 1)
    finally:
        for s in stores.values():
            await s.close()
    assert dumps["v2"] == dumps["v1"]  # staged (or folded each drain)
    assert sqlite_dump(tmp_path / "v2.db") == sqlite_dump(tmp_path / "v1.db")  # folded at close


def test_v2_buckets_must_increase_within_a_row() -> None:
    b = Batch(rows=[Row(ts=T0, count=1, latency={3: 1, 9: 2}), Row(ts=T0, count=1, latency={4: 1, 5: 1})])
    obj = msgpack.unpackb(encode_compact(b), strict_map_key=False)
    assert decode(msgpack.packb(obj), MSGPACK) == b
    for buckets in ([3, 9, 5, 4], [3, 3, 4, 5], [9, 3, 4, 5]):  # decreasing / repeated in a row
        obj["logs"]["latency_bucket"] = buckets
        body = msgpack.packb(obj)
        with pytest.raises(WireError) as want:
            decode_body(body, MSGPACK)
        with pytest.raises(WireError) as got:
            decode(body, MSGPACK)
        assert (got.value.path, got.value.message) == (want.value.path, want.value.message)
    obj["logs"]["latency_bucket"] = [3, 9, 2, 5]  # a row may start below the last one's end
    assert decode(msgpack.packb(obj), MSGPACK).rows[1].latency == {2: 1, 5: 1}
