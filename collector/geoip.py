"""Country of an IP address from an IP-range CSV: the optional GeoIP source of the
Webshare stats' `countries_used` (requests per country of the proxy address used).

Format (the one DB-IP's free "IP to Country Lite" CSV and similar lists use): one range
per line, `first,last,country`, addresses in IPv4 or IPv6 notation (or as the decimal
integers IP2Location's LITE CSV writes), fields optionally in double quotes, columns
after the third ignored, blank lines and lines starting with `#` skipped. `country` is an
ISO 3166 alpha-2 code (upper-cased); `-` or `ZZ` mark an unknown range. Ranges may not
overlap: a table is sorted once and looked up by bisection.

`parse` is pure (text in, table out); `load` reads the configured file and reports any
problem as a ConfigError naming `geoip.path` and the line, so a bad file stops the
collector at start (and `check` says so) instead of silently counting nothing.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from agent.wire.tomlschema import ConfigError

UNKNOWN = frozenset(("-", "ZZ"))


@dataclass(frozen=True)
class CountryTable:
    """Sorted, non-overlapping ranges per address family: starts, ends, codes."""

    v4: tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]
    v6: tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.v4[0]) + len(self.v6[0])

    def country(self, ip: str) -> str | None:
        """The country code of `ip`, None when no range holds it or it is no address."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        starts, ends, codes = self.v4 if addr.version == 4 else self.v6
        n = int(addr)
        i = bisect_right(starts, n) - 1
        return codes[i] if i >= 0 and n <= ends[i] else None


def _address(text: str, line: int) -> tuple[int, int]:
    """(family, integer) of an address field."""
    if text.isdigit():
        n = int(text)
        if n >= 1 << 128:
            raise ValueError(f"line {line}: {text[:40]!r} is no address")
        return (4 if n < 1 << 32 else 6), n
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"line {line}: {text[:40]!r} is no IP address") from None
    return addr.version, int(addr)


def parse(text: str) -> CountryTable:
    """The table of a CSV text; ValueError naming the line for anything else."""
    ranges: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cols = [c.strip().strip('"').strip() for c in line.split(",")]
        if len(cols) < 3:
            raise ValueError(f"line {no}: expected first,last,country; got {line[:60]!r}")
        (fam1, first), (fam2, last) = _address(cols[0], no), _address(cols[1], no)
        code = cols[2].upper()
        if fam1 != fam2 or first > last:
            raise ValueError(f"line {no}: {cols[0]}..{cols[1]} is no range of one address family")
        if code in UNKNOWN:
            continue
        if len(code) != 2 or not code.isalpha() or not code.isascii():
            raise ValueError(f"line {no}: {cols[2][:20]!r} is no two-letter country code")
        ranges[fam1].append((first, last, code))
    out = []
    for fam in (4, 6):
        rs = sorted(ranges[fam])
        for (a1, b1, _), (a2, _b2, _) in zip(rs, rs[1:]):
            if a2 <= b1:
                v = ipaddress.IPv4Address if fam == 4 else ipaddress.IPv6Address
                raise ValueError(f"ranges overlap: {v(a1)}..{v(b1)} and one starting at {v(a2)}")
        out.append((tuple(r[0] for r in rs), tuple(r[1] for r in rs), tuple(r[2] for r in rs)))
    return CountryTable(out[0], out[1])


def load(path: str) -> CountryTable | None:
    """The configured table (None for `geoip.path = ""`); ConfigError on any problem."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("geoip.path", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("geoip.path", f"{path} is not UTF-8") from None
    try:
        return parse(text)
    except ValueError as exc:
        raise ConfigError("geoip.path", f"{path}: {exc}") from None
