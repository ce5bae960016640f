"""The SQLite side of the Webshare-compatible API: activity records, hourly stats from
the minute rows, download tokens. Plain functions over a sqlite3 connection; SQLiteStore
(collector.storage.sqlite) calls them on its writer or in a reader's snapshot, and owns
the transactions.

- `activity`: one row per record, appended in the ingest transaction (a duplicate batch
  never gets here). Its rowid `id` is the record's id: unique, ascending in insertion
  order (SQLite hands out max(rowid) + 1, and retention only deletes from the old end).
  Strings are stored as text, not through the `strings` dictionary: records are many
  and mostly distinct (hostnames, client addresses), and a search reads them with
  instr() anyway. Indexes (ts_us), (user_id, ts_us) and
  (order_id, ts_us) each end in the rowid, so "newest first, ties by id" is an index
  walk for no filter, a user filter or an order filter; a page reads limit rows plus
  what the other filters skip.
- Hourly stats read `m` (complete, where activity may be sampled), grouped in SQL by the
  coarsest grain dividing every bucket edge (an hour, or 30/15/1 minutes in zones with
  such offsets), so Python sees one row per (grain, error) or (grain, protocol) or
  (grain, ip_out), not one per minute row.
- `download_tokens`: one row per (user, scope), user -1 meaning every user (an admin's
  token: SQLite's UNIQUE treats NULLs as distinct). Keys are looked up by their SHA-256,
  so the B-tree comparison reveals nothing about the key itself.
"""

from __future__ import annotations

import hashlib
import sqlite3
from bisect import bisect_right
from operator import attrgetter
from typing import Any

from agent.wire.batch import ACTIVITY_FIELDS, Activity
from agent.wire.errorcodes import ERRORS
from collector.model import ActivityPage, ActivityQuery, DownloadToken, StatsTotals
from collector.plan import HOUR, ChartPlan, row_span, stats_grain

# Appended to collector.storage.sqlite.MIGRATIONS (its number is wherever it lands there).
MIGRATION = """
CREATE TABLE activity (
    id INTEGER PRIMARY KEY,
    ts_us INTEGER NOT NULL, protocol TEXT NOT NULL, duration_ms INTEGER NOT NULL,
    handshake_ms INTEGER, tunnel_ms INTEGER, error TEXT NOT NULL, auth_username TEXT,
    proxy_address TEXT, client_address TEXT NOT NULL, ip_address TEXT, hostname TEXT, domain TEXT,
    port INTEGER, proxy_port INTEGER, listen_address TEXT, listen_port INTEGER,
    user_id INTEGER NOT NULL, order_id INTEGER NOT NULL, worker TEXT NOT NULL,
    bytes_sent INTEGER NOT NULL, bytes_received INTEGER NOT NULL
);
CREATE INDEX activity_time ON activity(ts_us);
CREATE INDEX activity_user ON activity(user_id, ts_us);
CREATE INDEX activity_order ON activity(order_id, ts_us);
CREATE TABLE download_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_sha256 BLOB NOT NULL UNIQUE, key TEXT NOT NULL, scope TEXT NOT NULL,
    user_id INTEGER NOT NULL, created_at INTEGER NOT NULL, expire_at INTEGER NOT NULL,
    UNIQUE (user_id, scope)
);
CREATE INDEX download_tokens_expiry ON download_tokens(expire_at);
"""

# SQLiteStore.retention deletes old activity an hour of records per transaction, so
# ingests interleave.
RETENTION_CHUNK_US = HOUR * 1_000_000

_COLS = ", ".join(ACTIVITY_FIELDS)
_INSERT = f"INSERT INTO activity ({_COLS}) VALUES ({', '.join('?' * len(ACTIVITY_FIELDS))})"
_ROW = attrgetter(*ACTIVITY_FIELDS)  # one C call per record: the insert's parameter tuple
_SEARCHED = ("hostname", "domain", "ip_address", "client_address", "auth_username")
_KNOWN_CODES = tuple(ERRORS)
_ALL_USERS = -1


def insert(con: sqlite3.Connection, records: list[Activity]) -> None:
    """Append a batch's records (inside the caller's transaction)."""
    if records:
        con.executemany(_INSERT, map(_ROW, records))


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _where(q: ActivityQuery, with_cursor: bool) -> tuple[str, list[Any]]:
    # ONE upper bound on ts_us (the window's end or the cursor's time, whichever is
    # lower): given two, SQLite may take the window's end as the index range and skip
    # every record above the cursor again on each page, so a download's chunk k would
    # cost k chunks.
    upper = q.end_us
    cursor = with_cursor and q.after is not None
    if cursor and q.after is not None:
        upper = min(upper, q.after[0])
    parts = ["ts_us >= ?", "ts_us <= ?"]
    args: list[Any] = [q.start_us, upper]
    if q.user_id is not None:
        parts.append("user_id = ?")
        args.append(q.user_id)
    if q.order_id is not None:
        parts.append("order_id = ?")
        args.append(q.order_id)
    if q.search is not None:
        # lower() and instr() without ICU: ASCII case folding, as ActivityQuery says.
        alts = [f"instr(lower({c}), ?) > 0" for c in _SEARCHED]
        args += [q.search] * len(_SEARCHED)
        if q.search_codes:
            alts.append(f"error IN ({_marks(len(q.search_codes))})")
            args += q.search_codes
        alts.append(f"(error != '' AND error NOT IN ({_marks(len(_KNOWN_CODES))}) AND instr(lower(error), ?) > 0)")
        args += [*_KNOWN_CODES, q.search]
        parts.append("(" + " OR ".join(alts) + ")")
    if q.errors is not None:
        if not q.errors:
            parts.append("0")
        else:
            parts.append(f"error IN ({_marks(len(q.errors))})")
            args += q.errors
    if q.any_error:
        parts.append("error != ''")
    if q.bytes_min is not None:
        parts.append("bytes_sent + bytes_received >= ?")
        args.append(q.bytes_min)
    if q.bytes_max is not None:
        parts.append("bytes_sent + bytes_received <= ?")
        args.append(q.bytes_max)
    if cursor and q.after is not None:
        # (ts_us, id) < after, spelled out: the ts_us part is the range bound above.
        ts, rid = q.after
        parts.append("(ts_us < ? OR id < ?)")
        args += [ts, rid]
    return " AND ".join(parts), args


def _items(con: sqlite3.Connection, q: ActivityQuery) -> list[tuple[int, Activity]]:
    where, args = _where(q, with_cursor=True)
    sql = f"SELECT id, {_COLS} FROM activity WHERE {where} ORDER BY ts_us DESC, id DESC LIMIT ?"
    return [(row[0], Activity(*row[1:])) for row in con.execute(sql, (*args, q.limit))]


def page(con: sqlite3.Connection, q: ActivityQuery) -> ActivityPage:
    """One page and the count, in one read snapshot (the caller's)."""
    items = _items(con, q)
    where, args = _where(q, with_cursor=False)
    count = con.execute(f"SELECT count(*) FROM activity WHERE {where}", args).fetchone()[0]
    return ActivityPage(items, count)


def chunk(con: sqlite3.Connection, q: ActivityQuery) -> list[tuple[int, Activity]]:
    return _items(con, q)


# ---- hourly stats from the minute rows -----------------------------------------------


_STATS_COLUMNS = "ts, user_id, order_id, domain, error, rest, count, bytes_sent, bytes_received, error_count, conn_ms"


def hourly_stats(con: sqlite3.Connection, plan: ChartPlan, filter_sql: str, filter_args: list[int]) -> dict[int, StatsTotals]:
    """Per bucket of the plan, the sums of the minute rows: the folded ones (`m`) and
    those still staged (`stage`, same columns), read in the caller's one snapshot, so
    every acknowledged row counts once. `filter_sql` / `filter_args` are the query
    filter's " AND ..." terms (SQLiteStore._where)."""
    out: dict[int, StatsTotals] = {}
    args = filter_args
    a, b = row_span(plan.start, plan.end)
    where = "ts >= ? AND ts < ?" + filter_sql
    source = (f"(SELECT {_STATS_COLUMNS} FROM m WHERE {where} "
              f"UNION ALL SELECT {_STATS_COLUMNS} FROM stage WHERE {where}) AS x")  # fmt: skip
    params = (a, b, *args) * 2
    g = stats_grain(plan.edges)
    edges = plan.edges

    def bucket(t: int) -> StatsTotals:
        i = bisect_right(edges, t) - 1
        s = out.get(i)
        if s is None:
            s = out[i] = StatsTotals()
        return s

    sql = (
        f"SELECT x.ts - x.ts % {g} AS t, e.s, sum(count), sum(bytes_sent), sum(bytes_received), sum(error_count), "
        f"sum(conn_ms), max(CASE WHEN count > 0 THEN x.ts END) FROM {source} JOIN strings AS e ON e.id = x.error "
        f"GROUP BY t, x.error"
    )
    for t, err, c, bs, br, ec, cm, last in con.execute(sql, params):
        s = bucket(t)
        s.count += c
        s.bytes_sent += bs
        s.bytes_received += br
        s.error_count += ec
        s.conn_ms += cm
        if err and ec:
            s.errors[err] = s.errors.get(err, 0) + ec
        if last is not None and (s.last_ts is None or last > s.last_ts):
            s.last_ts = last
    sql = (
        f"SELECT x.ts - x.ts % {g} AS t, p.s, sum(count) FROM {source} JOIN rests AS r ON r.id = x.rest "
        f"JOIN strings AS p ON p.id = r.protocol GROUP BY t, r.protocol"
    )
    for t, proto, c in con.execute(sql, params):
        if c:
            s = bucket(t)
            s.protocols[proto] = s.protocols.get(proto, 0) + c
    sql = (
        f"SELECT x.ts - x.ts % {g} AS t, ip.s, sum(count) FROM {source} JOIN rests AS r ON r.id = x.rest "
        f"JOIN strings AS ip ON ip.id = r.ip_out WHERE r.ip_out != 0 GROUP BY t, r.ip_out"
    )
    for t, ip, c in con.execute(sql, params):
        p = bucket(t).proxies
        p[ip] = p.get(ip, 0) + c
    return out


# ---- download tokens -------------------------------------------------------------------


def _sha(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _token(row: tuple[Any, ...]) -> DownloadToken:
    tid, key, scope, user, expire_at = row
    return DownloadToken(tid, key, scope, None if user == _ALL_USERS else user, expire_at)


_TOKEN_COLS = "id, key, scope, user_id, expire_at"


def download_token(
    con: sqlite3.Connection, user_id: int | None, scope: str, now: int, ttl: int, reset: bool, new_key: str
) -> DownloadToken:
    """The unexpired token of (user, scope), or a new one with `new_key` (inside the
    caller's write transaction)."""
    user = _ALL_USERS if user_id is None else user_id
    row = con.execute(
        f"SELECT {_TOKEN_COLS} FROM download_tokens WHERE user_id = ? AND scope = ?", (user, scope)
    ).fetchone()
    if row is not None and not reset and now < row[4]:
        return _token(row)
    con.execute("DELETE FROM download_tokens WHERE user_id = ? AND scope = ?", (user, scope))
    con.execute(
        "INSERT INTO download_tokens (key_sha256, key, scope, user_id, created_at, expire_at) VALUES (?,?,?,?,?,?)",
        (_sha(new_key), new_key, scope, user, now, now + ttl),
    )
    row = con.execute(
        f"SELECT {_TOKEN_COLS} FROM download_tokens WHERE user_id = ? AND scope = ?", (user, scope)
    ).fetchone()
    return _token(row)


def find_download_token(con: sqlite3.Connection, key: str, scope: str, now: int) -> DownloadToken | None:
    row = con.execute(
        f"SELECT {_TOKEN_COLS} FROM download_tokens WHERE key_sha256 = ? AND scope = ?", (_sha(key), scope)
    ).fetchone()
    if row is None or now >= row[4]:
        return None
    return _token(row)
