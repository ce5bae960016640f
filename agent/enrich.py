"""Fill the fields a parser leaves empty: registrable domain, user_id, order_id."""

from __future__ import annotations

from agent.domains import DomainResolver
from agent.record import Record
from agent.users import UserMapper


class Enricher:
    def __init__(self, users: UserMapper, domains: DomainResolver) -> None:
        self.users = users
        self.domains = domains
        self.unmatched_users = 0  # records whose user name matched no static entry or pattern
        # The resolvers' own memo dicts, read directly: a hit then costs one dict lookup
        # instead of a method call (the resolvers clear them in place, never replace them).
        self._domain_memo = domains.memo
        self._user_memo = users.memo

    def enrich(self, rec: Record) -> None:
        domain = self._domain_memo.get(rec.host)
        rec.domain = domain if domain is not None else self.domains.registrable(rec.host)
        ids = self._user_memo.get(rec.user)
        if ids is None:
            ids = self.users.map(rec.user)
        rec.user_id, rec.order_id, matched = ids
        if not matched:
            self.unmatched_users += 1
