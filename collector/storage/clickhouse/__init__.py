"""The ClickHouse backend: sqltext (literals), http (client), schema, store."""

from collector.storage.clickhouse.store import ClickHouseStore

__all__ = ["ClickHouseStore"]
