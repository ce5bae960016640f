"""The ClickHouse schema of the collector, created and migrated by it (versioned).

Strategy
- Minute rows are inserted into `m_in` (engine Null: it keeps nothing) and materialized
  views aggregate every inserted block into AggregatingMergeTree tables: `m` per
  (minute, user, order, domain, error, fid), the source of truth that a rebuild reads,
  and the rollups r_m / r_h / r_d (without fid) that queries read. Every counter is an aggregate state, so background merges keep each
  merge rule: sums (Decimal128, so no sum can wrap; reads clamp at 2**63-1 as SQLite
  saturates), max_concurrency/duration_max_ms by max, first/last seen by min/max, the
  latency histogram by sumMap. SummingMergeTree would add the maxima up; 18.16 has no
  SimpleAggregateFunction, hence full states and the Null-table feeding pattern.
- r_m, r_h and r_d (per minute, UTC hour, UTC day) hold five rollup families, told apart by `fam` (as the SQLite backend's
  tables h/d, t, o, n, e): FULL keeps every key (user filters, filter combinations), T
  none (no-filter charts), O the order, N the domain (domain charts, the domains
  breakdown), E error and domain of error rows (the errors breakdown); a family's
  unused keys are 0 / ''. One table per level, fed by one view through arrayJoin, so
  a flush writes four parts (m, r_m, r_h, r_d) rather than one per family; the ORDER BY
  (fam, order_id, domain, ts, ...) makes each family's filters a contiguous range.
- `fid` (flush id) tags the rows of one insert into `m`; `pending` (written before the
  data), `ledger` (written after it: the commit) and `void` (flushes that never
  committed) make a flush count once; see store.py. `p` holds the per-second
  concurrency sums per (level, user, order, minute, fid), four levels per profile.
- Everything time-bound is partitioned by UTC day (intDiv(ts, 86400)), so retention
  and the rebuild of a day's rollups drop whole partitions, and 18.16 (no TTL) works.
- Column names of a view's source never equal the names it writes (`minute`,
  `in_user_id`, ...): ClickHouse aliases are global, so `sumState(count) AS count`
  would depend on how a server version resolves a shadowed name.
- `activity` (migration 2) holds the activity records, appended in the flush of their
  batch's rows and tagged with its fid, so a voided flush's records are skipped by
  every read as p's rows are. Partitioned by the UTC day of ts_us (retention drops
  days); ORDER BY (user_id, ts_us, id) makes a user's window one range of the primary
  key, the common query (a user's token sees only its user). `download_tokens` keeps
  every token ever made per (user, scope), user -1 meaning every user; reads take the
  row of the largest id (argMax), so a reset is an insert and needs no merge to win
  (ReplacingMergeTree(id) only drops the superseded rows in the background).
- `s` (migration 3) feeds the /api/v2 hourly stats: the sums they need per (minute,
  user, order, domain, error, protocol, ip_out, fid), filled by its own view from
  m_in (which gains the two strings `m` does not keep). Tagged with fid like `m`, so
  reads skip voided flushes by the in-memory void set and no rebuild ever touches it;
  day-partitioned, so retention drops its days with the rest.
- Migration 4 recreates r_m, r_h and r_d with smaller index granules (GRANULARITY) and
  rebuilds every day of them from m; a narrow family's query then deserializes the
  latency states of far fewer rows it does not want.
- `schema_version` holds the applied migration numbers. Every statement is idempotent
  (IF NOT EXISTS), so a migration cut short by a crash is simply run again.
Pure: statement texts only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from collector.storage.clickhouse.sqltext import ident

SUMS = ("count", "bytes_sent", "bytes_received", "error_count", "duration_ms", "conn_ms")
MAXES = ("max_concurrency", "duration_max_ms")
KEYS = ("ts", "user_id", "order_id", "domain", "error")
# The columns of m_in, in RowBinary order.
M_IN_COLUMNS = ("minute", "in_user_id", "in_order_id", "in_domain", "in_error",
                *(f"in_{c}" for c in (*SUMS, *MAXES)), "lat_k", "lat_v", "fid", "in_protocol", "in_ip_out")
P_COLUMNS = ("lvl", "user_id", "order_id", "ts", "secs", "fid")

# Rollup families (the `fam` column of r_h and r_d) and the keys each keeps.
FULL, T, O, N, E = 0, 1, 2, 3, 4
FAMILY_KEYS: dict[int, tuple[str, ...]] = {
    FULL: ("user_id", "order_id", "domain", "error"),
    T: (),
    O: ("order_id",),
    N: ("domain",),
    E: ("domain", "error"),
}
ROLLUP_TABLES = {60: "r_m", 3600: "r_h", 86400: "r_d"}
DAY_PARTITIONED = ("m", *ROLLUP_TABLES.values(), "p", "s")
# The sums of `s` (a subset of SUMS: what StatsTotals reports).
STATS_SUMS = ("count", "bytes_sent", "bytes_received", "error_count", "conn_ms")


def _keep(key: str, zero: str) -> str:
    fams = [str(f) for f, keys in FAMILY_KEYS.items() if key in keys]
    return f"if(fam IN ({', '.join(fams)}), in_{key}, {zero}) AS {key}"


def rollup_select(step: int, *, from_states: bool) -> str:
    """SELECT ... GROUP BY turning m_in rows (or, for a rebuild, m's states under the
    same in_* names) into one level's rollup rows of every family; FROM goes at {src}."""
    vals = []
    for c in SUMS:
        vals.append(f"sumMergeState(in_{c}) AS {c}" if from_states else f"sumState(toDecimal128(in_{c}, 0)) AS {c}")
    for c in MAXES:
        vals.append(f"maxMergeState(in_{c}) AS {c}" if from_states else f"maxState(in_{c}) AS {c}")
    vals += ["minState(minute) AS first_ts", "maxState(minute) AS last_ts"]
    vals.append("sumMapMergeState(in_lat) AS lat" if from_states else "sumMapState(lat_k, lat_v) AS lat")
    fams = ", ".join(str(f) for f in FAMILY_KEYS)
    return (
        f"SELECT arrayJoin([{fams}]) AS fam, toUInt32(intDiv(minute, {step}) * {step}) AS ts, "
        f"{_keep('user_id', '0')}, {_keep('order_id', '0')}, {_keep('domain', chr(39) * 2)}, {_keep('error', chr(39) * 2)}, "
        f"{', '.join(vals)} FROM {{src}} WHERE fam != {E} OR in_error != '' "
        "GROUP BY fam, ts, user_id, order_id, domain, error"
    )


def state_source(where: str, db: str) -> str:
    """m's rows under the names rollup_select(from_states=True) reads."""
    cols = ["ts AS minute", "user_id AS in_user_id", "order_id AS in_order_id", "domain AS in_domain", "error AS in_error"]
    cols += [f"{c} AS in_{c}" for c in (*SUMS, *MAXES)] + ["lat AS in_lat"]
    return f"(SELECT {', '.join(cols)} FROM {ident(db)}.m WHERE {where})"


def _states() -> str:
    cols = [f"{c} AggregateFunction(sum, Decimal128(0))" for c in SUMS]
    cols += [f"{c} AggregateFunction(max, UInt64)" for c in MAXES]
    return ", ".join(cols) + ", "


_LAT = "lat AggregateFunction(sumMap, Array(UInt16), Array(UInt64))"


_KEYS_DDL = "ts UInt32, user_id UInt64, order_id UInt64, domain String, error String"


def _rollup_table(db: str, name: str, granularity: int) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {ident(db)}.{name} (fam UInt8, {_KEYS_DDL}, {_states()}"
        f"first_ts AggregateFunction(min, UInt32), last_ts AggregateFunction(max, UInt32), {_LAT}) "
        f"ENGINE = AggregatingMergeTree PARTITION BY intDiv(ts, 86400) ORDER BY (fam, order_id, domain, ts, user_id, error) "
        f"SETTINGS index_granularity = {granularity}"
    )


def _rollup_view(db: str, step: int, name: str) -> str:
    q = ident(db)
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {q}.{name}_mv TO {q}.{name} AS "
        + rollup_select(step, from_states=False).replace("{src}", f"{q}.m_in")
    )


def _v1(db: str) -> list[list[str]]:
    q = ident(db)
    day = "PARTITION BY intDiv(ts, 86400)"
    keys = _KEYS_DDL
    tables = [
        f"CREATE TABLE IF NOT EXISTS {q}.schema_version (version UInt32, at UInt32) ENGINE = MergeTree ORDER BY version",
        f"CREATE TABLE IF NOT EXISTS {q}.m_in (minute UInt32, in_user_id UInt64, in_order_id UInt64, in_domain String, "
        "in_error String, " + ", ".join(f"in_{c} UInt64" for c in (*SUMS, *MAXES))
        + ", lat_k Array(UInt16), lat_v Array(UInt64), fid UInt64) ENGINE = Null",
        f"CREATE TABLE IF NOT EXISTS {q}.m ({keys}, fid UInt64, {_states()}{_LAT}) "
        f"ENGINE = AggregatingMergeTree {day} ORDER BY (ts, user_id, order_id, domain, error, fid)",
    ]
    views = [
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {q}.m_mv TO {q}.m AS SELECT minute AS ts, in_user_id AS user_id, "
        "in_order_id AS order_id, in_domain AS domain, in_error AS error, fid, "
        + ", ".join([f"sumState(toDecimal128(in_{c}, 0)) AS {c}" for c in SUMS] + [f"maxState(in_{c}) AS {c}" for c in MAXES])
        + f", sumMapState(lat_k, lat_v) AS lat FROM {q}.m_in GROUP BY ts, user_id, order_id, domain, error, fid",
    ]
    for step, name in ROLLUP_TABLES.items():
        tables.append(_rollup_table(db, name, 1024))
        views.append(_rollup_view(db, step, name))
    tables += [
        f"CREATE TABLE IF NOT EXISTS {q}.p (lvl UInt8, user_id UInt64, order_id UInt64, ts UInt32, "
        f"secs Array(Int64), fid UInt64) ENGINE = MergeTree {day} ORDER BY (lvl, user_id, order_id, ts)",
        f"CREATE TABLE IF NOT EXISTS {q}.pending (fid UInt64, at UInt32, days Array(UInt32)) "
        "ENGINE = MergeTree PARTITION BY intDiv(at, 86400) ORDER BY fid",
        f"CREATE TABLE IF NOT EXISTS {q}.ledger (key String, fid UInt64, at UInt32) "
        "ENGINE = MergeTree PARTITION BY intDiv(at, 86400) ORDER BY key",
        f"CREATE TABLE IF NOT EXISTS {q}.void (fid UInt64, at UInt32, days Array(UInt32)) ENGINE = MergeTree ORDER BY fid",
        f"CREATE TABLE IF NOT EXISTS {q}.void_done (fid UInt64) ENGINE = MergeTree ORDER BY fid",
    ]
    return [[f"CREATE DATABASE IF NOT EXISTS {q}"], tables, views]


# The activity table's columns, in RowBinary order, with their types (agent.wire.batch
# ACTIVITY_FIELDS after the store's id and the flush id).
ACTIVITY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "UInt64"), ("fid", "UInt64"), ("ts_us", "UInt64"), ("protocol", "String"), ("duration_ms", "UInt64"),
    ("handshake_ms", "Nullable(UInt64)"), ("tunnel_ms", "Nullable(UInt64)"), ("error", "String"),
    ("auth_username", "Nullable(String)"), ("proxy_address", "Nullable(String)"), ("client_address", "String"),
    ("ip_address", "Nullable(String)"), ("hostname", "Nullable(String)"), ("domain", "Nullable(String)"),
    ("port", "Nullable(UInt16)"), ("proxy_port", "Nullable(UInt16)"), ("listen_address", "Nullable(String)"),
    ("listen_port", "Nullable(UInt16)"), ("user_id", "UInt64"), ("order_id", "UInt64"), ("worker", "String"),
    ("bytes_sent", "UInt64"), ("bytes_received", "UInt64"),
)  # fmt: skip
DAY_US = 86400 * 1_000_000


def _v2(db: str) -> list[list[str]]:
    q = ident(db)
    cols = ", ".join(f"{name} {typ}" for name, typ in ACTIVITY_COLUMNS)
    return [[
        f"CREATE TABLE IF NOT EXISTS {q}.activity ({cols}) ENGINE = MergeTree "
        f"PARTITION BY intDiv(ts_us, {DAY_US}) ORDER BY (user_id, ts_us, id)",
        f"CREATE TABLE IF NOT EXISTS {q}.download_tokens (user_id Int64, scope String, id UInt64, key String, "
        "key_sha256 String, created_at UInt32, expire_at UInt32) ENGINE = ReplacingMergeTree(id) ORDER BY (user_id, scope)",
    ]]  # fmt: skip


# 18.16 has no ADD COLUMN IF NOT EXISTS: the store runs a statement of this shape only
# when system.columns lacks the column (added_column), which keeps a rerun idempotent.
_ADD_COLUMN = re.compile(r"ALTER TABLE `([A-Za-z0-9_]+)`\.([A-Za-z0-9_]+) ADD COLUMN ([A-Za-z0-9_]+) [A-Za-z0-9()]+")


def add_column(db: str, table: str, column: str, ch_type: str) -> str:
    return f"ALTER TABLE {ident(db)}.{table} ADD COLUMN {column} {ch_type}"


def added_column(statement: str) -> tuple[str, str, str] | None:
    """(database, table, column) of an add_column statement, else None."""
    m = _ADD_COLUMN.fullmatch(statement)
    return (m[1], m[2], m[3]) if m else None


def _v3(db: str) -> list[list[str]]:
    q = ident(db)
    # m_in's new columns come last: inserts name their columns, and the views made
    # before them never read them. Null keeps no rows, so the ALTER touches no data.
    alter = [add_column(db, "m_in", c, "String") for c in ("in_protocol", "in_ip_out")]
    states = ", ".join(f"{c} AggregateFunction(sum, Decimal128(0))" for c in STATS_SUMS)
    table = (
        f"CREATE TABLE IF NOT EXISTS {q}.s (ts UInt32, user_id UInt64, order_id UInt64, domain String, error String, "
        f"protocol String, ip_out String, fid UInt64, {states}) ENGINE = AggregatingMergeTree "
        "PARTITION BY intDiv(ts, 86400) ORDER BY (ts, user_id, order_id, domain, error, protocol, ip_out, fid)"
    )
    view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {q}.s_mv TO {q}.s AS SELECT minute AS ts, in_user_id AS user_id, "
        "in_order_id AS order_id, in_domain AS domain, in_error AS error, in_protocol AS protocol, "
        "in_ip_out AS ip_out, fid, " + ", ".join(f"sumState(toDecimal128(in_{c}, 0)) AS {c}" for c in STATS_SUMS)
        + f" FROM {q}.m_in GROUP BY ts, user_id, order_id, domain, error, protocol, ip_out, fid"
    )
    return [alter, [table], [view]]


# Rows per granule of the rollups (migration 4). A read deserializes the latency state
# of every row of each granule it touches, and a narrow family's rows (one per day and
# key in r_d, 24 in r_h) sit in every day's part next to the full family's many: at
# 1024 a 30-day domain chart read 30 granules of other keys' histograms (about 180 ms
# at 20 M minute rows), at 64 a tenth of that. r_m holds 1,440 rows per key and day.
GRANULARITY = {"r_m": 256, "r_h": 64, "r_d": 64}


def recreate_rollups(db: str, names: Iterable[str]) -> list[list[str]]:
    """Migration 4's phases for the rollup tables `names`: recreated with GRANULARITY
    (index_granularity cannot be altered). Views first (no insert may reach a dropped
    table), then the tables, which are derived data: the store rebuilds every day of
    them from m before it records the version (RECREATE_ROLLUPS), so a rerun after a crash
    simply starts over. The store passes only the tables it made itself at another
    granularity: one an operator created (a Replicated engine, say) is left alone."""
    q = ident(db)
    names = [n for n in ROLLUP_TABLES.values() if n in set(names)]
    steps = {name: step for step, name in ROLLUP_TABLES.items()}
    return [
        [f"DROP TABLE IF EXISTS {q}.{name}_mv" for name in names],
        [f"DROP TABLE IF EXISTS {q}.{name}" for name in names],
        [_rollup_table(db, name, GRANULARITY[name]) for name in names],
        [_rollup_view(db, steps[name], name) for name in names],
    ]


def _v4(db: str) -> list[list[str]]:
    return recreate_rollups(db, ROLLUP_TABLES.values())


def stale_rollup(engine: str, create_query: str, name: str) -> bool:
    """Whether migration 4 recreates rollup table `name`, from its system.tables row:
    only the collector's own engine at a granularity other than GRANULARITY's."""
    found = re.search(r"index_granularity = (\d+)", create_query)
    return engine == "AggregatingMergeTree" and (found is None or int(found[1]) != GRANULARITY[name])


# A migration is a list of phases run in order (the database, its tables, the views
# over them).
MIGRATIONS: tuple[Callable[[str], list[list[str]]], ...] = (_v1, _v2, _v3, _v4)
# The migration whose phases the store builds with recreate_rollups from the tables it
# finds (stale_rollup), instead of MIGRATIONS' default (every rollup table), and after
# whose statements it rebuilds every day of the rollups from m (skipping voided
# flushes), before it records the version.
RECREATE_ROLLUPS = 4
# Every table, for snapshots and size: the ones holding rows (views hold none).
TABLES = ("m", *ROLLUP_TABLES.values(), "p", "pending", "ledger", "void", "void_done", "schema_version",
          "activity", "download_tokens", "s")
