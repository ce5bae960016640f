"""API tokens -> roles. Only sha256 digests of tokens are configured or kept.

A token is sent as `Authorization: Bearer <token>` or, Webshare's scheme, as
`Authorization: Token <token>`; both work on every endpoint.

Roles: `agent` may only ingest; `admin` reads everything (optionally narrowed with
userId); `user` reads only its own user_id. The presented token is hashed and compared
with every configured digest using hmac.compare_digest, so timing does not reveal how
much of a digest matched or which entry did.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from collector.config import TokenConfig

TOKEN_BYTES = 32
SCHEMES = ("bearer", "token")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    user_id: int | None


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "pm_" + secrets.token_urlsafe(TOKEN_BYTES)


class TokenTable:
    def __init__(self, tokens: Iterable[TokenConfig]) -> None:
        self._entries = [(bytes.fromhex(t.sha256), Principal(t.name, t.role, t.user_id)) for t in tokens]

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> Principal | None:
        presented = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for stored, principal in self._entries:
            if hmac.compare_digest(presented, stored):
                found = principal
        return found

    def authenticate(self, headers: Mapping[str, str], roles: tuple[str, ...]) -> Principal:
        raw = headers.get("Authorization", "")
        scheme, _, token = raw.partition(" ")
        if scheme.lower() not in SCHEMES or not token.strip():
            raise AuthError(401, "unauthorized", "missing token (Authorization: Bearer <token> or Token <token>)")
        principal = self.lookup(token.strip())
        if principal is None:
            raise AuthError(401, "unauthorized", "unknown token")
        if principal.role not in roles:
            raise AuthError(403, "forbidden", f"role {principal.role!r} may not use this endpoint")
        return principal


def scope_user(principal: Principal, requested: int | None) -> int | None:
    """The user_id a read is narrowed to: a user token only ever sees its own."""
    if principal.role == "user":
        if requested is not None and requested != principal.user_id:
            raise AuthError(403, "forbidden", "this token may only read its own userId")
        return principal.user_id
    return requested
