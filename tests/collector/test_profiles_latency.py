"""Cross-worker concurrency peaks from profiles, and latency quantiles from histograms."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from agent.wire import histogram
from tests.collector.conftest import Api

UTC = timezone.utc
DAY = {"from": "2026-03-15T00:00:00Z", "to": "2026-03-16T00:00:00Z"}


def make_profiles(seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for minute in ("10:00", "10:01", "10:59", "11:00", "13:30"):
        for user, order in ((42, 1), (42, 2), (7, 1)):
            for worker in ("w1", "w2", "w3"):
                if rnd.random() < 0.2:
                    continue
                out.append(
                    {
                        "ts": f"2026-03-15 {minute}:00",
                        "user_id": user,
                        "order_id": order,
                        "worker": worker,
                        "active": [rnd.randrange(0, 6) for _ in range(60)],
                    }
                )
    return out


def minute_of(p: dict[str, Any]) -> int:
    return int(datetime.strptime(p["ts"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())


def oracle_peaks(profiles: list[dict[str, Any]], step: int, **filt: int) -> dict[str, int]:
    per_second: dict[int, int] = defaultdict(int)
    for p in profiles:
        if any(p[k] != v for k, v in filt.items()):
            continue
        for i, n in enumerate(p["active"]):
            per_second[minute_of(p) + i] += n
    peaks: dict[str, int] = {}
    for sec, n in per_second.items():
        b = datetime.fromtimestamp(sec - sec % step, UTC).strftime("%Y-%m-%d %H:%M:%S")
        peaks[b] = max(peaks.get(b, 0), n)
    return peaks


async def test_peak_is_max_over_seconds_of_sum_over_workers(api: Api) -> None:
    first, late = make_profiles(1), make_profiles(2)
    # Rows exist for some minutes only; their own max_concurrency is low.
    rows = [
        {"ts": "2026-03-15 10:00:00", "user_id": 42, "order_id": 1, "domain": "a.com", "count": 3, "max_concurrency": 1},
        {"ts": "2026-03-15 11:00:00", "user_id": 7, "order_id": 1, "domain": "b.com", "count": 2, "max_concurrency": 1},
    ]
    await api.ingest({"logs": rows, "concurrency": first})
    # A second batch of deltas for the same minutes (late tunnels, other agents).
    await api.ingest({"logs": [], "concurrency": late})
    everything = first + late
    for filt, params in (
        ({}, {}),
        ({"user_id": 42}, {"userId": 42}),
        ({"order_id": 1}, {"orderId": 1}),
        ({"user_id": 42, "order_id": 2}, {"userId": 42, "orderId": 2}),
    ):
        for interval, step in (("1m", 60), ("1h", 3600), ("1d", 86400)):
            expect = oracle_peaks(everything, step, **filt)
            got = await api.get("/analytics/concurrency", **DAY, interval=interval, **params)
            assert {d["bucket"]: int(d["max_concurrency"]) for d in got["data"]} == expect, (filt, interval)
    # Minutes with a profile but no row are present with a zero count.
    got = await api.get("/analytics/concurrency", **DAY, interval="1m")
    counts = {d["bucket"]: d["total_count"] for d in got["data"]}
    assert counts["2026-03-15 10:00:00"] == "3" and counts["2026-03-15 13:30:00"] == "0"
    # With a domain filter, profiles (which carry no domain) are not used: rows' own max.
    got = await api.get("/analytics/concurrency", **DAY, interval="1h", domain="a.com")
    assert got["data"] == [
        {"bucket": "2026-03-15 10:00:00", "max_concurrency": "1", "total_count": "3", "avg_concurrency": "0.000"}
    ]


async def test_avg_concurrency_is_conn_ms_over_bucket_length(api: Api) -> None:
    rows = [
        {"ts": "2026-03-15 10:00:00", "domain": "a.com", "count": 1, "conn_ms": 90_000},
        {"ts": "2026-03-15 10:01:00", "domain": "a.com", "count": 1, "conn_ms": 30_000},
        {"ts": "2026-03-15 10:59:00", "domain": "b.com", "count": 1, "conn_ms": 60_000},
    ]
    await api.ingest({"logs": rows})
    got = await api.get("/analytics/concurrency", **DAY, interval="1m")
    assert [d["avg_concurrency"] for d in got["data"]] == ["1.500", "0.500", "1.000"]
    got = await api.get("/analytics/concurrency", **DAY, interval="1h")
    assert got["data"][0]["avg_concurrency"] == f"{180_000 / 3_600_000:.3f}"
    # A bucket clipped by from/to is divided by its clipped length (10:00..10:30).
    got = await api.get("/analytics/concurrency", **{"from": "2026-03-15T10:00:00Z", "to": "2026-03-15T10:30:00Z"}, interval="1h")
    assert got["data"][0]["avg_concurrency"] == f"{120_000 / 1_800_000:.3f}"
    # An unaligned from: a row is in the range by its minute's start, so 10:00:30..10:02
    # holds only minute 10:01's row (30,000 conn-ms), over one minute, not 90 s.
    got = await api.get("/analytics/concurrency", **{"from": "2026-03-15T10:00:30Z", "to": "2026-03-15T10:02:00Z"}, interval="1h")
    assert got["data"] == [
        {"bucket": "2026-03-15 10:00:00", "max_concurrency": "0", "total_count": "1", "avg_concurrency": "0.500"}
    ]


def true_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


async def test_latency_quantiles_from_merged_histograms(api: Api) -> None:
    rnd = random.Random(5)
    samples: dict[str, list[int]] = defaultdict(list)
    batches = []
    for b in range(6):
        rows = []
        for n in range(30):
            hour = rnd.choice([9, 10])
            durations = [int(rnd.lognormvariate(5, 1.2)) for _ in range(rnd.randrange(1, 40))]
            samples[f"2026-03-15 {hour:02d}:00:00"] += durations
            hist: dict[int, int] = defaultdict(int)
            for d in durations:
                hist[histogram.bucket_of(d)] += 1
            rows.append(
                {
                    "ts": f"2026-03-15 {hour:02d}:{rnd.randrange(60):02d}:00",
                    "user_id": rnd.choice([1, 2]),
                    "domain": rnd.choice(["a.com", "b.com"]),
                    "count": len(durations),
                    "duration_ms": sum(durations),
                    "duration_max_ms": max(durations),
                    "latency": sorted([k, v] for k, v in hist.items()),
                }
            )
        batches.append(rows)
    for i, rows in enumerate(batches):
        await api.ingest({"logs": rows}, key=f"lat:{i}")
    got = await api.get("/analytics/latency", **DAY, interval="1h")
    assert [d["bucket"] for d in got["data"]] == sorted(samples)
    for d in got["data"]:
        values = samples[d["bucket"]]
        assert d["max"] == str(max(values))
        assert d["samples"] == str(len(values)) == d["total_count"]
        for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            true = true_quantile(values, q)
            reported = float(d[key])
            # Within the scheme's stated relative error of the true quantile (>= 1 ms).
            assert abs(reported - true) <= histogram.RELATIVE_ERROR * true + 1e-3, (key, reported, true)
    # The whole day, read from the day rollup, equals the quantiles of all samples.
    day = (await api.get("/analytics/latency", **DAY, interval="1d"))["data"][0]
    allv = [v for vs in samples.values() for v in vs]
    assert day["max"] == str(max(allv))
    true = true_quantile(allv, 0.99)
    assert abs(float(day["p99"]) - true) <= histogram.RELATIVE_ERROR * true + 1e-3
