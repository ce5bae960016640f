"""The aggregator against a brute-force reference written here, on seeded random records.

The reference walks every second every connection could touch, tests the overlap rule
literally and counts; it shares no code with agent.aggregate.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import pytest

from agent.aggregate import Aggregator
from agent.record import Record
from agent.wire import batch as wire
from agent.wire.batch import DIMENSIONS, Batch
from agent.wire.compact import encode_compact

T0 = 1_700_000_040_000  # a minute boundary (UTC epoch ms)
assert T0 % 60_000 == 0
WORKER = "worker-07"
SUMS = ("count", "bytes_sent", "bytes_received", "error_count", "duration_ms", "conn_ms")
MAXES = ("max_concurrency", "duration_max_ms")


def default(dim: str) -> Any:
    return 0 if dim in ("user_id", "order_id", "port") else ""


def log2_bucket(ms: int) -> int:
    # independent of agent.wire.histogram's table: smallest i with ms < 2**(i/8)
    if ms < 1:
        return 0
    i = 1
    while ms**8 >= 2**i:
        i += 1
    return i


def reference(records: list[Record], worker: str = WORKER, dims: frozenset[str] = frozenset(DIMENSIONS)):
    """Rows {(ts, dims...): fields} and profiles {(ts, user, order, worker): [60]}."""
    rows: dict[tuple, dict[str, Any]] = {}
    seconds: dict[tuple, Counter] = defaultdict(Counter)
    profiles: dict[tuple, list[int]] = {}

    def row_for(key: tuple) -> dict[str, Any]:
        if key not in rows:
            rows[key] = {name: 0 for name in SUMS + MAXES} | {"latency": Counter()}
        return rows[key]

    for r in records:
        values = {
            "user_id": r.user_id, "order_id": r.order_id, "port": r.port, "protocol": r.protocol,
            "ip_out": r.ip_out, "ip_from": r.client_ip, "peer_id": r.peer_id, "worker": worker,
            "domain": r.domain, "error": r.error,
        }  # fmt: skip
        d = tuple(values[k] if k in dims else default(k) for k in DIMENSIONS)
        end = r.start_ms + r.duration_ms
        row = row_for((r.start_ms // 60_000 * 60,) + d)
        row["count"] += 1
        row["bytes_sent"] += r.bytes_sent
        row["bytes_received"] += r.bytes_received
        row["error_count"] += 1 if r.error else 0
        row["duration_ms"] += r.duration_ms
        row["duration_max_ms"] = max(row["duration_max_ms"], r.duration_ms)
        row["latency"][log2_bucket(r.duration_ms)] += 1
        worker_d = d[DIMENSIONS.index("worker")]
        for s in range(r.start_ms // 1000 - 1, end // 1000 + 2):
            overlaps = r.start_ms < (s + 1) * 1000 and end > s * 1000
            if not (overlaps or (r.duration_ms == 0 and s * 1000 <= r.start_ms < (s + 1) * 1000)):
                continue
            minute = s // 60 * 60
            key = (minute, *d)
            row_for(key)["conn_ms"] += min(end, (s + 1) * 1000) - max(r.start_ms, s * 1000)
            seconds[key][s] += 1
            pkey = (minute, d[0], d[1], worker_d)
            profiles.setdefault(pkey, [0] * 60)[s - minute] += 1
    for key, per_second in seconds.items():
        rows[key]["max_concurrency"] = max(per_second.values())
    for row in rows.values():
        row["latency"] = dict(row["latency"])
    return rows, profiles


def as_maps(batch: Batch):
    rows: dict[tuple, dict[str, Any]] = {}
    for r in batch.rows:
        key = (r.ts,) + tuple(getattr(r, d) for d in DIMENSIONS)
        assert key not in rows, f"duplicate row {key}"
        rows[key] = {name: getattr(r, name) for name in SUMS + MAXES} | {"latency": dict(r.latency)}
    profiles: dict[tuple, list[int]] = {}
    for p in batch.profiles:
        key = (p.ts, p.user_id, p.order_id, p.worker)
        assert key not in profiles, f"duplicate profile {key}"
        assert len(p.active) == 60 and any(p.active)
        profiles[key] = list(p.active)
    return rows, profiles


def merge(into: tuple[dict, dict], more: tuple[dict, dict]) -> None:
    """The collector's merge rules: counters and histograms add, max fields take the max,
    profiles add per second."""
    rows, profiles = into
    for key, row in more[0].items():
        if key not in rows:
            rows[key] = {name: 0 for name in SUMS + MAXES} | {"latency": {}}
        have = rows[key]
        for name in SUMS:
            have[name] += row[name]
        for name in MAXES:
            have[name] = max(have[name], row[name])
        for b, n in row["latency"].items():
            have["latency"][b] = have["latency"].get(b, 0) + n
    for key, active in more[1].items():
        old = profiles.setdefault(key, [0] * 60)
        profiles[key] = [a + b for a, b in zip(old, active)]


def random_records(seed: int, n: int, narrow: bool = False) -> list[Record]:
    """`narrow`: few distinct dimension values, so rows hold many overlapping connections."""
    rng = random.Random(seed)
    pick = (lambda values: values[0]) if narrow else rng.choice
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.15:
            start = T0 + rng.randrange(15) * 60_000  # exactly on a minute boundary
        elif kind < 0.25:
            start = T0 + rng.randrange(15 * 60) * 1000 - rng.choice((0, 1))  # around a second edge
        else:
            start = T0 + rng.randrange(15 * 60_000)
        kind = rng.random()
        if kind < 0.2:
            duration = 0
        elif kind < 0.7:
            duration = rng.randrange(1, 2500)
        elif kind < 0.9:
            duration = rng.randrange(1, 150_000)
        elif kind < 0.975:
            duration = rng.choice((60_000, 120_000, 1000, 59_999, 60_001))
        else:
            duration = rng.randrange(3_600_000, 2 * 3_600_000 + 1)  # a long tunnel
        out.append(
            Record(
                start_ms=start,
                duration_ms=duration,
                bytes_sent=rng.randrange(5000),
                bytes_received=rng.randrange(1 << 20),
                client_ip=pick(("10.0.0.1", "10.0.0.2", "192.0.2.9")),
                user=f"user{rng.randrange(4)}",
                host="h",
                port=pick((80, 443, 1080)),
                protocol=pick(("HTTP", "HTTPS", "SOCKS")),
                error=pick(("", "", "", "timeout", "dns_failure")),
                ip_out=pick(("", "198.51.100.1")),
                peer_id=pick(("", "peer-a", "peer-b")),
                domain=pick(("example.com", "example.org", "1.2.3.4", "")),
                user_id=rng.randrange(1, 5),
                order_id=rng.randrange(3),
            )
        )
    return out


def aggregate(records: list[Record], **kwargs: Any) -> Batch:
    agg = Aggregator(WORKER, **kwargs)
    for r in records:
        agg.add(r)
    return agg.drain(T0 + 10**9)


@pytest.mark.parametrize(("seed", "narrow"), [(1, False), (2, False), (3, True)])
def test_single_drain_equals_reference(seed: int, narrow: bool) -> None:
    records = random_records(seed, 900, narrow)
    got_rows, got_profiles = as_maps(aggregate(records))
    want_rows, want_profiles = reference(records)
    assert got_rows == want_rows
    assert got_profiles == want_profiles
    # conn_ms spread over minutes adds back up to the durations, per dimension set
    conn: Counter = Counter()
    dur: Counter = Counter()
    for key, row in got_rows.items():
        conn[key[1:]] += row["conn_ms"]
        dur[key[1:]] += row["duration_ms"]
    assert conn == dur
    assert sum(row["count"] for row in got_rows.values()) == len(records)


@pytest.mark.parametrize(("seed", "narrow"), [(4, False), (5, True)])
def test_several_drains_are_deltas_that_merge_to_one_drain(seed: int, narrow: bool) -> None:
    records = random_records(seed, 900, narrow)
    rng = random.Random(seed)
    rng.shuffle(records)  # logged out of order, as haproxy and squid do
    cuts = sorted(rng.sample(range(1, len(records)), 4))
    chunks = [records[a:b] for a, b in zip([0] + cuts, cuts + [len(records)])]

    agg = Aggregator(WORKER)
    merged: tuple[dict, dict] = ({}, {})
    for i, chunk in enumerate(chunks):
        for r in chunk:
            agg.add(r)
        delta = as_maps(agg.drain(T0 + i))
        assert agg.pending_rows == 0 and agg.pending_profiles == 0
        # each drain is exactly its own records, nothing carried from earlier drains
        assert delta == reference(chunk)
        merge(merged, delta)

    once_rows, once_profiles = reference(records)
    assert merged[1] == once_profiles  # the exact peak survives flushing, via profiles
    assert merged[0].keys() == once_rows.keys()
    for key, row in once_rows.items():
        got = merged[0][key]
        for name in SUMS + ("duration_max_ms", "latency"):
            assert got[name] == row[name], (key, name)
        # documented: a row's max_concurrency is per drain, so merging by max is a lower
        # bound of the one-drain value, never above it
        assert 1 <= got["max_concurrency"] <= row["max_concurrency"]


def test_dimension_switches_cut_cardinality() -> None:
    records = random_records(6, 500)
    for dims in (frozenset({"user_id", "domain"}), frozenset({"order_id", "error", "worker"}), frozenset()):
        got_rows, got_profiles = as_maps(aggregate(records, dimensions=dims))
        want_rows, want_profiles = reference(records, dims=dims)
        assert got_rows == want_rows, sorted(dims)
        assert got_profiles == want_profiles, sorted(dims)
        for key in got_rows:
            for i, name in enumerate(DIMENSIONS, start=1):
                if name not in dims:
                    assert key[i] == default(name)
    assert len(as_maps(aggregate(records, dimensions=frozenset()))[0]) < len(as_maps(aggregate(records))[0])


def test_workers_sum_to_the_fleet_peak() -> None:
    records = random_records(7, 600)
    a, b = Aggregator("a"), Aggregator("b")
    for i, r in enumerate(records):
        (a if i % 3 else b).add(r)
    fleet: dict[tuple, list[int]] = {}
    for p in a.drain(0).profiles + b.drain(0).profiles:
        old = fleet.setdefault((p.ts, p.user_id, p.order_id), [0] * 60)
        fleet[(p.ts, p.user_id, p.order_id)] = [x + y for x, y in zip(old, p.active)]
    _, want = reference(records, worker="")
    assert fleet == {key[:3]: active for key, active in want.items()}


def test_drained_batch_survives_the_wire() -> None:
    batch = aggregate(random_records(8, 300))
    for encode in (wire.encode_msgpack, wire.encode_json):
        ctype = wire.CONTENT_TYPE_MSGPACK if encode is wire.encode_msgpack else wire.CONTENT_TYPE_JSON
        back = wire.decode_body(encode(batch), ctype)
        assert back.rows == batch.rows
        assert back.profiles == batch.profiles


def test_drained_batch_in_body_version_2_is_the_reference() -> None:
    # encoded straight from the drain's columns (no Row read before), every dimension
    # set and a narrow one: the collector reads back the reference's rows and profiles
    records = random_records(9, 400)
    for dims in (frozenset(DIMENSIONS), frozenset({"user_id", "domain", "worker"})):
        batch = aggregate(records, dimensions=dims)
        back = wire.decode_body(encode_compact(batch), wire.CONTENT_TYPE_MSGPACK)
        assert as_maps(back) == reference(records, dims=dims)


def test_late_lines_after_a_drain_are_deltas_of_the_closed_minute() -> None:
    # a minute is drained (its batch spooled), then lines of that minute still come
    # (squid logs a request when it ends; a tunnel hours later): the next drain holds
    # only them, as deltas of the old minute, and both add up to the one-drain answer
    records = random_records(10, 600)
    on_time = [r for r in records if r.start_ms + r.duration_ms < T0 + 120_000]
    late = [r for r in records if r.start_ms + r.duration_ms >= T0 + 120_000]
    assert on_time and late and any(r.start_ms < T0 + 120_000 for r in late)
    agg = Aggregator(WORKER)
    merged: tuple[dict, dict] = ({}, {})
    for part in (on_time, late):
        for r in part:
            agg.add(r)
        delta = as_maps(agg.drain(T0))
        assert delta == reference(part)
        merge(merged, delta)
    once_rows, once_profiles = reference(records)
    assert merged[1] == once_profiles
    assert {k: {n: v for n, v in r.items() if n != "max_concurrency"} for k, r in merged[0].items()} == {
        k: {n: v for n, v in r.items() if n != "max_concurrency"} for k, r in once_rows.items()}
