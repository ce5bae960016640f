"""The ClickHouse schema of the collector, created and migrated by it (versioned).

Strategy
- Minute rows are inserted into `m_in` (engine Null: it keeps nothing) and materialized
  views aggregate every inserted block into three AggregatingMergeTree tables: `m` per
  (minute, user, order, domain, error, fid), `h` per UTC hour and `d` per UTC day
  (without fid), and the narrow rollups t/o/n/e per hour and day (see ROLLUPS). Every counter is an aggregate state, so background merges keep each
  merge rule: sums (Decimal128, so no sum can wrap; reads clamp at 2**63-1 as SQLite
  saturates), max_concurrency/duration_max_ms by max, first/last seen by min/max, the
  latency histogram by sumMap. SummingMergeTree would add the maxima up; 18.16 has no
  SimpleAggregateFunction, hence full states and the Null-table feeding pattern.
- `fid` (flush id) tags the rows of one insert into `m`; `pending` (written before the
  data), `ledger` (written after it: the commit) and `void` (flushes that never
  committed) make a flush count once; see store.py. `p` holds the per-second
  concurrency sums per (level, user, order, minute, fid), four levels per profile.
- Everything time-bound is partitioned by UTC day (intDiv(ts, 86400)), so retention
  and the rebuild of a day's rollups drop whole partitions, and 18.16 (no TTL) works.
- `schema_version` holds the applied migration numbers. Every statement is idempotent
  (IF NOT EXISTS), so a migration cut short by a crash is simply run again.
Pure: statement texts only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from collector.storage.clickhouse.sqltext import ident

SUMS = ("count", "bytes_sent", "bytes_received", "error_count", "duration_ms", "conn_ms")
MAXES = ("max_concurrency", "duration_max_ms")
KEYS = ("ts", "user_id", "order_id", "domain", "error")
_KEY_TYPES = {"ts": "UInt32", "user_id": "UInt64", "order_id": "UInt64", "domain": "String", "error": "String"}
# The columns of m_in, in RowBinary order.
M_IN_COLUMNS = ("minute", *KEYS[1:], *(f"in_{c}" for c in (*SUMS, *MAXES)), "lat_k", "lat_v", "fid")
P_COLUMNS = ("lvl", "user_id", "order_id", "ts", "secs", "fid")


@dataclass(frozen=True)
class Rollup:
    """An hour/day rollup of the minute rows: its key columns (`order` is its ORDER BY),
    and whether it keeps every measure or only the errors breakdown's (error rows only)."""

    name: str
    step: int
    keys: tuple[str, ...]
    order: tuple[str, ...]
    errors_only: bool = False

    @property
    def measures(self) -> tuple[str, ...]:
        return ("error_count",) if self.errors_only else (*SUMS, *MAXES)


def _family(name: str, keys: tuple[str, ...], order: tuple[str, ...], errors_only: bool = False) -> list[Rollup]:
    return [Rollup(f"{name}_{sfx}", step, keys, order, errors_only) for sfx, step in (("h", 3600), ("d", 86400))]


# h/d: the full key, for user filters and filter combinations; the narrow families (as
# in the SQLite backend) answer the common queries from far fewer rows: t no filter,
# o orderId, n domain and the domain breakdowns, e the errors breakdown.
ROLLUPS: tuple[Rollup, ...] = (
    Rollup("h", 3600, KEYS, KEYS),
    Rollup("d", 86400, KEYS, KEYS),
    *_family("t", ("ts",), ("ts",)),
    *_family("o", ("order_id", "ts"), ("order_id", "ts")),
    *_family("n", ("ts", "domain"), ("domain", "ts")),
    *_family("e", ("ts", "error", "domain"), ("ts", "error", "domain"), errors_only=True),
)
ROLLUP = {r.name: r for r in ROLLUPS}
DAY_PARTITIONED = ("m", *(r.name for r in ROLLUPS), "p")


def _state_columns(measures: tuple[str, ...], spans: bool, latency: bool) -> list[str]:
    cols = [f"{c} AggregateFunction(sum, Decimal128(0))" for c in measures if c in SUMS]
    cols += [f"{c} AggregateFunction(max, UInt64)" for c in measures if c in MAXES]
    if spans:
        cols += ["first_ts AggregateFunction(min, UInt32)", "last_ts AggregateFunction(max, UInt32)"]
    if latency:
        cols.append("lat AggregateFunction(sumMap, Array(UInt16), Array(UInt64))")
    return cols


def state_select(r: Rollup, *, from_states: bool) -> str:
    """The SELECT list turning m_in rows (or m's states) into a rollup's states, then
    FROM/WHERE/GROUP BY go after it. The source names its columns apart from the
    target's (`minute`, `in_count`, ...): ClickHouse aliases are global, so
    `sumState(count) AS count` or an alias `ts` next to a minState(ts) would depend on
    how a server version resolves a shadowed name."""
    keys = [f"toUInt32(intDiv(minute, {r.step}) * {r.step}) AS ts" if k == "ts" else k for k in r.keys]
    if from_states:
        vals = [f"sumMergeState(in_{c}) AS {c}" for c in r.measures if c in SUMS]
        vals += [f"maxMergeState(in_{c}) AS {c}" for c in r.measures if c in MAXES]
    else:
        vals = [f"sumState(toDecimal128(in_{c}, 0)) AS {c}" for c in r.measures if c in SUMS]
        vals += [f"maxState(in_{c}) AS {c}" for c in r.measures if c in MAXES]
    vals += ["minState(minute) AS first_ts", "maxState(minute) AS last_ts"]
    if not r.errors_only:
        vals.append("sumMapMergeState(in_lat) AS lat" if from_states else "sumMapState(lat_k, lat_v) AS lat")
    return ", ".join(keys + vals)


def rollup_tail(r: Rollup) -> str:
    """WHERE and GROUP BY of a rollup's SELECT (after its FROM)."""
    where = " WHERE error != ''" if r.errors_only else ""
    return f"{where} GROUP BY {', '.join(r.keys)}"


def state_source(where: str, db: str) -> str:
    """m's rows under the names state_select(from_states=True) reads."""
    cols = ["ts AS minute", "user_id", "order_id", "domain", "error"]
    cols += [f"{c} AS in_{c}" for c in (*SUMS, *MAXES)] + ["lat AS in_lat"]
    return f"SELECT {', '.join(cols)} FROM {ident(db)}.m WHERE {where}"


def _v1(db: str) -> list[str]:
    q = ident(db)
    day = "PARTITION BY intDiv(ts, 86400)"
    keys = "ts UInt32, user_id UInt64, order_id UInt64, domain String, error String"
    in_keys = keys.replace("ts UInt32", "minute UInt32", 1)
    m_states = ", ".join(_state_columns((*SUMS, *MAXES), False, True))
    out = [
        f"CREATE DATABASE IF NOT EXISTS {q}",
        f"CREATE TABLE IF NOT EXISTS {q}.schema_version (version UInt32, at UInt32) ENGINE = MergeTree ORDER BY version",
        f"CREATE TABLE IF NOT EXISTS {q}.m_in ({in_keys}, "
        + ", ".join(f"in_{c} UInt64" for c in (*SUMS, *MAXES))
        + ", lat_k Array(UInt16), lat_v Array(UInt64), fid UInt64) ENGINE = Null",
        f"CREATE TABLE IF NOT EXISTS {q}.m ({keys}, fid UInt64, {m_states}) "
        f"ENGINE = AggregatingMergeTree {day} ORDER BY (ts, user_id, order_id, domain, error, fid)",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {q}.m_mv TO {q}.m AS SELECT minute AS ts, user_id, order_id, domain, error, fid, "
        + ", ".join([f"sumState(toDecimal128(in_{c}, 0)) AS {c}" for c in SUMS] + [f"maxState(in_{c}) AS {c}" for c in MAXES])
        + f", sumMapState(lat_k, lat_v) AS lat FROM {q}.m_in GROUP BY ts, user_id, order_id, domain, error, fid",
    ]
    for r in ROLLUPS:
        cols = [f"{k} {_KEY_TYPES[k]}" for k in r.keys] + _state_columns(r.measures, True, not r.errors_only)
        out.append(
            f"CREATE TABLE IF NOT EXISTS {q}.{r.name} ({', '.join(cols)}) "
            f"ENGINE = AggregatingMergeTree {day} ORDER BY ({', '.join(r.order)})"
        )
        out.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {q}.{r.name}_mv TO {q}.{r.name} AS SELECT "
            f"{state_select(r, from_states=False)} FROM {q}.m_in{rollup_tail(r)}"
        )
    out += [
        f"CREATE TABLE IF NOT EXISTS {q}.p (lvl UInt8, user_id UInt64, order_id UInt64, ts UInt32, "
        f"secs Array(Int64), fid UInt64) ENGINE = MergeTree {day} ORDER BY (lvl, user_id, order_id, ts)",
        f"CREATE TABLE IF NOT EXISTS {q}.pending (fid UInt64, at UInt32, days Array(UInt32)) "
        "ENGINE = MergeTree PARTITION BY intDiv(at, 86400) ORDER BY fid",
        f"CREATE TABLE IF NOT EXISTS {q}.ledger (key String, fid UInt64, at UInt32) "
        "ENGINE = MergeTree PARTITION BY intDiv(at, 86400) ORDER BY key",
        f"CREATE TABLE IF NOT EXISTS {q}.void (fid UInt64, at UInt32, days Array(UInt32)) ENGINE = MergeTree ORDER BY fid",
        f"CREATE TABLE IF NOT EXISTS {q}.void_done (fid UInt64) ENGINE = MergeTree ORDER BY fid",
    ]
    return out


MIGRATIONS: tuple[Callable[[str], list[str]], ...] = (_v1,)
# Every table, for snapshots and size: the ones holding rows (views hold none).
TABLES = ("m", *(r.name for r in ROLLUPS), "p", "pending", "ledger", "void", "void_done", "schema_version")
