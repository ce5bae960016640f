"""Collector fixtures: the real app in-process (aiohttp TestServer) on a real store.

The API tests run once per entry of BACKENDS: SQLite on a real file, and ClickHouse on
a real clickhouse-server (one child process for the whole session, stopped by its pid;
each test gets its own database). An entry says how to build the store from the
collector config, and how to read its whole state, so that "a rejected body leaves the
store unchanged" is checked on that backend's own tables too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector.app import create_app
from collector.storage import make_store
from collector.config import ClickHouseConfig, CollectorConfig, loads
from collector.storage.base import Store
from collector.storage.clickhouse import schema as ch_schema
from tests.fixtures.clickhouse import ClickHouseServer

AGENT = "agent-token-1"
ADMIN = "admin-token-1"
USER42 = "user-42-token"
USER7 = "user-7-token"
# "now" of the app under test: after every timestamp the tests ingest, inside retention.
NOW = datetime(2026, 4, 1, tzinfo=timezone.utc).timestamp()


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def config_text(db: Path, extra: str = "", storage: str = "") -> str:
    return f"""
[server]
listen = "127.0.0.1:8428"
{extra}
[storage]
backend = "sqlite"
path = "{db}"
retention_days = 90
{storage}

[[auth.tokens]]
name = "fleet-agents"
role = "agent"
sha256 = "{sha(AGENT)}"

[[auth.tokens]]
name = "ops"
role = "admin"
sha256 = "{sha(ADMIN)}"

[[auth.tokens]]
name = "customer-42"
role = "user"
user_id = 42
sha256 = "{sha(USER42)}"

[[auth.tokens]]
name = "customer-7"
role = "user"
user_id = 7
sha256 = "{sha(USER7)}"
"""


def make_config(tmp_path: Path, extra: str = "", storage: str = "") -> CollectorConfig:
    return loads(config_text(tmp_path / "collector.db", extra, storage))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sqlite_dump(db: Path) -> list[tuple[object, ...]]:
    """Every row of every table: the store's whole state, for before/after comparisons."""
    con = sqlite3.connect(db)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return [(n, *r) for n in names for r in sorted(con.execute(f"SELECT * FROM {n}"), key=repr)]
    finally:
        con.close()


@dataclass(frozen=True)
class Backend:
    name: str
    make: Callable[[CollectorConfig], Store]  # a new, unopened store for this config
    snapshot: Callable[[CollectorConfig], object]  # everything stored, comparable with ==
    drop: Callable[[CollectorConfig], None] = lambda cfg: None  # after the test: free the server


# The session's clickhouse-server (tests/conftest.py), set by the first test that asks.
CLICKHOUSE: list[ClickHouseServer] = []


def clickhouse_database(cfg: CollectorConfig) -> str:
    """A database of its own per test (and per make_api `sub`): named after the
    test's SQLite path, which tmp_path makes unique."""
    return "t_" + hashlib.sha256(cfg.storage.path.encode()).hexdigest()[:20]


def clickhouse_config(cfg: CollectorConfig) -> CollectorConfig:
    """The test's config with [storage] on the session's server. insert_interval 0:
    a body is inserted as soon as it arrives (the tests send one at a time)."""
    ch = ClickHouseConfig(url=CLICKHOUSE[0].url, database=clickhouse_database(cfg), insert_interval=0.0)
    return replace(cfg, storage=replace(cfg.storage, backend="clickhouse", clickhouse=ch))


def clickhouse_dump(cfg: CollectorConfig) -> list[str]:
    """Every row of every table (aggregate states finalized), one TSV line each."""
    server, db = CLICKHOUSE[0], clickhouse_database(cfg)
    out: list[str] = []
    for table in ch_schema.TABLES:
        if table in ("m", *ch_schema.ROLLUP_TABLES.values()):
            keys = "ts, user_id, order_id, domain, error, " + ("fid" if table == "m" else "fam")
            vals = [f"sumMerge({c})" for c in ch_schema.SUMS] + [f"maxMerge({c})" for c in ch_schema.MAXES]
            if table != "m":
                vals += ["minMerge(first_ts)", "maxMerge(last_ts)"]
            vals.append("sumMapMerge(lat)")
            sql = f"SELECT {keys}, {', '.join(vals)} FROM {db}.{table} GROUP BY {keys} ORDER BY {keys} FORMAT TSV"
        elif table == "s":
            keys = "ts, user_id, order_id, domain, error, protocol, ip_out, fid"
            vals = [f"sumMerge({c})" for c in ch_schema.STATS_SUMS]
            sql = f"SELECT {keys}, {', '.join(vals)} FROM {db}.s GROUP BY {keys} ORDER BY {keys} FORMAT TSV"
        else:
            sql = f"SELECT * FROM {db}.{table} ORDER BY tuple(*) FORMAT TSV"
        out += [f"{table}\t{line}" for line in server.query(sql).splitlines()]
    return out


BACKENDS = {
    "sqlite": Backend("sqlite", make_store, lambda cfg: sqlite_dump(Path(cfg.storage.path))),
    "clickhouse": Backend(
        "clickhouse", lambda cfg: make_store(clickhouse_config(cfg)), clickhouse_dump,
        # a finished test's tables would keep the server's merge threads busy
        lambda cfg: CLICKHOUSE[0].query(f"DROP DATABASE IF EXISTS {clickhouse_database(cfg)}"),
    ),
}


class Api:
    """A thin test helper over TestClient: ingest and query with tokens."""

    def __init__(self, client: TestClient, db: Path, backend: Backend, config: CollectorConfig) -> None:
        self.client = client
        self.db = db  # the SQLite file (backend "sqlite")
        self.backend = backend
        self.config = config

    def snapshot(self) -> object:
        return self.backend.snapshot(self.config)

    async def ingest(
        self, body: Any, *, token: str = AGENT, key: str | None = None, expect: int = 204
    ) -> Any:
        headers = auth(token) | {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        resp = await self.client.post("/analytics/ingest", data=data, headers=headers)
        text = await resp.text()
        assert resp.status == expect, text
        return json.loads(text) if text else None

    async def get(self, path: str, *, token: str = ADMIN, expect: int = 200, **query: Any) -> Any:
        resp = await self.client.get(path, params={k: str(v) for k, v in query.items()}, headers=auth(token))
        text = await resp.text()
        assert resp.status == expect, text
        return json.loads(text)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "clickhouse":
        server = request.getfixturevalue("clickhouse_server")
        CLICKHOUSE[:] = [server]
    return BACKENDS[request.param]


@pytest.fixture
async def make_api(tmp_path: Path, backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient] = []
    configs: list[CollectorConfig] = []

    async def factory(
        extra: str = "", sub: str = "", storage: str = "", clock: Callable[[], float] = lambda: NOW
    ) -> Api:
        base = tmp_path / sub if sub else tmp_path
        base.mkdir(parents=True, exist_ok=True)
        cfg = make_config(base, extra, storage)
        app = create_app(cfg, store=backend.make(cfg), clock=clock)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        configs.append(cfg)
        return Api(client, base / "collector.db", backend, cfg)

    yield factory
    for c in clients:
        await c.close()
    for cfg in configs:
        backend.drop(cfg)


@pytest.fixture
async def api(make_api: Callable[..., Any]) -> Api:
    return await make_api()


async def all_domains(store: Any, start: int, end: int, filt: Any) -> dict[str, Any]:
    """Every domain's totals from a Store's ranked breakdown (one page holding all)."""
    page = await store.domains(start, end, filt, order="visits", limit=10**9)
    assert page.total == len(page.items)
    return dict(page.items)
