"""Fill the fields a parser leaves empty: registrable domain, user_id, order_id."""

from __future__ import annotations

from agent.domains import DomainResolver
from agent.record import Record
from agent.users import UserMapper

# Distinct (host, user) pairs remembered before the memo starts over: a busy proxy's
# pairs number in the thousands, and a reset costs only a refill from the resolvers'
# own memos.
PAIR_MEMO_LIMIT = 65536


class Enricher:
    def __init__(self, users: UserMapper, domains: DomainResolver) -> None:
        self.users = users
        self.domains = domains
        self.unmatched_users = 0  # records whose user name matched no static entry or pattern
        # (host, user) -> (domain, user_id, order_id, matched): one dict hit per line for
        # the pairs seen before. Both resolvers are pure functions of their config, and
        # a reload builds a new Enricher, so an entry never goes stale.
        self._pairs: dict[tuple[str, str], tuple[str, int, int, bool]] = {}

    def _resolve(self, key: tuple[str, str]) -> tuple[str, int, int, bool]:
        host, user = key
        user_id, order_id, matched = self.users.map(user)
        value = (self.domains.registrable(host), user_id, order_id, matched)
        pairs = self._pairs
        if len(pairs) >= PAIR_MEMO_LIMIT:
            pairs.clear()
        pairs[key] = value
        return value

    def enrich(self, rec: Record) -> None:
        key = (rec.host, rec.user)
        got = self._pairs.get(key)
        if got is None:
            got = self._resolve(key)
        rec.domain, rec.user_id, rec.order_id, matched = got
        if not matched:
            self.unmatched_users += 1
