"""Strings of a decoded ingest body that are not valid Unicode text (pure).

JSON lets a body carry lone UTF-16 surrogates ("\\ud800", or the bytes ED A0 80, which
Python's json module decodes with "surrogatepass"); such a string cannot be encoded as
UTF-8, so a store cannot write it. Left alone it fails only inside the store's
transaction (after validation, with no field named, as a 5xx that an agent would retry
forever). msgpack bodies cannot carry one: their strings are decoded as strict UTF-8.

A body can only hold a lone surrogate if its bytes hold one of the two spellings, so
the per-string scan runs only when `may_hold_surrogates` finds one (a C-speed search;
rare false positives such as an escaped backslash followed by "ud800" only cost the
scan).
"""

from __future__ import annotations

import re

from agent.wire.batch import STR_DIMENSIONS, Batch

# \uD800-\uDFFF as a JSON escape, or a surrogate's UTF-8-style bytes ED A0..BF xx
_SPELLINGS = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def may_hold_surrogates(body: bytes) -> bool:
    return _SPELLINGS.search(body) is not None


def _bad(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def first_unencodable(batch: Batch) -> str | None:
    """Path of the first string field that is not valid Unicode text, e.g. logs[3].domain."""
    for i, row in enumerate(batch.rows):
        for name in STR_DIMENSIONS:
            if _bad(getattr(row, name)):
                return f"logs[{i}].{name}"
    for i, profile in enumerate(batch.profiles):
        if _bad(profile.worker):
            return f"concurrency[{i}].worker"
    return None
