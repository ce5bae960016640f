"""The storage interface every backend implements (SQLite now, ClickHouse later).

A backend answers with merged totals; ordering, limits and the response shapes are done
by collector.render, so every backend passes the same API tests.

Contract:
- `ingest` applies a whole batch and records its idempotency key in ONE transaction;
  it returns False (and changes nothing) when the key was already applied. Rows and
  profiles are deltas merged into what is stored (see agent.wire.batch).
- `chart` returns totals per bucket index of the plan (empty buckets absent), with
  `peak` set (when asked for) from concurrency profiles where any exist for the bucket
  and the filter has no domain (a bucket with a peak but no rows is present, counters
  zero), and `latency` filled only when asked for.
- `domains` returns one page of the domains ranked by `DOMAIN_ORDERS[order]` (rows
  `offset` to `offset + limit`; domain "" is never listed) with their totals (count,
  bytes, error_count and first/last seen: what the breakdowns show; the other fields
  may be left 0) and the number of distinct domains; `errors` returns totals per error
  text (with per-domain error counts for at least the candidates for the samples);
  both over the query's range and filter. Ranking and paging belong to the backend
  because a week of a busy fleet holds thousands of domains and a page shows 100.
- Times are UTC epoch seconds; `now` is passed in, a store never reads a clock.
- A `ChartPlan` gives the bucket edges (`edges`, in UTC epoch seconds, already aligned in
  the query's zone) and the query's `start`/`end`; a row of minute m belongs to bucket i
  when edges[i] <= m < edges[i+1] and ceil(start) <= m < ceil(end) (minutes). Its
  `segments` say which UTC minute/hour/day rollup can answer which span without
  straddling a bucket: a hint for backends with such rollups, which a backend that
  buckets rows itself (e.g. with its own time functions) may ignore.
- Every failure of the backend is raised as StoreError (a 503 for the client; the agent
  retries). Nothing else may escape, so a backend's own exception types stay inside it,
  except one: a batch whose content the backend cannot hold (its rows sum past the
  backend's integers) is a WireError (a 400: the agent sets the batch aside instead
  of retrying it forever), and nothing of it is stored.
- The app calls nothing but these methods (tests/collector/conftest.py runs the API
  tests once per backend).
"""

from __future__ import annotations

from typing import Protocol

from agent.wire.batch import Batch
from collector.model import DomainPage, ErrorTotals, Filter, Totals
from collector.plan import ChartPlan


class StoreError(RuntimeError):
    """The backend failed (disk full, corrupt file...): a 503, not the client's fault."""


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ingest(self, batch: Batch, idempotency_key: str | None, now: int) -> bool: ...

    async def chart(
        self, plan: ChartPlan, filt: Filter, *, with_latency: bool = False, with_peaks: bool = False
    ) -> dict[int, Totals]: ...

    async def domains(
        self, start: int, end: int, filt: Filter, *, order: str, limit: int, offset: int = 0
    ) -> DomainPage: ...

    async def errors(self, start: int, end: int, filt: Filter) -> dict[str, ErrorTotals]: ...

    async def size_bytes(self) -> int: ...

    async def retention(self, now: int) -> dict[str, int]: ...

    async def ping(self) -> None: ...
