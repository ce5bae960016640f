"""Small hand-computed cases: every expected number below was worked out by hand."""

from __future__ import annotations

import pytest

from agent.aggregate import Aggregator
from agent.record import Record
from agent.wire import batch as wire
from agent.wire.batch import Profile, Row

T0 = 1_700_000_040_000  # 2023-11-14 22:14:00 UTC, a minute boundary
TS0 = T0 // 1000


def rec(start: int, duration: int, **kw: object) -> Record:
    base: dict = dict(
        bytes_sent=10, bytes_received=100, client_ip="10.0.0.1", user="alice", host="example.com",
        port=443, protocol="HTTPS", domain="example.com", user_id=42, order_id=7,
    )  # fmt: skip
    base.update(kw)
    return Record(start_ms=T0 + start, duration_ms=duration, **base)


def seconds(*pairs: tuple[int, int]) -> list[int]:
    """A 60-second profile from (second, count) pairs."""
    active = [0] * 60
    for s, n in pairs:
        active[s] = n
    return active


def test_three_overlapping_requests_peak_three() -> None:
    agg = Aggregator("w1")
    agg.add(rec(0, 3000))  # seconds 0, 1, 2
    agg.add(rec(500, 1000))  # [0.5 s, 1.5 s): seconds 0, 1
    agg.add(rec(1000, 0))  # zero-length: second 1
    agg.add(rec(10_000, 250, error="timeout", bytes_sent=1, bytes_received=2))  # second 10, own row
    assert agg.records_added == 4 and agg.pending_rows == 2
    batch = agg.drain(T0 + 60_000)
    ok, failed = sorted(batch.rows, key=lambda r: r.error)
    assert ok == Row(
        ts=TS0, user_id=42, order_id=7, port=443, protocol="HTTPS", ip_from="10.0.0.1",
        worker="w1", domain="example.com", count=3, bytes_sent=30, bytes_received=300,
        error_count=0, duration_ms=4000, conn_ms=4000, max_concurrency=3, duration_max_ms=3000,
        # buckets: 3000 ms -> 93 (2**(92/8) = 2896 <= 3000 < 2**(93/8) = 3158),
        # 1000 ms -> 80 (2**(79/8) = 939 <= 1000 < 1024), 0 ms -> 0
        latency={93: 1, 80: 1, 0: 1},
    )  # fmt: skip
    assert (failed.error, failed.count, failed.error_count, failed.max_concurrency) == ("timeout", 1, 1, 1)
    assert (failed.bytes_sent, failed.bytes_received, failed.conn_ms) == (1, 2, 250)
    # 250 ms -> 64 (2**(63/8) = 235 <= 250 < 256)
    assert failed.latency == {64: 1}
    assert batch.profiles == [Profile(TS0, 42, 7, "w1", seconds((0, 2), (1, 3), (2, 1), (10, 1)))]
    assert agg.pending_rows == 0 and agg.rows_drained == 2 and agg.profiles_drained == 1


def test_two_hour_tunnel_logged_at_its_end_becomes_deltas_for_every_minute() -> None:
    agg = Aggregator("w1")
    agg.add(rec(30_000, 100))  # a short request in the tunnel's first minute
    first = agg.drain(T0 + 60_000)
    assert first.profiles == [Profile(TS0, 42, 7, "w1", seconds((30, 1)))]

    # two hours later the tunnel that started at T0 + 20 s closes and is logged
    agg.add(rec(20_000, 2 * 3600 * 1000, bytes_sent=5, bytes_received=6))
    later = agg.drain(T0 + 2 * 3600 * 1000 + 30_000)
    assert agg.pending_rows == 0 and agg.pending_profiles == 0
    # it covers minute 0 from second 20 and minutes 1..119 fully, and minute 120 up to
    # second 19 (its end, T0 + 7200 s + 20 s, is exclusive)
    assert [p.ts for p in later.profiles] == [TS0 + 60 * m for m in range(121)]
    assert later.profiles[0].active == [0] * 20 + [1] * 40
    assert all(p.active == [1] * 60 for p in later.profiles[1:120])
    assert later.profiles[120].active == [1] * 20 + [0] * 40
    rows = {r.ts: r for r in later.rows}
    assert sorted(rows) == [TS0 + 60 * m for m in range(121)]
    assert (rows[TS0].count, rows[TS0].duration_ms, rows[TS0].conn_ms) == (1, 7_200_000, 40_000)
    assert (rows[TS0].bytes_sent, rows[TS0].bytes_received) == (5, 6)
    for m in range(1, 121):
        row = rows[TS0 + 60 * m]
        assert (row.count, row.bytes_sent, row.duration_ms, row.latency) == (0, 0, 0, {})
        assert row.conn_ms == (60_000 if m < 120 else 20_000)
        assert row.max_concurrency == 1
    assert sum(r.conn_ms for r in later.rows) == 7_200_000

    # what the collector ends up with for minute 0: both deltas added, peak 2 at second 30
    summed = [a + b for a, b in zip(first.profiles[0].active, later.profiles[0].active)]
    assert max(summed) == 2 and summed.index(2) == 30


@pytest.mark.parametrize(
    ("start", "duration", "want"),
    [
        # (start offset ms, duration ms) -> {minute: (count, conn_ms, covered seconds)}
        (59_999, 0, {0: (1, 0, [59])}),
        (59_999, 1, {0: (1, 1, [59])}),  # [59.999 s, 60.000 s): ends exactly on the boundary
        (59_999, 2, {0: (1, 1, [59]), 1: (0, 1, [0])}),
        (60_000, 0, {1: (1, 0, [0])}),  # starts exactly on a minute boundary
        (60_000, 60_000, {1: (1, 60_000, list(range(60)))}),
        (59_000, 61_000, {0: (1, 1000, [59]), 1: (0, 60_000, list(range(60)))}),
        (1_000, 1_000, {0: (1, 1000, [1])}),
    ],
)
def test_minute_and_second_edges(start: int, duration: int, want: dict[int, tuple[int, int, list[int]]]) -> None:
    agg = Aggregator("w1")
    agg.add(rec(start, duration))
    batch = agg.drain(0)
    got_rows = {(r.ts - TS0) // 60: (r.count, r.conn_ms) for r in batch.rows}
    assert got_rows == {m: (c, ms) for m, (c, ms, _) in want.items()}
    got_seconds = {(p.ts - TS0) // 60: [s for s, n in enumerate(p.active) if n] for p in batch.profiles}
    assert got_seconds == {m: secs for m, (_, _, secs) in want.items()}


def test_row_peak_counts_connections_carried_over_from_earlier_minutes() -> None:
    agg = Aggregator("w1")
    agg.add(rec(50_000, 20_000))  # minute 0 second 50 .. minute 1 second 9
    agg.add(rec(65_000, 3000))  # minute 1 seconds 5..7
    agg.add(rec(66_000, 500))  # minute 1 second 6
    rows = {r.ts: r for r in agg.drain(0).rows}
    assert (rows[TS0].count, rows[TS0].max_concurrency, rows[TS0].conn_ms) == (1, 1, 10_000)
    # minute 1: second 6 has the carried tunnel plus both requests
    assert (rows[TS0 + 60].count, rows[TS0 + 60].max_concurrency) == (2, 3)
    assert rows[TS0 + 60].conn_ms == 10_000 + 3000 + 500


def test_switched_off_dimensions_take_their_defaults() -> None:
    agg = Aggregator("w1", dimensions=frozenset({"user_id", "domain"}))
    agg.add(rec(0, 100, port=80, protocol="HTTP", order_id=1, client_ip="10.0.0.1"))
    agg.add(rec(0, 100, port=443, protocol="SOCKS", order_id=2, client_ip="10.0.0.2", error="timeout"))
    agg.add(rec(0, 100, domain="other.org"))
    batch = agg.drain(0)
    assert sorted((r.domain, r.count, r.error_count) for r in batch.rows) == [("example.com", 2, 1), ("other.org", 1, 0)]
    for r in batch.rows:
        assert (r.user_id, r.order_id, r.port, r.protocol, r.ip_from, r.worker, r.error) == (42, 0, 0, "", "", "", "")
    assert batch.profiles == [Profile(TS0, 42, 0, "", seconds((0, 3)))]


@pytest.mark.parametrize(("sent", "received"), [(-1, 0), (0, -7), (2**53, 0), (0, 10**30)])
def test_impossible_byte_counts_are_rejected_and_change_nothing(sent: int, received: int) -> None:
    agg = Aggregator("w1")
    bad = rec(0, 10)
    bad.bytes_sent, bad.bytes_received = sent, received
    with pytest.raises(ValueError, match="bytes_sent, bytes_received"):
        agg.add(bad)
    assert (agg.records_added, agg.records_rejected, agg.pending_rows, agg.pending_profiles) == (0, 1, 0, 0)


def test_row_sums_over_the_wire_limit_are_cut_to_it_and_counted() -> None:
    agg = Aggregator("w1")
    half = 2**52 + 5  # two of these exceed 2**53-1
    for k in range(2):
        r = rec(1000 * k, 10)
        r.bytes_sent, r.bytes_received = half, 100
        agg.add(r)
    (row,) = agg.drain(0).rows
    assert (row.count, row.bytes_sent, row.bytes_received) == (2, 2**53 - 1, 200)
    assert agg.values_fixed == 1


def test_unknown_dimension_is_named() -> None:
    with pytest.raises(ValueError, match="dimensions: unknown colour"):
        Aggregator("w1", dimensions=frozenset({"user_id", "colour"}))


@pytest.mark.parametrize("duration", [-1, 7 * 24 * 3600 * 1000 + 1])
def test_impossible_duration_is_rejected_and_changes_nothing(duration: int) -> None:
    agg = Aggregator("w1")
    with pytest.raises(ValueError, match="duration_ms"):
        agg.add(rec(0, duration))
    assert (agg.records_added, agg.records_rejected, agg.pending_rows, agg.pending_profiles) == (0, 1, 0, 0)
    assert agg.drain(0).rows == []


def test_drain_releases_state_and_the_next_drain_is_empty() -> None:
    agg = Aggregator("w1")
    for i in range(50):
        agg.add(rec(i * 7_000, 90_000, user_id=i % 5))
    assert agg.pending_rows > 0 and agg.pending_profiles > 0
    batch = agg.drain(T0)
    assert sum(r.count for r in batch.rows) == 50
    assert agg.pending_rows == 0 and agg.pending_profiles == 0
    assert agg.drain(T0 + 10_000).rows == [] and agg.drain(T0 + 20_000).profiles == []
    assert (agg.records_added, agg.rows_drained, agg.profiles_drained) == (50, len(batch.rows), len(batch.profiles))
    assert (agg.drains, agg.last_drain_ms) == (3, T0 + 20_000)


@pytest.mark.parametrize(
    ("first", "second", "peak"),
    [
        ((0, 1000), (1000, 1000), 1),  # seconds {0} and {1}: they touch, never overlap
        ((1000, 1000), (0, 1000), 1),  # same, logged in the other order
        ((0, 1001), (1000, 10), 2),  # {0, 1} and {1}
        ((1500, 10), (0, 1600), 2),  # {1} inside {0, 1}
        ((5000, 0), (5999, 0), 2),  # two zero-length requests in second 5
        ((5000, 0), (6000, 0), 1),
        ((0, 30_000), (29_999, 5), 2),
        ((0, 30_000), (30_000, 5), 1),
    ],
)
def test_row_peak_of_two_connections(first: tuple[int, int], second: tuple[int, int], peak: int) -> None:
    agg = Aggregator("w1")
    agg.add(rec(*first))
    agg.add(rec(*second))
    (row,) = agg.drain(0).rows
    assert (row.count, row.max_concurrency) == (2, peak)


def test_values_over_the_wire_limits_are_fixed_not_fatal() -> None:
    agg = Aggregator("w1")
    agg.add(rec(0, 100, domain="a" * 300, port=-1))
    agg.add(rec(0, 100, user_id=2**64, peer_id="p" * 256))
    agg.add(rec(0, 100))  # fine as it is
    batch = agg.drain(0)
    # every value is now one the collector accepts
    assert wire.decode_body(wire.encode_msgpack(batch), wire.CONTENT_TYPE_MSGPACK).rows == batch.rows
    got = sorted((r.user_id, r.port, len(r.domain), len(r.peer_id)) for r in batch.rows)
    assert got == [(0, 443, 11, 255), (42, 0, 255, 0), (42, 443, 11, 0)]
    # profiles: user 2**64 became user 0
    assert sorted((p.user_id, sum(p.active)) for p in batch.profiles) == [(0, 1), (42, 2)]
    assert agg.values_fixed == 5  # domain, port, user_id and peer_id in rows; user_id in a profile
