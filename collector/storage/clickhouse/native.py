"""ClickHouse's Native format for INSERT bodies: blocks of columns.

Strategy
- A block (as the HTTP interface reads it: no block-info header) is varint(columns),
  varint(rows), then per column its name, its type name and its values: fixed-width
  integers little-endian back to back; a String as varint(length) + bytes; an Array(T)
  as the UInt64 running end offsets of every row, then all elements as one column of
  T. Blocks follow each other in one body, so each queued batch can be its own block.
- Why: RowBinary is written row by row, which in Python costs a dozen calls per row.
  Here a column of n integers is one array() call, a column of strings one bytes.join
  over per-distinct-string encodings (a version 2 body already names each string by
  its index in the body's table): no Python code runs per row.
- Rule: every column of a block has exactly `rows` values (checked: a short column
  would shift the server's reading of every column after it).
Pure: lists in, bytes out.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate

# array typecodes of ClickHouse's fixed-width unsigned types (sizes checked below)
_CODES = {"UInt8": "B", "UInt16": "H", "UInt32": "I", "UInt64": "Q"}
for _t, _c in _CODES.items():
    if array(_c).itemsize * 8 != int(_t[4:]):
        raise RuntimeError(f"array typecode {_c!r} is not {_t} on this platform")
_SWAP = sys.byteorder != "little"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string(raw: bytes) -> bytes:
    return varint(len(raw)) + raw


def encode(table: Iterable[str]) -> list[bytes]:
    """Each string as a String value (Block.strings indexes into this list)."""
    return [string(s.encode()) for s in table]


class Block:
    """One block under construction: add columns in the table's order, then bytes()."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._parts: list[bytes] = []
        self._columns = 0

    def _head(self, name: str, ch_type: str) -> None:
        self._parts.append(string(name.encode()) + string(ch_type.encode()))
        self._columns += 1

    def uints(self, name: str, ch_type: str, values: Sequence[int]) -> None:
        """A UInt8/16/32/64 column (OverflowError if a value does not fit)."""
        if len(values) != self.rows:
            raise ValueError(f"column {name}: {len(values)} values for {self.rows} rows")
        self._head(name, ch_type)
        self._parts.append(_packed(ch_type, values))

    def repeat(self, name: str, ch_type: str, value: int) -> None:
        """A UInt column holding one value in every row."""
        self._head(name, ch_type)
        self._parts.append(_packed(ch_type, (value,)) * self.rows)

    def strings(self, name: str, indices: Sequence[int], encoded: Sequence[bytes]) -> None:
        """A String column whose row i holds the string encoded[indices[i]] (see encode)."""
        if len(indices) != self.rows:
            raise ValueError(f"column {name}: {len(indices)} values for {self.rows} rows")
        self._head(name, "String")
        self._parts.append(b"".join(map(encoded.__getitem__, indices)))

    def texts(self, name: str, values: Sequence[str]) -> None:
        """A String column of the values themselves (each distinct one encoded once)."""
        table = list(dict.fromkeys(values))
        index = {s: i for i, s in enumerate(table)}
        self.strings(name, list(map(index.__getitem__, values)), encode(table))

    def arrays(self, name: str, ch_type: str, lengths: Sequence[int], elements: Sequence[int]) -> None:
        """An Array(ch_type) column: row i holds the next lengths[i] elements."""
        if len(lengths) != self.rows:
            raise ValueError(f"column {name}: {len(lengths)} arrays for {self.rows} rows")
        if sum(lengths) != len(elements):
            raise ValueError(f"column {name}: {len(elements)} elements for arrays of {sum(lengths)}")
        self._head(name, f"Array({ch_type})")
        self._parts.append(_packed("UInt64", list(accumulate(lengths))))
        self._parts.append(_packed(ch_type, elements))

    def bytes(self) -> bytes:
        return varint(self._columns) + varint(self.rows) + b"".join(self._parts)


def _packed(ch_type: str, values: Iterable[int]) -> bytes:
    a = array(_CODES[ch_type], values)
    if _SWAP:
        a.byteswap()
    return a.tobytes()
