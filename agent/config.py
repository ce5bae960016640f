"""The agent's TOML config as frozen dataclasses (loaded with agent.wire.tomlschema).

`load(path)` parses and validates everything, including cross-field rules and the files
the config points at (the token file), and raises ConfigError naming the full key path.
Every key and default is documented in the README section "Agent configuration".
"""

from __future__ import annotations

import socket
from collections.abc import Callable
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.activity import (
    DEFAULT_MAX_RECORDS_PER_BATCH,
    DEFAULT_SAMPLE_RATE,
    MAX_RECORDS_PER_BATCH_CAP,
    ActivitySettings,
)
from agent.aggregate import DEFAULT_MAX_DURATION_MS
from agent.fileid import DEFAULT_FINGERPRINT_BYTES
from agent.parsers.dante import DEFAULT_MAX_OPEN_SESSIONS
from agent.tailer import DEFAULT_MAX_OPEN_FILES, DEFAULT_ROTATED_IDLE_POLLS
from agent.users import UsersConfig
from agent.wire.batch import DIMENSIONS
from agent.wire.logfmt import LEVELS
from agent.wire.tomlschema import ConfigError, check, load_file, load_text, non_negative, positive

FORMATS = ("squid", "haproxy", "nginx", "dante", "jsonl")
Format = Literal["squid", "haproxy", "nginx", "dante", "jsonl"]
LogLevel = Literal["debug", "info", "warning", "error"]
assert LEVELS == ("debug", "info", "warning", "error")

MIB = 1024 * 1024


def _listen(value: str) -> str | None:
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "expected 'host:port' (e.g. '127.0.0.1:9465') or '' to disable"
    return None


def _url(value: str) -> str | None:
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        return "expected an http:// or https:// URL of the collector"
    return None


def _timezone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "expected an IANA time zone name such as 'UTC' or 'Europe/Berlin'"
    return None


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _at_least(n: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= n else f"must be >= {n}"


def _between(lo: float, hi: float, unit: str = "") -> Callable[[float], str | None]:
    """A range check; `unit` is appended to the bounds in the message ("seconds")."""
    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else repr(x)

    text = f"must be between {num(lo)} and {num(hi)}{' ' + unit if unit else ''}"
    return lambda v: None if lo <= v <= hi else text


def _dimensions(values: list[str]) -> str | None:
    for v in values:
        if v not in DIMENSIONS:
            return f"unknown dimension {v!r} (known: {', '.join(DIMENSIONS)})"
    return None


@dataclass(frozen=True)
class AgentSection:
    worker: str = field(default_factory=socket.gethostname, metadata=check(_non_empty))
    state_dir: str = field(default="/var/lib/proxymeter-agent", metadata=check(_non_empty))
    log_level: LogLevel = "info"
    metrics_listen: str = field(default="127.0.0.1:9465", metadata=check(_listen))
    poll_interval: float = field(default=0.25, metadata=check(positive, "seconds between polls when idle"))
    public_suffix_list: str = ""  # "" = the system list (Debian package publicsuffix)


@dataclass(frozen=True)
class CollectorSection:
    url: str = field(metadata=check(_url))
    token_file: str | None = None
    token: str | None = None
    # 60: flushes fall at each minute's end plus the grace, so a minute's rows leave
    # about once (half the rows and wire bytes of 10 s flushes, measured), and a minute
    # of a busy proxy's rows fits one batch; with the default
    # activity.max_records_per_batch the sum stays under MAX_BODY_ENTRIES.
    flush_interval: float = field(default=60.0, metadata=check(positive))
    max_batch_rows: int = field(default=100_000, metadata=check(_at_least(1)))
    request_timeout: float = field(default=30.0, metadata=check(positive))
    max_retry_delay: float = field(default=60.0, metadata=check(positive))
    shutdown_timeout: float = field(default=20.0, metadata=check(non_negative))
    once_timeout: float = field(default=120.0, metadata=check(positive))

    def __post_init__(self) -> None:
        if (self.token is None) == (self.token_file is None):
            raise ConfigError("token", "set exactly one of collector.token and collector.token_file")
        if self.token is not None and not self.token.strip():
            raise ConfigError("token", "must not be empty")


@dataclass(frozen=True)
class SpoolSection:
    max_bytes: int = field(default=256 * MIB, metadata=check(_at_least(64 * 1024)))


@dataclass(frozen=True)
class Source:
    path: str = field(metadata=check(_non_empty))
    format: Format
    timezone: str = field(default="UTC", metadata=check(_timezone))
    read_from: Literal["end", "beginning"] = "end"
    max_line_bytes: int = field(default=64 * 1024, metadata=check(_at_least(256)))
    # Files of this source held open at once; an idle one is parked (closed, position
    # kept) to let a waiting one in. The unit's LimitNOFILE (65536) covers the sum over
    # sources, so one source may not take more than a quarter of it.
    max_open_files: int = field(default=DEFAULT_MAX_OPEN_FILES, metadata=check(_between(1, 16384)))
    # Polls with nothing new before a rotated or deleted file is closed: the grace a
    # writer gets to reopen its log. Bounded so a typo cannot keep old files open forever.
    rotated_idle_polls: int = field(default=DEFAULT_ROTATED_IDLE_POLLS, metadata=check(_between(1, 10000)))
    # Bytes at the start of a file hashed to identify it (with dev/inode). Fewer than 64
    # would let two logs whose lines start with the same date look like copies of each
    # other; the prefix is re-read on every poll of every open file, hence the cap.
    fingerprint_bytes: int = field(default=DEFAULT_FINGERPRINT_BYTES, metadata=check(_between(64, 65536)))
    # dante only (ignored by the other formats, like `timezone` by formats with offsets):
    # open lines remembered until their close line; about 200 bytes each.
    max_open_sessions: int = field(default=DEFAULT_MAX_OPEN_SESSIONS, metadata=check(_between(1, 4_194_304)))


# aggregate.max_duration's cap: one request makes a row and a profile for every minute it
# covers (86,400 for 30 days), and they must fit into one ingest body next to the other
# rows (the collector's server.max_rows, default 200,000).
MAX_DURATION_CAP = 30 * 24 * 3600


@dataclass(frozen=True)
class AggregateSection:
    drop_dimensions: list[str] = field(default_factory=list, metadata=check(_dimensions))
    # Seconds; a longer request is refused (counted as a parse error), as the agent's
    # other durations in seconds.
    max_duration: float = field(default=DEFAULT_MAX_DURATION_MS / 1000,
                                metadata=check(_between(1, MAX_DURATION_CAP, "seconds (30 days)")))

    @property
    def max_duration_ms(self) -> int:
        return round(self.max_duration * 1000)

    @property
    def dimensions(self) -> frozenset[str]:
        return frozenset(DIMENSIONS) - frozenset(self.drop_dimensions)


# collector.max_batch_rows + activity.max_records_per_batch: a flush may come one read
# (512 KiB of lines) after either is reached, and a long request adds a row and a profile
# per minute, so the sum keeps a margin under the collector's default server.max_rows.
MAX_BODY_ENTRIES = 150_000


def _sample_rate(value: float) -> str | None:
    return None if 0 < value <= 1 else "must be > 0 and <= 1 (1 = every request)"


@dataclass(frozen=True)
class ActivitySection:
    """One activity record per request (Webshare's activity objects), in the same
    batches as the rows. Sampling thins only these records: rows and profiles are made
    from every request, so the per-minute statistics stay exact at any rate."""

    enabled: bool = True
    sample_rate: float = field(default=DEFAULT_SAMPLE_RATE, metadata=check(_sample_rate))
    # Flush sooner once this many records wait, like collector.max_batch_rows; capped so
    # that rows + profiles + activity of one body stay under the collector's
    # server.max_rows (200,000 by default).
    max_records_per_batch: int = field(default=DEFAULT_MAX_RECORDS_PER_BATCH,
                                       metadata=check(_between(1, MAX_RECORDS_PER_BATCH_CAP)))

    @property
    def settings(self) -> ActivitySettings:
        return ActivitySettings(self.enabled, self.sample_rate, self.max_records_per_batch)


@dataclass(frozen=True)
class Config:
    collector: CollectorSection
    sources: list[Source]
    agent: AgentSection = field(default_factory=AgentSection)
    spool: SpoolSection = field(default_factory=SpoolSection)
    users: UsersConfig = field(default_factory=UsersConfig)
    aggregate: AggregateSection = field(default_factory=AggregateSection)
    activity: ActivitySection = field(default_factory=ActivitySection)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("sources", "at least one [[sources]] entry is required")
        seen: dict[str, int] = {}
        for i, src in enumerate(self.sources):
            if src.path in seen:
                raise ConfigError(f"sources[{i}].path", f"same path as sources[{seen[src.path]}]")
            seen[src.path] = i
        body = self.collector.max_batch_rows + self.activity.max_records_per_batch
        if self.activity.enabled and body > MAX_BODY_ENTRIES:
            raise ConfigError(
                "activity.max_records_per_batch",
                f"with collector.max_batch_rows ({self.collector.max_batch_rows}) a body may hold {body} "
                f"rows, profiles and activity records; keep the sum <= {MAX_BODY_ENTRIES}, which leaves room "
                "for one read's worth of records under the collector's server.max_rows (200000)",
            )


def _check_files(cfg: Config) -> Config:
    if cfg.collector.token_file is not None:
        token_path = Path(cfg.collector.token_file)
        try:
            token = token_path.read_text().strip()
        except OSError as exc:
            raise ConfigError("collector.token_file", f"cannot read {token_path}: {exc.strerror}") from None
        if not token:
            raise ConfigError("collector.token_file", f"{token_path} is empty")
    psl = cfg.agent.public_suffix_list
    if psl and not Path(psl).is_file():
        raise ConfigError("agent.public_suffix_list", f"no such file: {psl}")
    return cfg


def load(path: str | Path) -> Config:
    return _check_files(load_file(Config, path))


def loads(text: str) -> Config:
    return _check_files(load_text(Config, text))


def token_of(cfg: Config) -> str:
    """The bearer token (read from token_file at start and on every reload)."""
    if cfg.collector.token is not None:
        return cfg.collector.token
    assert cfg.collector.token_file is not None
    try:
        return Path(cfg.collector.token_file).read_text().strip()
    except OSError as exc:
        raise ConfigError("collector.token_file", f"cannot read {cfg.collector.token_file}: {exc.strerror}") from None
