"""Shared by the parser table tests: fixture lines and a Record built from a tuple."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.parsers import make_parser
from agent.record import Record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "logs"


def fixture_lines(fmt: str, name: str) -> list[bytes]:
    return (FIXTURES / fmt / name).read_bytes().splitlines()


# field order of the expected tuples in the tables
FIELDS = ("start_ms", "duration_ms", "bytes_sent", "bytes_received", "client_ip", "user",
          "host", "port", "protocol", "error", "raw_error", "status", "ip_out", "peer_id",
          "listen_port")


def rec(*values: object) -> Record:
    return Record(**dict(zip(FIELDS, values)))  # type: ignore[arg-type]


# Record fields that feed only the activity records: the tables above pin down the rest
# (compared through `Core`), the activity tables of each format pin down these.
ACTIVITY_PARTS = ("start_us_rem", "target_ip", "proxy_port", "listen_address", "handshake_ms", "tunnel_ms")
_NO_ACTIVITY_PARTS = {"start_us_rem": 0, "target_ip": "", "proxy_port": 0, "listen_address": "",
                      "handshake_ms": None, "tunnel_ms": None}


def core(r: Record | None) -> Record | None:
    """r with its activity-only fields at their defaults."""
    return None if r is None else replace(r, **_NO_ACTIVITY_PARTS)  # type: ignore[arg-type]


def parts(r: Record | None) -> tuple[object, ...] | None:
    """r's activity-only fields, in ACTIVITY_PARTS order."""
    return None if r is None else tuple(getattr(r, name) for name in ACTIVITY_PARTS)


class Core:
    """A parser whose records are compared without their activity-only fields."""

    def __init__(self, parser: Any) -> None:
        self._parser = parser

    def parse(self, line: bytes) -> Record | None:
        return core(self._parser.parse(line))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def core_parser(*args: Any, **kwargs: Any) -> Core:
    return Core(make_parser(*args, **kwargs))
