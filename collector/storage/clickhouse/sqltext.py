r"""SQL text for ClickHouse: the one place that turns values into literals.

Strategy
- ClickHouse 18.16 (Debian's package) has no query parameters, so every value a query
  carries is written into its text. `literal(value, type)` is the only function that
  does it: the value is checked against the ClickHouse type it stands for (an int in
  the type's range, a str for String) and written in a form whose type does not depend
  on the value (`toUInt64(5)`, never a bare `5` that ClickHouse would read as UInt8).
- Strings are single-quoted; the backslash, the quote and every byte below 0x20 (and
  DEL) are escaped (`\\`, `\'`, `\xHH`), so nothing in a value can end the literal or
  change the statement. Other characters go through as UTF-8, which ClickHouse keeps
  byte for byte.
- Identifiers (database and table names) come from allow-lists: `ident` accepts only
  `[A-Za-z_][A-Za-z0-9_]*` names and back-quotes them.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_INT_RANGES: dict[str, tuple[int, int]] = {
    "UInt8": (0, (1 << 8) - 1),
    "UInt16": (0, (1 << 16) - 1),
    "UInt32": (0, (1 << 32) - 1),
    "UInt64": (0, (1 << 64) - 1),
    "Int64": (-(1 << 63), (1 << 63) - 1),
}
TYPES = (*_INT_RANGES, "String")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Bytes that must not appear raw inside a quoted literal: the quote, the backslash
# and the control characters (a raw NUL or newline is legal but easy to mangle).
_ESCAPE = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x7F)} | {ord("\\"): "\\\\", ord("'"): "\\'"}


def literal(value: object, ch_type: str, *, bare: bool = False) -> str:
    """`value` as a SQL literal of ClickHouse type `ch_type` (one of TYPES). `bare`:
    the digits alone, for the places the grammar wants a number (LIMIT, PARTITION)."""
    if ch_type == "String":
        if not isinstance(value, str):
            raise TypeError(f"String literal needs a str, got {type(value).__name__}")
        return "'" + value.translate(_ESCAPE) + "'"
    bounds = _INT_RANGES.get(ch_type)
    if bounds is None:
        raise ValueError(f"no literal for ClickHouse type {ch_type!r}")
    # bool is an int subclass; True as an id is always a bug
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{ch_type} literal needs an int, got {type(value).__name__}")
    lo, hi = bounds
    if not lo <= value <= hi:
        raise ValueError(f"{value} is out of range for {ch_type}")
    return str(value) if bare else f"to{ch_type}({value})"


def literals(values: Iterable[object], ch_type: str) -> str:
    """A parenthesised list of literals for `IN`; `(NULL)`-free: never empty."""
    parts = [literal(v, ch_type) for v in values]
    if not parts:
        raise ValueError("an IN list needs at least one value")
    return "(" + ", ".join(parts) + ")"


def valid_ident(name: str) -> bool:
    return _IDENT.fullmatch(name) is not None


def ident(name: str) -> str:
    if not valid_ident(name):
        raise ValueError(f"not an allowed identifier: {name!r}")
    return f"`{name}`"
