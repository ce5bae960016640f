"""The ClickHouse backend's own parts: literals (pure, then round-tripped through the real
server with hostile strings), identifiers, and hostile strings through the API (which
runs on both backends)."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC
from typing import Any

import pytest

from collector.storage.clickhouse import schema
from collector.storage.clickhouse.sqltext import ident, literal, literals
from tests.collector.conftest import Api
from tests.fixtures.clickhouse import ClickHouseServer

HOSTILE = [
    "",
    "'",
    "\\",
    "\\'",
    "'; DROP DATABASE default; --",
    "a' OR '1'='1",
    "\\x27",
    "\x00nul\x00",
    "tab\tnew\nline\rcr\x1b[31m\x7f",
    "back\\slash at end\\",
    "ünïcødé ✓ 𝄞 日本",
    "`backtick` \"double\"",
    "%s {0} ?",
    "\u2028\u2029",
]


def test_string_literals_escape_quotes_backslashes_and_control_bytes() -> None:
    assert literal("a'b", "String") == "'a\\'b'"
    assert literal("a\\b", "String") == "'a\\\\b'"
    assert literal("\x00\n\x7f", "String") == "'\\x00\\x0A\\x7F'"
    for s in HOSTILE:
        lit = literal(s, "String")
        inner = lit[1:-1]
        # no unescaped quote inside, no raw control byte
        assert all(ord(c) >= 0x20 and c != "\x7f" for c in inner)
        assert inner.replace("\\\\", "").replace("\\'", "").count("'") == 0


def test_int_literals_are_typed_and_range_checked() -> None:
    assert literal(5, "UInt64") == "toUInt64(5)"
    assert literal(5, "UInt64", bare=True) == "5"
    assert literal(-(2**63), "Int64") == f"toInt64({-(2**63)})"
    assert literal(2**64 - 1, "UInt64") == f"toUInt64({2**64 - 1})"
    for value, ch_type in ((2**64, "UInt64"), (-1, "UInt64"), (256, "UInt8"), (2**32, "UInt32"), (2**63, "Int64")):
        with pytest.raises(ValueError):
            literal(value, ch_type)
    for value, ch_type in ((True, "UInt8"), ("5", "UInt64"), (5, "String"), (1.5, "UInt64")):
        with pytest.raises(TypeError):
            literal(value, ch_type)
    with pytest.raises(ValueError):
        literal(1, "Nullable(UInt8)")
    with pytest.raises(ValueError):
        literals([], "UInt64")
    assert literals([1, 2], "UInt8") == "(toUInt8(1), toUInt8(2))"


def test_identifiers_come_from_the_allow_list() -> None:
    assert ident("proxymeter_2") == "`proxymeter_2`"
    for bad in ("", "1abc", "a-b", "a`b", "a b", "a;b", "x" * 64, "dé"):
        with pytest.raises(ValueError):
            ident(bad)


def test_hostile_strings_round_trip_through_the_server(clickhouse_server: ClickHouseServer) -> None:
    sql = "SELECT " + ", ".join(literal(s, "String") for s in HOSTILE) + ", " + literal(HOSTILE[4], "String")
    sql += " IN " + literals(HOSTILE, "String") + " FORMAT JSONCompact"
    row = json.loads(clickhouse_server.query(sql))["data"][0]
    assert row[: len(HOSTILE)] == HOSTILE
    assert row[len(HOSTILE)] == 1
    big = json.loads(clickhouse_server.query(
        f"SELECT {literal(2**64 - 1, 'UInt64')}, {literal(-(2**63), 'Int64')} FORMAT JSONCompact"
    ))["data"][0]
    assert [int(v) for v in big] == [2**64 - 1, -(2**63)]


DAY = {"from": "2026-03-15", "to": "2026-03-16"}


async def mutations_done(server: ClickHouseServer, rows_left: str) -> None:
    """Wait (bounded: 10 s) until the query `rows_left` answers 0: 18.16 runs ALTER ...
    DELETE as a background mutation."""
    for _ in range(100):
        if server.query(rows_left).strip() == "0":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"rows still there after 10 s: {rows_left}")


async def second_flush_uncommitted(server: ClickHouseServer, db: str, first: Any, second: Any, now: int) -> str:
    """A store in `db` holding batch `first` (Idempotency-Key "a") committed and batch
    `second` (key "b") as a flush that crashed before its commit: its ledger rows
    deleted. Returns that flush's fid; the store is closed."""
    from collector.storage.clickhouse import ClickHouseStore

    store = ClickHouseStore(server.url, db, insert_interval=0.0)
    await store.open()
    try:
        assert await store.ingest(first, "a", now)
        assert await store.ingest(second, "b", now)
    finally:
        await store.close()
    fid = server.query(f"SELECT fid FROM {db}.ledger WHERE key = 'b'").strip()
    server.query(f"ALTER TABLE {db}.ledger DELETE WHERE fid = {fid}")
    await mutations_done(server, f"SELECT count() FROM {db}.ledger WHERE fid = {fid}")
    return fid


async def test_hostile_domains_and_errors_are_stored_and_filtered_exactly(api: Api) -> None:
    rows = [
        {"ts": "2026-03-15 10:00:00", "domain": s, "error": s, "count": i + 1, "error_count": 1}
        for i, s in enumerate(HOSTILE)
        if "\x00" not in s and s
    ]
    await api.ingest({"logs": rows})
    sites = await api.get("/analytics/domains", **DAY, limit=100)
    assert sorted((d["domain"], d["total_count"]) for d in sites["data"]) == sorted(
        (r["domain"], str(r["count"])) for r in rows
    )
    for r in rows:
        got = (await api.get("/analytics/traffic", **DAY, interval="1d", domain=r["domain"]))["data"]
        assert [d["total_count"] for d in got] == [str(r["count"])], r["domain"]
    errors = (await api.get("/analytics/errors", **DAY))["data"]
    assert sorted((e["error"], e["sample_domains"]) for e in errors) == sorted(
        (r["error"], [r["domain"]]) for r in rows
    )


async def test_bodies_wait_for_one_insert_and_a_key_twice_in_it_counts_once(clickhouse_server: ClickHouseServer) -> None:
    """Batching without a clock: insert_interval is far off and insert_batch_rows is the
    rows of all the bodies, so the insert happens exactly when the last body is queued;
    every caller is answered after it, and all the rows carry the one flush id."""
    from agent.wire.batch import Batch, Row
    from collector.model import Filter
    from collector.plan import UTC, chart_plan
    from collector.storage.clickhouse import ClickHouseStore

    db = "batching_" + secrets.token_hex(4)
    bodies = [Batch(rows=[Row(ts=1773568800 + 60 * i, user_id=i, domain=f"d{i}.com", count=i + 1)]) for i in range(6)]
    keys = ["k0", "k1", "k2", "k3", "k4", "k0"]  # k0 twice in one insert: only the first is applied
    store = ClickHouseStore(clickhouse_server.url, db, insert_batch_rows=len(bodies), insert_interval=3600.0)
    await store.open()
    try:
        answers = await asyncio.gather(*(store.ingest(b, k, 1773568800) for b, k in zip(bodies, keys)))
        assert answers == [True, True, True, True, True, False]
        assert clickhouse_server.query(f"SELECT uniqExact(fid), count() FROM {db}.ledger WHERE key != ''").split() == ["1", "5"]
        assert clickhouse_server.query(f"SELECT uniqExact(fid) FROM {db}.m").strip() == "1"
        plan = chart_plan(1773568800, 1773568800 + 3600, 3600, UTC)
        totals = await store.chart(plan, Filter())
        assert [t.count for t in totals.values()] == [1 + 2 + 3 + 4 + 5]  # body 5 (key k0 again) not applied
        # and once committed, the same key in a later insert is a no-op too
        store.insert_batch_rows = 1
        assert await store.ingest(bodies[0], "k0", 1773568800) is False
    finally:
        await store.close()
        clickhouse_server.query(f"DROP DATABASE IF EXISTS {db}")


async def test_a_flush_that_never_committed_leaves_no_activity_visible(clickhouse_server: ClickHouseServer) -> None:
    """What a collector killed between the activity insert and the ledger leaves behind
    (pending and activity rows of a fid, no ledger row) is voided at the next open: no
    page, count or stream shows those records, and the agent's retry of that batch is
    applied afresh, its records once."""
    from agent.wire.batch import Activity, Batch
    from collector.model import ActivityQuery
    from collector.storage.clickhouse import ClickHouseStore, schema

    db = "voided_" + secrets.token_hex(4)
    now = 1773568800
    rec = {"ts_us": (now - 600) * 1_000_000, "protocol": "http", "duration_ms": 5, "handshake_ms": None, "tunnel_ms": 3,
           "error": "", "auth_username": "alice", "proxy_address": None, "client_address": "10.0.0.1",
           "ip_address": None, "hostname": "a.example", "domain": "example", "port": 443, "proxy_port": None,
           "listen_address": None, "listen_port": 8080, "user_id": 42, "order_id": 1, "worker": "w1",
           "bytes_sent": 10, "bytes_received": 20}  # fmt: skip
    committed = [Activity(**(rec | {"proxy_port": i})) for i in range(5)]
    lost = [Activity(**(rec | {"proxy_port": 100 + i})) for i in range(3)]
    q = ActivityQuery(start_us=0, end_us=now * 1_000_000, limit=2)

    async def visible(store: ClickHouseStore) -> tuple[int, list[int]]:
        page = await store.activity_page(q)
        streamed = [r.proxy_port or 0 for chunk in [c async for c in store.activity_stream(q)] for _i, r in chunk]
        assert len(streamed) == page.count
        return page.count, sorted(streamed)

    fid_b = await second_flush_uncommitted(clickhouse_server, db, Batch(activity=committed), Batch(activity=lost), now)
    store = ClickHouseStore(clickhouse_server.url, db, insert_interval=0.0)
    await store.open()
    try:
        assert clickhouse_server.query(f"SELECT count() FROM {db}.void WHERE fid = {fid_b}").strip() == "1"
        assert await visible(store) == (5, list(range(5)))
        assert await store.ingest(Batch(activity=lost), "b", now)  # the retry counts once
        assert await visible(store) == (8, [*range(5), 100, 101, 102])
        ids = clickhouse_server.query(f"SELECT count(), uniqExact(id) FROM {db}.activity").split()
        assert ids == ["11", "11"]  # voided rows stay stored, but with ids of their own
        assert len(schema.ACTIVITY_COLUMNS) == 23
    finally:
        await store.close()
        clickhouse_server.query(f"DROP DATABASE IF EXISTS {db}")


async def test_hourly_stats_skip_a_voided_flush_and_migration_3_reruns(clickhouse_server: ClickHouseServer) -> None:
    """The stats table `s` is never rebuilt: a flush that never committed must vanish
    from hourly_stats by the void set alone, and its retry count once. A migration 3
    cut short after its ALTERs (18.16 has no ADD COLUMN IF NOT EXISTS) runs again."""
    from agent.wire.batch import Batch, Row
    from collector.model import Filter
    from collector.plan import HOUR, chart_plan
    from collector.storage.clickhouse import ClickHouseStore

    db = "stats_" + secrets.token_hex(4)
    t0 = 1773568800  # a UTC hour
    kept = Row(ts=t0 + 60, user_id=7, domain="a.com", protocol="HTTP", ip_out="198.51.100.1", count=3,
               bytes_sent=10, error="timeout", error_count=1, conn_ms=40)
    lost = Row(ts=t0 + HOUR + 120, user_id=7, domain="a.com", protocol="SOCKS", ip_out="198.51.100.2", count=2)
    plan = chart_plan(t0, t0 + 2 * HOUR, HOUR, UTC)

    async def stats(store: ClickHouseStore) -> list[tuple[Any, ...]]:
        got = await store.hourly_stats(plan, Filter(user_id=7))
        return [(i, s.count, s.last_ts, s.errors, s.protocols, s.proxies) for i, s in sorted(got.items())]

    first = (0, 3, t0 + 60, {"timeout": 1}, {"HTTP": 3}, {"198.51.100.1": 3})
    second = (1, 2, t0 + HOUR + 120, {}, {"SOCKS": 2}, {"198.51.100.2": 2})
    store = ClickHouseStore(clickhouse_server.url, db, insert_interval=0.0)
    await store.open()
    try:
        assert await store.ingest(Batch(rows=[kept]), "a", t0)
        assert await store.ingest(Batch(rows=[lost]), "b", t0)
        assert await stats(store) == [first, second]
    finally:
        await store.close()
    fid_b = clickhouse_server.query(f"SELECT fid FROM {db}.ledger WHERE key = 'b'").strip()
    clickhouse_server.query(f"ALTER TABLE {db}.ledger DELETE WHERE fid = {fid_b}")
    # and forget migration 3 (and the later ones) was applied: the next open runs them
    # again over the tables
    clickhouse_server.query(f"ALTER TABLE {db}.schema_version DELETE WHERE version >= 3")
    await mutations_done(clickhouse_server, f"SELECT (SELECT count() FROM {db}.ledger WHERE fid = {fid_b}) + "
                         f"(SELECT count() FROM {db}.schema_version WHERE version >= 3)")  # fmt: skip
    store = ClickHouseStore(clickhouse_server.url, db, insert_interval=0.0)
    await store.open()
    try:
        assert await stats(store) == [first]
        assert await store.ingest(Batch(rows=[lost]), "b", t0)  # the retry counts once
        assert await stats(store) == [first, second]
    finally:
        await store.close()
        clickhouse_server.query(f"DROP DATABASE IF EXISTS {db}")


async def test_download_tokens_persist_reset_and_expire(clickhouse_server: ClickHouseServer) -> None:
    """Tokens survive a reopen; a reset supersedes the old key; retention removes a
    group whose latest token expired (never bringing back an older one), and ids only
    grow."""
    from collector.storage.clickhouse import ClickHouseStore

    db = "tokens_" + secrets.token_hex(4)
    now = 1773568800
    store = ClickHouseStore(clickhouse_server.url, db, insert_interval=0.0)
    await store.open()
    try:
        first = await store.download_token(42, "activity", now, 100, "key-1")
        assert await store.download_token(42, "activity", now + 1, 100, "key-x") == first
        admin = await store.download_token(None, "activity", now, 1000, "key-admin")
        assert admin.user_id is None and admin.id > first.id
        await store.close()
        await store.open()
        assert await store.find_download_token("key-1", "activity", now + 99) == first
        assert await store.find_download_token("key-1", "other", now) is None
        # a long-lived token replaced by a short-lived one: its expiry must not revive it
        second = await store.download_token(42, "activity", now, 10, "key-2", reset=True)
        assert second.id > admin.id and second.expire_at == now + 10
        assert await store.find_download_token("key-1", "activity", now) is None
        assert await store.find_download_token("key-2", "activity", now + 9) == second
        assert await store.find_download_token("key-2", "activity", now + 10) is None
        deleted = await store.retention(now + 10)
        assert deleted["download_tokens"] == 1
        for _ in range(100):  # the delete is a mutation, applied in the background
            if clickhouse_server.query(f"SELECT count() FROM {db}.download_tokens WHERE user_id = 42").strip() == "0":
                break
            await asyncio.sleep(0.1)
        assert await store.find_download_token("key-1", "activity", now + 11) is None
        assert await store.find_download_token("key-admin", "activity", now + 11) == admin
        third = await store.download_token(42, "activity", now + 11, 100, "key-3")
        assert third.id > second.id and third.key == "key-3"
    finally:
        await store.close()
        clickhouse_server.query(f"DROP DATABASE IF EXISTS {db}")


def test_native_block_bytes_are_the_documented_layout() -> None:
    from collector.storage.clickhouse.native import Block, encode

    b = Block(2)
    b.uints("a", "UInt16", [1, 258])
    b.strings("s", [1, 0], encode(["x", "é"]))
    b.arrays("k", "UInt8", [0, 2], [7, 9])
    b.repeat("f", "UInt32", 5)
    expected = (
        b"\x04\x02"  # 4 columns, 2 rows
        + b"\x01a\x06UInt16" + b"\x01\x00\x02\x01"
        + b"\x01s\x06String" + b"\x02\xc3\xa9" + b"\x01x"
        + b"\x01k\x0cArray(UInt8)" + b"\x00" * 8 + b"\x02" + b"\x00" * 7 + b"\x07\x09"
        + b"\x01f\x06UInt32" + b"\x05\x00\x00\x00" * 2
    )
    assert b.bytes() == expected
    with pytest.raises(ValueError, match="column a: 1 values for 2 rows"):
        Block(2).uints("a", "UInt64", [1])
    with pytest.raises(ValueError, match="column k: 3 elements for arrays of 2"):
        Block(1).arrays("k", "UInt64", [2], [1, 2, 3])
    with pytest.raises(OverflowError):
        Block(1).uints("a", "UInt16", [1 << 16])


@pytest.mark.parametrize("touch", [False, True])  # columns inserted as they are / Rows read first
async def test_v2_columns_store_what_v1_rows_store(clickhouse_server: ClickHouseServer, touch: bool) -> None:
    """Version 2 bodies go to m_in as Native blocks built from their columns; the same
    rows as version 1 bodies (Row objects) must leave every table the same, and m must
    hold the sums and histograms of the rows as sent (added up here, per key)."""
    import random

    from agent.wire.batch import encode_msgpack
    from agent.wire.compact import encode_compact
    from collector.fastdecode import ColumnRows, decode
    from collector.storage.clickhouse import ClickHouseStore
    from tests.collector.test_v2_store import SHAPES, T0, rand_batch

    rnd = random.Random(12)
    batches = [rand_batch(rnd, rnd.randrange(1, 120), SHAPES[i % len(SHAPES)], i) for i in range(9)]
    dbs = {v: f"native_{v}_{secrets.token_hex(4)}" for v in ("v1", "v2")}
    stores = {v: ClickHouseStore(clickhouse_server.url, db, insert_interval=0.0) for v, db in dbs.items()}
    for s in stores.values():
        await s.open()
    try:
        for i, b in enumerate(batches):
            v1 = decode(encode_msgpack(b), "application/msgpack")
            v2 = decode(encode_compact(b), "application/msgpack")
            assert isinstance(v2.rows, ColumnRows) and v2.rows.untouched
            if touch:
                assert v2.rows[0] == v1.rows[0]
            assert v2.rows.untouched is not touch
            assert await stores["v1"].ingest(v1, f"k{i}", T0)
            assert await stores["v2"].ingest(v2, f"k{i}", T0)
    finally:
        for s in stores.values():
            await s.close()

    def dump(db: str) -> dict[str, list[str]]:
        out = {}
        for table in ("m", "r_m", "r_h", "r_d", "s"):
            keys = "ts, user_id, order_id, domain, error" + (", protocol, ip_out" if table == "s" else "")
            keys += ", fam" if table.startswith("r_") else ""
            sums = schema.STATS_SUMS if table == "s" else schema.SUMS
            vals = [f"sumMerge({c})" for c in sums]
            if table != "s":
                vals += [f"maxMerge({c})" for c in schema.MAXES] + ["sumMapMerge(lat)"]
            sql = f"SELECT {keys}, {', '.join(vals)} FROM {db}.{table} GROUP BY {keys} ORDER BY {keys} FORMAT TSV"
            out[table] = clickhouse_server.query(sql).splitlines()
        return out

    try:
        got = {v: dump(db) for v, db in dbs.items()}
        assert got["v2"] == got["v1"]
        oracle: dict[tuple[Any, ...], list[Any]] = {}
        for b in batches:
            for r in b.rows:
                acc = oracle.setdefault((r.ts, r.user_id, r.order_id, r.domain, r.error), [0] * 8 + [{}])
                for j, c in enumerate(schema.SUMS):
                    acc[j] += getattr(r, c)
                acc[6] = max(acc[6], r.max_concurrency)
                acc[7] = max(acc[7], r.duration_max_ms)
                for k, n in r.latency.items():
                    if n:
                        acc[8][k] = acc[8].get(k, 0) + n
        rows = clickhouse_server.query(
            f"SELECT ts, user_id, order_id, domain, error, {', '.join(f'toString(sumMerge({c}))' for c in schema.SUMS)}, "
            f"{', '.join(f'maxMerge({c})' for c in schema.MAXES)}, sumMapMerge(lat) FROM {dbs['v2']}.m "
            "GROUP BY ts, user_id, order_id, domain, error FORMAT JSONCompact"
        )
        stored = {}
        for ts, u, o, d, e, *vals, (ks, vs) in json.loads(rows)["data"]:
            hist = {int(k): int(n) for k, n in zip(ks, vs) if int(n)}
            stored[(int(ts), int(u), int(o), d, e)] = [int(v) for v in vals] + [hist]
        assert stored == oracle
    finally:
        for db in dbs.values():
            clickhouse_server.query(f"DROP DATABASE IF EXISTS {db}")


async def test_migration_4_rebuilds_the_rollups_from_m_with_small_granules(clickhouse_server: ClickHouseServer) -> None:
    """Migration 4 recreates r_m, r_h and r_d (smaller index granules) and rebuilds every
    day of them from m before it records its version: rollups of migration 1's shape,
    emptied, come back from m at every level, and a flush that never committed is then
    left out by the recovery as before."""
    from agent.wire.batch import Batch, Row
    from collector.model import Filter
    from collector.plan import DAY, HOUR, MINUTE, chart_plan
    from collector.storage.clickhouse import ClickHouseStore

    db = "mig4_" + secrets.token_hex(4)
    t0 = 1773532800  # a UTC midnight
    kept = [Row(ts=t0 + 60, user_id=1, domain="a.com", count=3, bytes_sent=5, latency={10: 3}),
            Row(ts=t0 + DAY + 3600, user_id=2, order_id=9, domain="b.com", count=4, error="timeout", error_count=2)]
    lost = [Row(ts=t0 + DAY + 120, user_id=1, domain="a.com", count=100)]
    await second_flush_uncommitted(clickhouse_server, db, Batch(rows=kept), Batch(rows=lost), t0)
    clickhouse_server.query(f"ALTER TABLE {db}.schema_version DELETE WHERE version = 4")
    # the rollups as migration 1 made them (granules of 1024), and empty
    for step, table in schema.ROLLUP_TABLES.items():
        clickhouse_server.query(f"DROP TABLE {db}.{table}_mv")
        clickhouse_server.query(f"DROP TABLE {db}.{table}")
        clickhouse_server.query(schema._rollup_table(db, table, 1024))  # noqa: SLF001
        clickhouse_server.query(schema._rollup_view(db, step, table))  # noqa: SLF001
    await mutations_done(clickhouse_server, f"SELECT count() FROM {db}.schema_version WHERE version = 4")
    store = ClickHouseStore(clickhouse_server.url, db, insert_interval=0.0)
    await store.open()
    try:
        assert clickhouse_server.query(f"SELECT max(version) FROM {db}.schema_version").strip() == "4"
        for name, granules in (("r_m", 256), ("r_h", 64), ("r_d", 64)):
            create = clickhouse_server.query(f"SELECT create_table_query FROM system.tables WHERE database = '{db}' AND name = '{name}'")
            assert f"index_granularity = {granules}" in create
        for step in (MINUTE, HOUR, DAY):
            totals = await store.chart(chart_plan(t0, t0 + 2 * DAY, step, UTC), Filter(), with_latency=True)
            got = sorted((t.count, t.bytes_sent, t.error_count, t.latency) for t in totals.values())
            assert got == [(3, 5, 0, {10: 3}), (4, 0, 2, {})], step
        by_domain = await store.chart(chart_plan(t0, t0 + 2 * DAY, DAY, UTC), Filter(domain="a.com"))
        assert [t.count for t in by_domain.values()] == [3]  # the lost flush's 100 stay out
        errors = await store.errors(t0, t0 + 2 * DAY, Filter())
        assert {e: (t.total_errors, t.by_domain) for e, t in errors.items()} == {"timeout": (2, {"b.com": 2})}
        assert await store.ingest(Batch(rows=lost), "b", t0)  # the views feed the new tables
        totals = await store.chart(chart_plan(t0, t0 + 2 * DAY, DAY, UTC), Filter(domain="a.com"))
        assert [t.count for _, t in sorted(totals.items())] == [3, 100]
    finally:
        await store.close()
        clickhouse_server.query(f"DROP DATABASE IF EXISTS {db}")


def test_segment_grain_groups_never_straddle_a_bucket_edge() -> None:
    import random
    from bisect import bisect_right

    from collector.plan import DAY, HOUR, MINUTE, Segment
    from collector.plan import segment_grain

    day = [i * 300 for i in range(289)]
    assert segment_grain(Segment(MINUTE, 0, DAY), day) == 300  # 5-minute buckets
    assert segment_grain(Segment(MINUTE, 0, DAY), [1800 + i * HOUR for i in range(-1, 25)]) == 1800  # +05:30
    assert segment_grain(Segment(MINUTE, 0, DAY), [i * 60 for i in range(1441)]) == MINUTE
    assert segment_grain(Segment(HOUR, 0, 7 * DAY), [i * DAY for i in range(8)]) == DAY
    assert segment_grain(Segment(MINUTE, 120, 600), [0, 900]) == DAY  # no edge inside
    rnd = random.Random(4)
    for _ in range(300):
        level = rnd.choice([MINUTE, HOUR])
        step = rnd.choice([s for s in (60, 300, 900, 1800, HOUR, DAY) if s % level == 0])
        shift = rnd.choice([0, 1800, 900, 3 * HOUR]) if step > 60 else 0
        edges = [shift + i * step for i in range(-2, 3 * DAY // step + 3)]
        start = rnd.randrange(0, DAY) // level * level
        seg = Segment(level, start, start + rnd.randrange(1, 2 * DAY // level) * level)
        g = segment_grain(seg, edges)
        for ts in range(seg.start, seg.end, level):
            label = max(ts // g * g, seg.start)  # the SQL label
            assert bisect_right(edges, label) == bisect_right(edges, ts), (seg, step, shift, g, ts)


def test_migration_4_recreates_only_the_collectors_own_rollups() -> None:
    q = "CREATE TABLE x.r_d (...) ENGINE = AggregatingMergeTree PARTITION BY intDiv(ts, 86400) ORDER BY (fam) SETTINGS index_granularity = {}"
    assert schema.stale_rollup("AggregatingMergeTree", q.format(1024), "r_d")
    assert not schema.stale_rollup("AggregatingMergeTree", q.format(64), "r_d")
    assert schema.stale_rollup("AggregatingMergeTree", q.format(64), "r_m")  # r_m wants 256
    assert schema.stale_rollup("AggregatingMergeTree", q.format(640), "r_d")  # the number, not a prefix of it
    assert not schema.stale_rollup("ReplicatedAggregatingMergeTree", q.format(1024), "r_d")  # an operator's table
    phases = schema.recreate_rollups("db", ["r_h"])
    assert [len(p) for p in phases] == [1, 1, 1, 1]
    assert phases[0] == ["DROP TABLE IF EXISTS `db`.r_h_mv"] and phases[1] == ["DROP TABLE IF EXISTS `db`.r_h"]
    assert "index_granularity = 64" in phases[2][0] and phases[3][0].startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS `db`.r_h_mv TO `db`.r_h")
    assert schema.recreate_rollups("db", []) == [[], [], [], []]


async def test_domain_totals_from_the_answer_equal_a_count(clickhouse_server: ClickHouseServer) -> None:
    """/domains takes its total from rows_before_limit_at_least of the ranked query; a
    server without it gets the counting query. Both must give the distinct domains,
    for every page, past the last one too, over several segments."""
    from agent.wire.batch import Batch, Row
    from collector.model import Filter
    from collector.storage.clickhouse import ClickHouseStore

    db = "totals_" + secrets.token_hex(4)
    t0 = 1773532800
    rows = [Row(ts=t0 + 60 * (i % 50) + 86400 * (i % 3), user_id=i % 4, order_id=i % 2, domain=f"d{i % 37}.com",
                count=1 + i % 5) for i in range(400)]  # fmt: skip
    store = ClickHouseStore(clickhouse_server.url, db, insert_interval=0.0)
    await store.open()
    try:
        assert await store.ingest(Batch(rows=rows), None, t0)
        for filt, start, end in ((Filter(), t0, t0 + 3 * 86400), (Filter(order_id=1), t0 + 1800, t0 + 2 * 86400 + 600),
                                 (Filter(user_id=2), t0, t0 + 86400)):  # fmt: skip
            want = len({r.domain for r in rows if start <= r.ts < end and (filt.order_id in (None, r.order_id))
                        and (filt.user_id in (None, r.user_id))})  # fmt: skip
            assert want > 5
            for offset in (0, 5, want, want + 10):
                page = await store.domains(start, end, filt, order="count", limit=5, offset=offset)
                assert page.total == want, (filt, offset)
            union = store._breakdown_union(start, end, filt, schema.N, "domain", "domain != ''", "domain")  # noqa: SLF001
            assert union is not None
            assert await store._domain_total(union) == want  # noqa: SLF001
    finally:
        await store.close()
        clickhouse_server.query(f"DROP DATABASE IF EXISTS {db}")
