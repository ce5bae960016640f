"""A minimal client for ClickHouse's HTTP interface (aiohttp; no driver).

A statement travels as the POST body, or, for an INSERT with data, as the `query` URL
parameter with the data (RowBinary, or Native for columns) as the body. Answers of
SELECTs are asked for as JSONCompact with 64-bit integers unquoted, so Python's json
reads them exactly. A non-200 answer or a transport failure is a ClickHouseError; the
store turns it into StoreError.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp


class ClickHouseError(RuntimeError):
    pass


class ClickHouseHTTP:
    def __init__(self, url: str, *, user: str, password: str, timeout: float) -> None:
        self.url = url.rstrip("/") + "/"
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, params: dict[str, str], body: bytes) -> bytes:
        if self._session is None:
            raise ClickHouseError("client is not open")
        try:
            async with self._session.post(self.url, params=params, data=body) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise ClickHouseError(data.decode("utf-8", "replace").strip()[:2000])
                return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClickHouseError(f"{type(exc).__name__}: {exc}") from exc

    async def execute(self, sql: str) -> None:
        """A statement without an answer (DDL, INSERT ... SELECT, ALTER)."""
        await self._post({}, sql.encode())

    async def select(self, sql: str) -> list[list[Any]]:
        return (await self.select_counted(sql))[0]

    async def select_counted(self, sql: str) -> tuple[list[list[Any]], int | None]:
        """The rows, and the answer's `rows_before_limit_at_least` (None when it has none:
        a query without LIMIT)."""
        data = await self._post(
            {"output_format_json_quote_64bit_integers": "0"}, (sql + " FORMAT JSONCompact").encode()
        )
        try:
            answer = json.loads(data)
            rows: list[list[Any]] = answer["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ClickHouseError(f"unreadable answer: {data[:200]!r}") from exc
        before = answer.get("rows_before_limit_at_least")
        return rows, before if isinstance(before, int) else None

    async def insert(self, table_and_columns: str, data: bytes, fmt: str = "RowBinary") -> None:
        """INSERT INTO `table_and_columns` FORMAT `fmt` (RowBinary or Native), with the
        data as the body."""
        if fmt not in ("RowBinary", "Native"):
            raise ValueError(f"unsupported insert format {fmt!r}")
        await self._post({"query": f"INSERT INTO {table_and_columns} FORMAT {fmt}"}, data)
