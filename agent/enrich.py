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

    def enrich(self, rec: Record) -> None:
        rec.domain = self.domains.registrable(rec.host)
        user_id, order_id, matched = self.users.map(rec.user)
        rec.user_id = user_id
        rec.order_id = order_id
        if not matched:
            self.unmatched_users += 1
