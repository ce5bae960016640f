"""The one table of error codes: our normalised codes and their Webshare-style form.

Parsers (agent.parsers.*, through agent.errors) put one of these codes, or an
"other:<raw>" code for an outcome no rule knows, on every failed request. The collector
shows them in two vocabularies from this same table:
- the FonProxy API (/analytics/errors) shows our `code`;
- the Webshare-compatible API (/api/v2/proxy/activity/, /api/v2/stats/) shows `reason`
  (Webshare's `error_reason`), `type` ("configuration": the client can fix it;
  "connection": the target or the network failed), `how_to_fix` and `http_status`
  (what the proxy answers the client, or would, for this outcome).
An "other:<raw>" code is its own reason (type connection, 502), so the raw words stay
visible in both APIs. It lives in agent/wire because both the agent and the collector
use it and the collector imports nothing else of the agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UNKNOWN_PREFIX = "other:"
MAX_CODE_LEN = 64

ErrorType = Literal["configuration", "connection"]


@dataclass(frozen=True)
class ErrorCode:
    code: str  # ours, as stored in rows and activity records
    title: str
    how_to_fix: str
    reason: str = ""  # Webshare-style error_reason ("" on entries built by describe: the code)
    type: ErrorType = "connection"
    http_status: int = 502

    @property
    def error_reason(self) -> str:
        return self.reason or self.code


TABLE: tuple[ErrorCode, ...] = (
    ErrorCode(
        "auth_failed",
        "Proxy authentication failed",
        "The proxy rejected the user name or password (or none was sent). Check the "
        "credentials configured in the client and that the user is active.",
        "client_connect_invalid_credentials", "configuration", 407,
    ),
    ErrorCode(
        "forbidden_host",
        "Target blocked by the proxy",
        "The proxy's access rules do not allow this target (host, port or method). "
        "Use another target, or ask the operator to allow it.",
        "client_connect_forbidden_host", "configuration", 403,
    ),
    ErrorCode(
        "dns_failure",
        "Target host name did not resolve",
        "The proxy could not resolve the target's host name (no such domain, or the "
        "resolver failed). Check the spelling of the host name.",
        "target_connect_dns_failure", "configuration", 502,
    ),
    ErrorCode(
        "connection_refused",
        "Target refused the connection",
        "The target host actively refused the connection on this port. Check the port "
        "and that the target service is running.",
        "target_connect_refused", "connection", 502,
    ),
    ErrorCode(
        "timeout",
        "Timed out",
        "The target did not answer in time (connect or read timeout). Retry later, or "
        "raise the client's timeout for slow targets.",
        "target_connect_timeout", "connection", 504,
    ),
    ErrorCode(
        "upstream_error",
        "Upstream unreachable or broken",
        "The proxy could not reach the target or its upstream, or the connection broke "
        "or returned an invalid response. Retry; if it persists the target is down.",
        "target_connect_failed", "connection", 502,
    ),
    ErrorCode(
        "client_aborted",
        "Client closed the connection early",
        "The client disconnected before the proxy finished the request. Check the "
        "client's timeouts; nothing is wrong with the proxy.",
        "client_connect_closed", "connection", 499,
    ),
    ErrorCode(
        "invalid_request",
        "Invalid request",
        "The proxy could not understand the client's request (malformed, unsupported "
        "method or protocol, too large). Fix the client's request.",
        "client_connect_invalid_request", "configuration", 400,
    ),
    ErrorCode(
        "proxy_error",
        "Internal proxy error",
        "The proxy itself failed (resources, overload, configuration). Retry; the "
        "operator should check the proxy's own log.",
        "proxy_internal_error", "connection", 500,
    ),
)  # fmt: skip

ERRORS: dict[str, ErrorCode] = {e.code: e for e in TABLE}
# Webshare reason -> our code: the table is one-to-one (a test checks it).
BY_REASON: dict[str, str] = {e.reason: e.code for e in TABLE}


def unknown_error(raw: str) -> str:
    """The code kept for a raw error no rule knows: "other:<raw>", at most 64 chars.

    Whitespace runs become "_" so the code is one token; an empty raw gives "other:unknown".
    """
    text = "_".join(raw.split()) or "unknown"
    return (UNKNOWN_PREFIX + text)[:MAX_CODE_LEN]


def describe(code: str) -> ErrorCode:
    """The table entry for a code, or a generic entry (its own reason) for any other code."""
    known = ERRORS.get(code)
    if known is not None:
        return known
    raw = code[len(UNKNOWN_PREFIX):] if code.startswith(UNKNOWN_PREFIX) else code
    return ErrorCode(code, f"Unclassified proxy error ({raw})",
                     "The proxy reported an error proxymeter does not classify yet; see "
                     "the proxy's documentation for this outcome.")


def error_reason(code: str) -> str | None:
    """Webshare's error_reason of a stored code; None for "" (no error)."""
    return describe(code).error_reason if code else None


def codes_for_reason(reason: str) -> tuple[str, ...]:
    """The stored codes whose error_reason is exactly `reason` (the inverse of error_reason)."""
    if reason in BY_REASON:
        return (BY_REASON[reason],)
    if not reason or reason in ERRORS:
        return ()  # a known code's reason is its table reason, never the code itself
    return (reason,)
