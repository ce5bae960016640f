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
- Activity records (batch.activity, the Webshare-compatible API) are appended, never
  merged, in the same transaction as the batch's rows (a duplicate batch appends
  nothing); each gets an int id, unique in the store (0 <= id < 2**63; any unique
  value will do, e.g. a hash of the batch key and index), that breaks ties of equal
  timestamps. `activity_page` returns the first `q.limit` records matching the
  ActivityQuery (collector.model documents the match and the order: (ts_us, id)
  descending) and how many match ignoring `q.after`; `activity_stream` yields every
  matching record after `q.after`, in the same order, in lists of at most `q.limit`,
  reading chunk by chunk (keyset: each chunk is the query with `after` set to the
  (ts_us, id) of the last record of the one before), so a 90-day download never holds
  more than one chunk in memory (`keyset_stream` below is that loop, for any backend).
  `retention` deletes activity older than its own `activity_retention_days`.
- `hourly_stats` sums the per-minute rows (not the activity, which may be a sample)
  per bucket of the plan (same membership rule as `chart`; every bucket with rows is
  present): counters, per-error error_count, per-protocol count, distinct ip_out, the
  latest minute with requests (collector.model.StatsTotals).
- Download tokens are kept by the store (they survive restarts), one per (user_id,
  scope), user_id None meaning every user: `download_token` returns the unexpired one
  (creating it when there is none or it expired at or before `now`, and always with
  `reset`, which invalidates the old key) with key `new_key` (random, made by the
  caller: a store draws no randomness, as it reads no clock), valid for `ttl` seconds
  from `now` (a new token has a new, larger `id`); `find_download_token` returns the token with this key and scope if it
  exists and `now < expire_at`, else None.
- The app calls nothing but these methods (tests/collector/conftest.py runs the API
  tests once per backend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from agent.wire.batch import Activity, Batch
from collector.model import (
    ActivityPage,
    ActivityQuery,
    DomainPage,
    DownloadToken,
    ErrorTotals,
    Filter,
    StatsTotals,
    Totals,
)
from collector.plan import ChartPlan


async def keyset_stream(
    fetch: Callable[[ActivityQuery], Awaitable[list[tuple[int, Activity]]]], q: ActivityQuery
) -> AsyncIterator[list[tuple[int, Activity]]]:
    """`activity_stream` from a backend's page read: every record matching q after
    q.after, chunk by chunk, each `fetch` its own short read (neither memory nor a read
    transaction grows with the window)."""
    after = q.after
    while True:
        items = await fetch(replace(q, after=after))
        if items:
            yield items
        if len(items) < q.limit:
            return
        last_id, last = items[-1]
        after = (last.ts_us, last_id)


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

    # ---- Webshare-compatible API (/api/v2) ----

    async def activity_page(self, q: ActivityQuery) -> ActivityPage: ...

    def activity_stream(self, q: ActivityQuery) -> AsyncIterator[list[tuple[int, Activity]]]: ...

    async def hourly_stats(self, plan: ChartPlan, filt: Filter) -> dict[int, StatsTotals]: ...

    async def download_token(
        self, user_id: int | None, scope: str, now: int, ttl: int, new_key: str, *, reset: bool = False
    ) -> DownloadToken: ...

    async def find_download_token(self, key: str, scope: str, now: int) -> DownloadToken | None: ...
