"""Proxy user name -> (user_id, order_id): a static table first, then one pattern.

Default pattern: `^user-(?P<user_id>\\d+)(?:-order-(?P<order_id>\\d+))?$`, i.e. the
proxy account "user-1001" is user 1001 (order 0) and "user-1001-order-7" is user 1001,
order 7. A custom pattern must have a named group `user_id` and may have `order_id`;
both must match digits only (the groups' text is read as an integer). The whole name
must match (`fullmatch`). A name in the `static` table wins over the pattern. A name
that matches neither (including the empty name of a proxy without authentication) is
"unmatched": it counts as (default_user_id, default_order_id) and the Enricher counts it.

TOML:
    [users]
    pattern = '^user-(?P<user_id>\\d+)(?:-order-(?P<order_id>\\d+))?$'
    default_user_id = 0
    default_order_id = 0
    [users.static."bob smith"]
    user_id = 42
    order_id = 1
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.wire.tomlschema import check

DEFAULT_PATTERN = r"^user-(?P<user_id>\d+)(?:-order-(?P<order_id>\d+))?$"
MAX_ID = (1 << 63) - 1
_CACHE_LIMIT = 65536


def _valid_pattern(value: str) -> str | None:
    try:
        rx = re.compile(value)
    except re.error as exc:
        return f"not a valid regular expression: {exc}"
    if "user_id" not in rx.groupindex:
        return "must have a named group (?P<user_id>...)"
    unknown = set(rx.groupindex) - {"user_id", "order_id"}
    if unknown:
        return f"unknown named group(s) {', '.join(sorted(unknown))}; only user_id and order_id"
    return None


def _id_range(value: int) -> str | None:
    return None if 0 <= value <= MAX_ID else f"must be between 0 and {MAX_ID}"


@dataclass(frozen=True)
class StaticUser:
    user_id: int = field(metadata=check(_id_range))
    order_id: int = field(default=0, metadata=check(_id_range))


@dataclass(frozen=True)
class UsersConfig:
    pattern: str = field(default=DEFAULT_PATTERN, metadata=check(_valid_pattern, "regex with (?P<user_id>) and optional (?P<order_id>)"))
    default_user_id: int = field(default=0, metadata=check(_id_range))
    default_order_id: int = field(default=0, metadata=check(_id_range))
    static: dict[str, StaticUser] = field(default_factory=dict)

    def __hash__(self) -> int:  # dict field: hash by value so configs compare/hash
        return hash((self.pattern, self.default_user_id, self.default_order_id,
                     tuple(sorted(self.static.items()))))


def _to_id(text: str | None) -> int | None:
    if text is None:
        return 0
    if not (text.isascii() and text.isdigit()):  # \d also matches non-ASCII digits
        return None
    value = int(text)
    return value if value <= MAX_ID else None


class UserMapper:
    """Maps user names; results are memoised (bounded), names repeat on every line."""

    def __init__(self, cfg: UsersConfig) -> None:
        problem = _valid_pattern(cfg.pattern)
        if problem:
            raise ValueError(f"users.pattern: {problem}")
        self.cfg = cfg
        self._rx = re.compile(cfg.pattern)
        self._default = (cfg.default_user_id, cfg.default_order_id, False)
        self._static = {name: (u.user_id, u.order_id, True) for name, u in cfg.static.items()}
        self._cache: dict[str, tuple[int, int, bool]] = {}
        self.memo = self._cache  # name -> map(name); cleared in place when full

    def map(self, name: str) -> tuple[int, int, bool]:
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        result = self._static.get(name) or self._match(name)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[name] = result
        return result

    def _match(self, name: str) -> tuple[int, int, bool]:
        m = self._rx.fullmatch(name)
        if m is None:
            return self._default
        raw_user = m.group("user_id")
        if raw_user is None:  # an optional group that took no part: no user in the name
            return self._default
        user_id = _to_id(raw_user)
        order_id = _to_id(m.groupdict().get("order_id"))
        if user_id is None or order_id is None:
            return self._default
        return (user_id, order_id, True)
