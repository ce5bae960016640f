"""Log-line parsers, one module per proxy format; `make_parser` picks one by name.

Every parser takes one line as bytes (no newline; a trailing "\\r" is stripped) and
returns a `Record`, returns None for a valid line that completes no request (dante's
open line, a proxy's startup notice, a connection that never sent a request), or raises
`ParseError(reason)`. Parsers are pure: no files, clocks or sockets. The exact proxy log
configuration each one expects opens its module's docstring.
"""

from __future__ import annotations

import datetime
from typing import Protocol

from agent.record import ParseError, Record

FORMATS: tuple[str, ...] = ("squid", "haproxy", "nginx", "dante", "jsonl")


class LineParser(Protocol):
    def parse(self, line: bytes) -> Record | None: ...


def make_parser(fmt: str, tz: datetime.tzinfo, *, max_open_sessions: int | None = None) -> LineParser:
    """A fresh parser for `fmt`; `tz` is used by formats whose times carry no offset,
    `max_open_sessions` (None: the parser's default) only by dante, the one stateful
    parser (open lines waiting for their close)."""
    if fmt == "squid":
        from agent.parsers.squid import SquidParser

        return SquidParser(tz)
    if fmt == "haproxy":
        from agent.parsers.haproxy import HaproxyParser

        return HaproxyParser(tz)
    if fmt == "nginx":
        from agent.parsers.nginx import NginxParser

        return NginxParser(tz)
    if fmt == "dante":
        from agent.parsers.dante import DEFAULT_MAX_OPEN_SESSIONS, DanteParser

        return DanteParser(tz, DEFAULT_MAX_OPEN_SESSIONS if max_open_sessions is None else max_open_sessions)
    if fmt == "jsonl":
        from agent.parsers.jsonl import JsonlParser

        return JsonlParser(tz)
    raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "LineParser", "ParseError", "make_parser"]
