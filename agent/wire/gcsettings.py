"""Cyclic garbage-collector settings for a long-running service (agent or collector).

Why: the pipeline makes about one container per log line that lives until the next
flush (an aggregation row: a list and a histogram dict) and many short-lived ones
(records, wire objects), and none of them forms a reference cycle. With CPython's
default thresholds (700, 10, 10) the collector runs every few hundred lines and keeps
re-walking the growing aggregation state and everything built at start (modules, the
Public Suffix List, memo dicts): about a fifth of the agent's CPU on a replay, for
nothing. Reference counting frees all of it anyway.

The collector is alike: a breakdown query builds one totals object per domain (thousands)
and an ingest decodes one row object per row, all acyclic and freed after the answer;
with the default thresholds full collections re-walk everything built at start
(aiohttp, the OpenAPI document, the store's dictionaries) while they are alive.

Rule: call `settle()` once, after start-up is done (config read, resolvers loaded, the
store open), before serving. It collects once, freezes what exists (moved to the permanent
generation: never walked again), and makes young-generation passes rare. Cycles made
later are still collected, only later. Process-wide, so only entry points call it
(the agent's service, the collector's serve, the benchmark replaying the agent's
pipeline), never library code.
"""

from __future__ import annotations

import gc

# gen0 runs after this many more container allocations than frees: about one flush
# interval's worth of new aggregation rows on a busy proxy
GEN0_THRESHOLD = 100_000
GEN1_THRESHOLD = 50
GEN2_THRESHOLD = 50


def settle() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
