"""The collector's TOML config as frozen dataclasses (loaded with agent.wire.tomlschema).

The shape of [server] listen, [storage] backend/path/retention_days and [[auth.tokens]]
is fixed by the project; the other keys are the collector's own, each with a default.
Cross-field rules (a `user` token needs a user_id, ...) live in __post_init__ and raise
ConfigError with a path relative to the table, which tomlschema prefixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.wire.tomlschema import ConfigError, check, load_file, load_text, non_negative, positive

MIB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")
ROLES = ("agent", "admin", "user")
MIN_IDEMPOTENCY_DAYS = 7

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        return "expected host:port, e.g. '127.0.0.1:8428' or '[::1]:8428' (port 0: any free port)"
    return None


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _sha256(value: str) -> str | None:
    return None if _HEX64.fullmatch(value) else "expected 64 hex characters (sha256 of the token)"


def _at_least_idempotency(value: int) -> str | None:
    return None if value >= MIN_IDEMPOTENCY_DAYS else f"must be >= {MIN_IDEMPOTENCY_DAYS}"


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class ServerConfig:
    listen: str = field(default="127.0.0.1:8428", metadata=check(_listen, "address to bind, host:port"))
    max_body_bytes: int = field(default=16 * MIB, metadata=check(positive, "largest ingest body; larger -> 413"))
    max_rows: int = field(default=200_000, metadata=check(positive, "most rows + profiles in one ingest body"))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout: float = field(default=10.0, metadata=check(positive, "seconds to finish requests on stop"))


def _http_url(value: str) -> str | None:
    if not re.fullmatch(r"https?://[^/\s]+/?", value):
        return "expected http://host:port or https://host:port (ClickHouse's HTTP interface)"
    return None


def _database(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
        return "expected a name of letters, digits and '_' (not starting with a digit), at most 63"
    return None


@dataclass(frozen=True)
class ClickHouseConfig:
    url: str = field(default="http://127.0.0.1:8123", metadata=check(_http_url, "ClickHouse HTTP interface"))
    database: str = field(default="proxymeter", metadata=check(_database, "database the collector owns"))
    user: str = field(default="default", metadata=check(_non_empty, "ClickHouse user"))
    password_file: str = ""
    insert_batch_rows: int = field(default=100_000, metadata=check(positive, "rows buffered before an insert"))
    insert_interval: float = field(default=1.0, metadata=check(non_negative, "seconds a body waits for others"))
    timeout: float = field(default=30.0, metadata=check(positive, "seconds per ClickHouse request"))


@dataclass(frozen=True)
class StorageConfig:
    backend: Literal["sqlite", "clickhouse"] = "sqlite"
    path: str = field(default="/var/lib/proxymeter/collector.db", metadata=check(_non_empty, "the SQLite file"))
    retention_days: int = field(default=90, metadata=check(positive, "days of data kept"))
    activity_retention_days: int = field(default=90, metadata=check(positive, "days activity records are kept"))
    idempotency_days: int = field(default=7, metadata=check(_at_least_idempotency, "days keys are kept"))
    retention_interval: float = field(default=3600.0, metadata=check(positive, "seconds between sweeps"))
    synchronous: Literal["full", "normal"] = "full"
    readers: int = field(default=4, metadata=check(positive, "reader threads/connections"))
    cache_mib: int = field(default=64, metadata=check(positive, "SQLite page cache per connection"))
    checkpoint_interval: float = field(default=1.0, metadata=check(non_negative, "seconds between background WAL checkpoints; 0: SQLite's own, in the writer"))
    max_wal_bytes: int = field(default=256 * MIB, metadata=check(positive, "WAL size at which the writer checkpoints itself"))
    fold_rows: int = field(default=100_000, metadata=check(positive, "staged rows that start a fold"))
    fold_interval: float = field(default=0.25, metadata=check(non_negative, "seconds between folds of what is staged; 0: only at fold_rows and on stop"))
    clickhouse: ClickHouseConfig = field(default_factory=ClickHouseConfig)


@dataclass(frozen=True)
class QueryConfig:
    max_range_days: int = field(default=62, metadata=check(positive, "longest from..to range"))
    target_points: int = field(default=500, metadata=check(positive, "default interval keeps at most this"))
    max_points: int = field(default=10_000, metadata=check(positive, "most buckets one chart may ask for"))
    activity_max_page_size: int = field(default=100, metadata=check(positive, "largest page_size of the activity list"))
    activity_chunk_rows: int = field(default=1000, metadata=check(positive, "records per read of a CSV download"))
    download_token_days: int = field(default=7, metadata=check(positive, "days a download token stays valid"))


@dataclass(frozen=True)
class GeoIPConfig:
    path: str = field(default="", metadata=check(None, "IP-range CSV giving countries_used; \"\": none"))


@dataclass(frozen=True)
class TokenConfig:
    name: str = field(metadata=check(_non_empty, "a label for logs"))
    role: Literal["agent", "admin", "user"]
    sha256: str = field(metadata=check(_sha256))
    user_id: int | None = None

    def __post_init__(self) -> None:
        if self.role == "user" and self.user_id is None:
            raise ConfigError("user_id", "required for role 'user' (the only user_id this token may read)")
        if self.role != "user" and self.user_id is not None:
            raise ConfigError("user_id", f"only allowed for role 'user', not {self.role!r}")
        if self.user_id is not None and self.user_id < 0:
            raise ConfigError("user_id", "must be >= 0")


@dataclass(frozen=True)
class AuthConfig:
    tokens: tuple[TokenConfig, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, tok in enumerate(self.tokens):
            digest = tok.sha256.lower()
            if digest in seen:
                raise ConfigError(f"tokens[{i}].sha256", "the same token hash is listed twice")
            seen.add(digest)


@dataclass(frozen=True)
class CollectorConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    geoip: GeoIPConfig = field(default_factory=GeoIPConfig)


def load(path: str | Path) -> CollectorConfig:
    return load_file(CollectorConfig, path)


def loads(text: str) -> CollectorConfig:
    return load_text(CollectorConfig, text)
