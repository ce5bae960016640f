import math
import random

import pytest

from agent.wire import histogram as h


@pytest.mark.parametrize(
    "value,index",
    [(0, 0), (0.99, 0), (1, 1), (1.5, 5), (2, 9), (1000, 80), (1024, 81), (3_600_000, 175)],
)
def test_bucket_of_known_values(value: float, index: int) -> None:
    # index = 1 + floor(8 * log2(v)) worked out by hand: log2(1000) = 9.9658 -> 79.7 -> 80; log2(3.6e6) = 21.78 -> 174.2 -> 175
    assert h.bucket_of(value) == index


def test_every_value_lies_in_its_bucket() -> None:
    rng = random.Random(7)
    values = list(range(0, 70_000, 7)) + [rng.uniform(0, 1e9) for _ in range(2000)]
    for v in values:
        i = h.bucket_of(v)
        assert h.bucket_lower(i) <= v < h.bucket_upper(i) or (i == 0 and v < 1)


def test_quantile_relative_error_bound() -> None:
    rng = random.Random(11)
    values = sorted(int(rng.lognormvariate(4, 2)) + 1 for _ in range(5000))
    hist: h.Histogram = {}
    for v in values:
        hist[h.bucket_of(v)] = hist.get(h.bucket_of(v), 0) + 1
    for q in (0.5, 0.95, 0.99):
        exact = values[math.ceil(q * len(values)) - 1]
        got = h.quantile(hist, q)
        assert got is not None
        assert abs(got - exact) / exact <= h.RELATIVE_ERROR + 1e-12


def test_quantile_empty_and_merge() -> None:
    assert h.quantile({}, 0.5) is None
    merged = h.add({1: 2, 5: 1}, {5: 3, 9: 1})
    assert merged == {1: 2, 5: 4, 9: 1}
    assert h.quantile(merged, 1.0) == 2 ** (8.5 / 8)


def test_wire_round_trip_and_errors() -> None:
    assert h.from_wire(h.to_wire({3: 2, 0: 1, 7: 0}), "x") == {0: 1, 3: 2}
    for bad in ([[1]], [[1, -1]], [["a", 1]], {"1": 2}, [[h.MAX_INDEX + 1, 1]]):
        with pytest.raises(ValueError, match=r"^x"):
            h.from_wire(bad, "x")
