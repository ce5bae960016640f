"""Prometheus text exposition (format 0.0.4): counters, gauges and histograms with labels.

Each service declares all of its metrics in one module (agent.metrics,
collector.metrics) on a `Registry`, and serves `registry.render()` at /metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The `result` values of both services' SIGHUP reload counters (agent:
# proxymeter_agent_reloads_total, collector: proxymeter_collector_config_reloads_total):
# one vocabulary, so one alert rule or dashboard query fits both. Both series are there
# (at 0) from the start, so rate() and absent-alerts work before the first reload.
RELOAD_APPLIED = "applied"
RELOAD_REFUSED = "refused"
RELOAD_RESULTS = (RELOAD_APPLIED, RELOAD_REFUSED)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)

    def _labels(self, values: LabelValues, extra: str = "") -> str:
        parts = [f'{n}="{_escape(v)}"' for n, v in zip(self.label_names, values)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""

    def samples(self) -> list[str]:
        raise NotImplementedError

    def render(self) -> str:
        head = f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"
        return head + "".join(line + "\n" for line in self.samples())


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self.values: dict[LabelValues, float] = {} if labels else {(): 0}

    def inc(self, amount: float = 1, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0)

    def samples(self) -> list[str]:
        return [f"{self.name}{self._labels(k)} {_fmt(v)}" for k, v in sorted(self.values.items())]


class Gauge(Counter):
    """A value that goes up and down; `fn`, when given, is read at render time."""

    kind = "gauge"

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str] = (), fn: Callable[[], float] | None = None
    ) -> None:
        super().__init__(name, help_text, labels)
        self.fn = fn

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def remove(self, *labels: str) -> None:
        self.values.pop(labels, None)

    def samples(self) -> list[str]:
        if self.fn is not None:
            self.values[()] = self.fn()
        return super().samples()


DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self.series: dict[LabelValues, list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, value: float, *labels: str) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                s[i] += 1
        s[-2] += 1
        s[-1] += value

    def samples(self) -> list[str]:
        out = []
        for key, s in sorted(self.series.items()):
            for bound, n in zip(self.buckets, s):
                le = 'le="' + _fmt(bound) + '"'
                out.append(f"{self.name}_bucket{self._labels(key, le)} {_fmt(n)}")
            inf = 'le="+Inf"'
            out.append(f"{self.name}_bucket{self._labels(key, inf)} {_fmt(s[-2])}")
            out.append(f"{self.name}_sum{self._labels(key)} {_fmt(s[-1])}")
            out.append(f"{self.name}_count{self._labels(key)} {_fmt(s[-2])}")
        return out


_M = TypeVar("_M", bound=_Metric)


class Registry:
    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric: _M) -> _M:
        self.metrics.append(metric)
        return metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        return self.add(Counter(name, help_text, labels))

    def gauge(
        self, name: str, help_text: str, labels: Sequence[str] = (), fn: Callable[[], float] | None = None
    ) -> Gauge:
        return self.add(Gauge(name, help_text, labels, fn))

    def histogram(
        self, name: str, help_text: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> Histogram:
        return self.add(Histogram(name, help_text, labels, buckets))

    def render(self) -> str:
        return "".join(m.render() for m in self.metrics)


