"""Pure parts: config validation, query planning (bucket edges, DST, cover), params."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.wire.tomlschema import ConfigError
from collector import config, params, plan

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def ts(*args: int, tz=UTC) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp())


def test_config_defaults_and_fixed_shape() -> None:
    cfg = config.loads(
        '[server]\nlisten = "127.0.0.1:8428"\n[storage]\nbackend = "sqlite"\npath = "/x.db"\nretention_days = 90\n'
        '[[auth.tokens]]\nname = "a"\nrole = "agent"\nsha256 = "' + "ab" * 32 + '"\n'
    )
    assert cfg.server.max_body_bytes == 16 * 1024 * 1024
    assert cfg.storage.idempotency_days == 7
    assert cfg.auth.tokens[0].role == "agent"
    assert config.split_listen("[::1]:9") == ("::1", 9)


@pytest.mark.parametrize(
    "text,path",
    [
        ('[server]\nlisten = "8428"', "server.listen"),
        ('[server]\nlisten = "host:99999"', "server.listen"),
        ('[server]\nmax_body_bytes = 0', "server.max_body_bytes"),
        ('[storage]\nbackend = "mysql"', "storage.backend"),
        ('[storage]\nidempotency_days = 6', "storage.idempotency_days"),
        ('[storage]\nretention = 3', "storage.retention"),
        ('[[auth.tokens]]\nname = "a"\nrole = "root"\nsha256 = "' + "a" * 64 + '"', "auth.tokens[0].role"),
        ('[[auth.tokens]]\nname = "a"\nrole = "user"\nsha256 = "' + "a" * 64 + '"', "auth.tokens[0].user_id"),
        ('[[auth.tokens]]\nname = "a"\nrole = "admin"\nuser_id = 3\nsha256 = "' + "a" * 64 + '"', "auth.tokens[0].user_id"),
        ('[[auth.tokens]]\nname = "a"\nrole = "agent"\nsha256 = "abc"', "auth.tokens[0].sha256"),
        ('[[auth.tokens]]\nname = "a"\nrole = "agent"\nsha256 = "' + "g" * 64 + '"', "auth.tokens[0].sha256"),
        ('[[auth.tokens]]\nname = "a"\nrole = "agent"\nsha256 = "' + "a" * 64 + '"\n'
         '[[auth.tokens]]\nname = "b"\nrole = "admin"\nsha256 = "' + "A" * 64 + '"', "auth.tokens[1].sha256"),
    ],
)
def test_config_errors_name_the_key(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.loads(text)
    assert exc.value.path == path


def test_config_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


def test_berlin_day_edges_around_dst() -> None:
    edges = plan.bucket_edges(ts(2026, 3, 28, tz=BERLIN), ts(2026, 3, 31, tz=BERLIN), plan.DAY, BERLIN)
    assert edges == (ts(2026, 3, 28, tz=BERLIN), ts(2026, 3, 29, tz=BERLIN), ts(2026, 3, 30, tz=BERLIN), ts(2026, 3, 31, tz=BERLIN))
    assert [b - a for a, b in zip(edges, edges[1:])] == [86400, 82800, 86400]
    # Autumn: a 25-hour day.
    autumn = plan.bucket_edges(ts(2026, 10, 25, tz=BERLIN), ts(2026, 10, 26, tz=BERLIN), plan.DAY, BERLIN)
    assert autumn[1] - autumn[0] == 25 * 3600
    # Local midnights are whole UTC hours, so the plan reads the hour rollup.
    p = plan.chart_plan(edges[0], edges[-1], plan.DAY, BERLIN)
    assert {s.level for s in p.segments} == {plan.HOUR}
    assert p.bucket_seconds(1) == 23 * 3600


def test_hour_edges_skip_the_missing_hour() -> None:
    start, end = ts(2026, 3, 29, tz=BERLIN), ts(2026, 3, 29, 5, tz=BERLIN)
    edges = plan.bucket_edges(start, end, plan.HOUR, BERLIN)
    labels = [datetime.fromtimestamp(e, BERLIN).strftime("%H") for e in edges]
    assert labels == ["00", "01", "03", "04", "05"]


def test_bucket_floor_in_half_hour_zone() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    t = ts(2026, 3, 28, 10, 47, tz=kolkata)
    assert plan.bucket_floor(t, plan.HOUR, kolkata) == ts(2026, 3, 28, 10, tz=kolkata)
    assert plan.bucket_floor(t, 900, kolkata) == ts(2026, 3, 28, 10, 45, tz=kolkata)
    p = plan.chart_plan(ts(2026, 3, 28, tz=kolkata), ts(2026, 3, 29, tz=kolkata), plan.HOUR, kolkata)
    assert {s.level for s in p.segments} == {plan.MINUTE}


def test_cover_uses_the_coarsest_tables_and_is_exact() -> None:
    a, b = ts(2026, 1, 1, 10, 17), ts(2026, 3, 1, 5, 3)
    segs = plan.cover(a, b)
    assert [(s.level, s.start, s.end) for s in segs] == [
        (60, a, ts(2026, 1, 1, 11)),
        (3600, ts(2026, 1, 1, 11), ts(2026, 1, 2)),
        (86400, ts(2026, 1, 2), ts(2026, 3, 1)),
        (3600, ts(2026, 3, 1), ts(2026, 3, 1, 5)),
        (60, ts(2026, 3, 1, 5), b),
    ]
    assert plan.cover(a, a + 120) == (plan.Segment(60, a, a + 120),)


@pytest.mark.parametrize(
    "seconds,expected", [(3600, "1m"), (500 * 60, "1m"), (501 * 60, "5m"), (86400, "5m"), (2 * 86400, "15m"), (7 * 86400, "1h"), (62 * 86400, "1d")]
)
def test_default_interval(seconds: int, expected: str) -> None:
    assert plan.default_interval(0, seconds, 500) == expected


def test_row_span_rounds_up_to_minutes() -> None:
    assert plan.row_span(ts(2026, 1, 1, 0, 0) + 1, ts(2026, 1, 1, 0, 5) + 30) == (ts(2026, 1, 1, 0, 1), ts(2026, 1, 1, 0, 6))


def test_params_parse() -> None:
    lim = params.Limits()
    c = params.parse_chart({"from": "2026-03-29", "to": "2026-03-30T00:00:00+02:00", "tz": "Europe/Berlin", "orderId": "3"}, lim)
    assert (c.common.start, c.common.end) == (ts(2026, 3, 29, tz=BERLIN), ts(2026, 3, 29, 22))
    assert c.interval == "5m" and c.common.filter == params.Filter(order_id=3)
    b = params.parse_breakdown("websites", {"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z", "page": "3"}, lim)
    assert (b.limit, b.page, b.sort_by) == (25, 3, "bytes")
    with pytest.raises(params.ParamError) as exc:
        params.parse_chart({"from": "2026-01-01", "to": "2026-03-04T00:00:01"}, lim)
    assert exc.value.field == "to"


PLAN_ZONES = ["UTC", "Europe/Berlin", "Europe/London", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "America/Santiago",
              "Australia/Lord_Howe"]


@pytest.mark.parametrize("zone", PLAN_ZONES)
@pytest.mark.parametrize("step", [60, 300, 900, 3600, 86400])
def test_plan_segments_cover_the_rows_exactly_and_never_straddle_a_bucket(zone: str, step: int) -> None:
    tz = ZoneInfo(zone)
    # Ranges over DST changes (March/April, October), unaligned at both ends.
    for start, end in ((ts(2026, 3, 20, 7, 13, 20), ts(2026, 4, 9, 5, 2)), (ts(2026, 10, 20, 23, 59), ts(2026, 10, 29, 0, 1))):
        if step == 60:
            end = start + 5 * 86400
        p = plan.chart_plan(start, end, step, tz)
        a, b = plan.row_span(start, end)
        segs = p.segments
        assert segs[0].start == a and segs[-1].end == b
        assert all(x.end == y.start for x, y in zip(segs, segs[1:]))
        for seg in segs:
            assert seg.start % seg.level == 0 and seg.end % seg.level == 0
            # Every granule of the segment's table lies inside one bucket: no bucket
            # edge falls strictly inside a granule.
            inside = [e for e in p.edges if seg.start < e < seg.end]
            assert all(e % seg.level == 0 for e in inside), (zone, step, seg)


def test_local_days_of_a_half_hour_zone_read_hour_rollups() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    start, end = ts(2026, 1, 1, tz=kolkata), ts(2026, 3, 1, tz=kolkata)
    p = plan.chart_plan(start, end, plan.DAY, kolkata)
    minutes = sum(s.end - s.start for s in p.segments if s.level == plan.MINUTE)
    # Per local day only its two partial UTC hours (00:00-00:30 and 23:30-24:00 local).
    assert minutes == 59 * 3600
    assert {s.level for s in p.segments} == {plan.MINUTE, plan.HOUR}
    # London: winter days are whole UTC days (day rollups), summer days hours.
    london = ZoneInfo("Europe/London")
    p = plan.chart_plan(ts(2026, 3, 20, tz=london), ts(2026, 4, 10, tz=london), plan.DAY, london)
    assert {s.level for s in p.segments} == {plan.DAY, plan.HOUR}


# (zone, first UTC day, last UTC day) around offset changes: DST in whole hours, in half
# an hour (Lord Howe), at midnight (Santiago, Havana), a skipped day (Apia, 2011-12-30),
# and zones with half- and quarter-hour offsets.
EDGE_CASES = [
    ("Europe/Berlin", (2026, 3, 27), (2026, 3, 31)), ("Europe/Berlin", (2026, 10, 23), (2026, 10, 27)),
    ("America/New_York", (2026, 3, 6), (2026, 3, 10)), ("America/New_York", (2026, 10, 30), (2026, 11, 3)),
    ("Australia/Lord_Howe", (2026, 4, 3), (2026, 4, 7)), ("Australia/Lord_Howe", (2026, 10, 2), (2026, 10, 6)),
    ("America/Santiago", (2026, 4, 3), (2026, 4, 7)), ("America/Santiago", (2026, 9, 4), (2026, 9, 8)),
    ("America/Havana", (2026, 3, 6), (2026, 3, 10)), ("Pacific/Apia", (2011, 12, 28), (2012, 1, 1)),
    ("Asia/Kolkata", (2026, 3, 1), (2026, 3, 3)), ("Asia/Kathmandu", (2026, 3, 1), (2026, 3, 3)),
    ("UTC", (2026, 3, 1), (2026, 3, 3)),
]  # fmt: skip


def local_bucket(t: int, step: int, tz: ZoneInfo) -> tuple[object, ...]:
    """The oracle: which bucket instant t is in, by its local wall clock (and offset, so a
    repeated hour is a bucket of its own)."""
    local = datetime.fromtimestamp(t, tz)
    if step == plan.DAY:
        return (local.date(),)
    minute = (local.hour * 60 + local.minute) // (step // 60) * (step // 60)
    return (local.date(), minute, local.utcoffset())


@pytest.mark.parametrize("zone,first,last", EDGE_CASES)
def test_bucket_edges_equal_local_wall_clock_buckets(zone: str, first: tuple[int, ...], last: tuple[int, ...]) -> None:
    tz = ZoneInfo(zone)
    start, end = ts(*first) + 17 * 60, ts(*last)
    for step in (60, 300, 900, plan.HOUR, plan.DAY):
        # Oracle edges: every minute whose bucket differs from the minute before it.
        expected = []
        t = start - start % 60
        while local_bucket(t - 60, step, tz) == local_bucket(start, step, tz):
            t -= 60
        expected.append(t)
        for m in range(start - start % 60 + 60, end, 60):
            if local_bucket(m, step, tz) != local_bucket(m - 60, step, tz):
                expected.append(m)
        edges = plan.bucket_edges(start, end, step, tz)
        assert [e for e in edges if e < end] == expected, (zone, step)
        assert edges[-1] >= end


@pytest.mark.parametrize("offset_minutes", [0, 330, -180])
def test_fixed_offset_edges_equal_local_wall_clock_buckets(offset_minutes: int) -> None:
    tz = timezone(timedelta(minutes=offset_minutes)) if offset_minutes else plan.UTC
    start, end = ts(2026, 3, 1, 5, 17, 31), ts(2026, 3, 4, 2, 0, 1)
    for step in (60, 300, 900, plan.HOUR, plan.DAY):
        expected = [plan.bucket_floor(start, step, tz)]
        for m in range(start - start % 60 + 60, end, 60):
            if local_bucket(m, step, tz) != local_bucket(m - 60, step, tz):  # type: ignore[arg-type]
                expected.append(m)
        edges = plan.bucket_edges(start, end, step, tz)
        assert [e for e in edges if e < end] == expected and edges[-1] >= end > edges[-2], step
        # the first edge is the earliest instant in start's bucket
        assert local_bucket(expected[0], step, tz) == local_bucket(start, step, tz)  # type: ignore[arg-type]
        assert local_bucket(expected[0] - 1, step, tz) != local_bucket(start, step, tz)  # type: ignore[arg-type]
