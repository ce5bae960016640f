"""Suite-wide settings; each area keeps its own fixtures in its own conftest.py, except
the one fixture two areas share: the session's clickhouse-server (the API tests run on
it, tests/collector; the crash test drives a collector subprocess against it,
tests/shell), started once for the whole session and stopped by its pid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.clickhouse import ClickHouseServer, server_command


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[ClickHouseServer]:
    if server_command() is None:
        pytest.skip("clickhouse-server is not installed (make test installs Debian's package when run as root)")
    server = ClickHouseServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
