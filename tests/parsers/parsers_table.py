"""Shared by the parser table tests: fixture lines and a Record built from a tuple."""

from __future__ import annotations

from pathlib import Path

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
