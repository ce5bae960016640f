"""Target host -> registrable domain ("www.bbc.co.uk" -> "bbc.co.uk").

With a Public Suffix List (the Debian package `publicsuffix` installs
/usr/share/publicsuffix/public_suffix_list.dat) the standard algorithm is used: the
longest matching rule wins, "*.x" wildcards and "!y.x" exceptions included, and a host
matching no rule uses the implicit rule "*" (its last label is the suffix). The
registrable domain is the public suffix plus one label. Unicode rules are matched in
both their Unicode and punycode (xn--) spellings.

Without the file (DomainResolver.load(None) on a system without the package) the
fallback is: the last two labels, or the last three when the top-level label has two
letters (a country code) and the second-to-last label is one of
ac, co, com, edu, go, gob, gov, mil, ne, net, or, org ("a.b.example.co.uk" ->
"example.co.uk", "a.example.com" -> "example.com").

Always: hosts are lowercased and a trailing dot is dropped; IPv4 and IPv6 literals
(with or without brackets) stay as they are (IPv6 in its compressed form); "" stays "";
a host that is itself a public suffix (e.g. "co.uk") or a single label ("localhost")
is returned unchanged. Results are memoised in a bounded dict.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from agent.wire.logfmt import kv

log = logging.getLogger(__name__)

SYSTEM_PSL = "/usr/share/publicsuffix/public_suffix_list.dat"
FALLBACK_SLDS = frozenset("ac co com edu go gob gov mil ne net or org".split())
_CACHE_LIMIT = 65536


def _ascii(rule: str) -> str | None:
    if rule.isascii():
        return None
    try:
        return ".".join(label.encode("idna").decode("ascii") for label in rule.split("."))
    except UnicodeError:
        return None


class DomainResolver:
    def __init__(self, psl_text: str | None = None) -> None:
        """psl_text: the Public Suffix List's text; None -> the documented fallback."""
        self.rules: set[str] = set()
        self.wildcards: set[str] = set()  # "*.ck" is stored as "ck"
        self.exceptions: set[str] = set()  # "!www.ck" is stored as "www.ck"
        self.uses_psl = psl_text is not None
        self._cache: dict[str, str] = {}
        self.memo = self._cache  # host -> registrable(host); cleared in place when full
        if psl_text is not None:
            for line in psl_text.splitlines():
                line = line.strip()
                if not line or line.startswith("//"):
                    continue
                rule = line.split()[0].lower()
                prefix = "!" if rule.startswith("!") else "*." if rule.startswith("*.") else ""
                body = rule[len(prefix):]
                target = self.exceptions if prefix == "!" else self.wildcards if prefix else self.rules
                target.add(body)
                puny = _ascii(body)
                if puny:
                    target.add(puny)

    @classmethod
    def load(cls, path: str | None = None) -> "DomainResolver":
        """path None: the system list if present, else the fallback. An explicit path
        that cannot be read raises OSError (a configuration error)."""
        if path is None:
            try:
                text = Path(SYSTEM_PSL).read_text(encoding="utf-8")
            except OSError:
                log.warning("public suffix list not found, using the two/three-label fallback",
                            extra=kv(path=SYSTEM_PSL))
                return cls(None)
            return cls(text)
        return cls(Path(path).read_text(encoding="utf-8"))

    def registrable(self, host: str) -> str:
        hit = self._cache.get(host)
        if hit is not None:
            return hit
        result = self._compute(host)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[host] = result
        return result

    def _compute(self, host: str) -> str:
        h = host.strip().lower()
        if h.endswith("."):
            h = h[:-1]
        if not h:
            return ""
        if h.startswith("[") and h.endswith("]"):
            h = h[1:-1]
        if ":" in h or h[-1].isdigit():
            try:
                return str(ipaddress.ip_address(h))
            except ValueError:
                pass
        labels = h.split(".")
        n = len(labels)
        if n == 1:
            return h
        if not self.uses_psl:
            keep = 3 if len(labels[-1]) == 2 and labels[-2] in FALLBACK_SLDS and n >= 3 else 2
            return ".".join(labels[-keep:])
        suffix_len = 1  # the implicit "*" rule
        for i in range(n):
            s = ".".join(labels[i:])
            if s in self.exceptions:
                suffix_len = n - i - 1
                break
            if s in self.rules or (i + 1 < n and ".".join(labels[i + 1:]) in self.wildcards):
                suffix_len = n - i
                break
        if suffix_len >= n:
            return h  # the host is itself a public suffix
        return ".".join(labels[-(suffix_len + 1):])
