"""Storage backends behind one `Store` protocol (collector.storage.base).

`make_store(config)` is the one place that knows the backends: the app and its handlers
call only the protocol's methods and never import a backend module.
"""

from __future__ import annotations

from collector.config import CollectorConfig
from collector.storage.base import Store, StoreError


def make_store(config: CollectorConfig) -> Store:
    """A new, unopened store of the configured `storage.backend`."""
    s = config.storage
    if s.backend == "sqlite":
        from collector.storage.sqlite import SQLiteStore

        return SQLiteStore(
            s.path,
            retention_days=s.retention_days,
            idempotency_days=s.idempotency_days,
            synchronous=s.synchronous,
            readers=s.readers,
            cache_mib=s.cache_mib,
            checkpoint_interval=s.checkpoint_interval,
            max_wal_bytes=s.max_wal_bytes,
            activity_retention_days=s.activity_retention_days,
            fold_rows=s.fold_rows,
            fold_interval=s.fold_interval,
        )
    if s.backend == "clickhouse":
        from collector.storage.clickhouse import ClickHouseStore

        c = s.clickhouse
        return ClickHouseStore(
            c.url,
            c.database,
            user=c.user,
            password_file=c.password_file,
            insert_batch_rows=c.insert_batch_rows,
            insert_interval=c.insert_interval,
            timeout=c.timeout,
            retention_days=s.retention_days,
            idempotency_days=s.idempotency_days,
            activity_retention_days=s.activity_retention_days,
        )
    raise ValueError(f"storage.backend: unknown backend {s.backend!r}")


__all__ = ["Store", "StoreError", "make_store"]
