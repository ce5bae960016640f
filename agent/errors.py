"""The one table of normalised error codes, in the spirit of Webshare's `error_reason`.

A request is an error only when the PROXY failed to serve it: authentication failed,
an ACL denied it, the target name did not resolve, the connection to the target was
refused or timed out, the upstream was unreachable or broke, the request was invalid,
or the client gave up before the proxy finished. A status the target site itself
returned (its 404 or 500, relayed through a real upstream connection) is NOT an error.

Parsers map their proxy's own words onto these codes. A raw outcome that no parser
rule knows is never dropped: `unknown_error(raw)` turns it into "other:<raw>", so it
still counts as an error and the raw words stay visible in the API.
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN_PREFIX = "other:"
MAX_CODE_LEN = 64


@dataclass(frozen=True)
class ErrorCode:
    code: str
    title: str
    how_to_fix: str


_TABLE = (
    ErrorCode(
        "auth_failed",
        "Proxy authentication failed",
        "The proxy rejected the user name or password (or none was sent). Check the "
        "credentials configured in the client and that the user is active.",
    ),
    ErrorCode(
        "forbidden_host",
        "Target blocked by the proxy",
        "The proxy's access rules do not allow this target (host, port or method). "
        "Use another target, or ask the operator to allow it.",
    ),
    ErrorCode(
        "dns_failure",
        "Target host name did not resolve",
        "The proxy could not resolve the target's host name (no such domain, or the "
        "resolver failed). Check the spelling of the host name.",
    ),
    ErrorCode(
        "connection_refused",
        "Target refused the connection",
        "The target host actively refused the connection on this port. Check the port "
        "and that the target service is running.",
    ),
    ErrorCode(
        "timeout",
        "Timed out",
        "The target did not answer in time (connect or read timeout). Retry later, or "
        "raise the client's timeout for slow targets.",
    ),
    ErrorCode(
        "upstream_error",
        "Upstream unreachable or broken",
        "The proxy could not reach the target or its upstream, or the connection broke "
        "or returned an invalid response. Retry; if it persists the target is down.",
    ),
    ErrorCode(
        "client_aborted",
        "Client closed the connection early",
        "The client disconnected before the proxy finished the request. Check the "
        "client's timeouts; nothing is wrong with the proxy.",
    ),
    ErrorCode(
        "invalid_request",
        "Invalid request",
        "The proxy could not understand the client's request (malformed, unsupported "
        "method or protocol, too large). Fix the client's request.",
    ),
    ErrorCode(
        "proxy_error",
        "Internal proxy error",
        "The proxy itself failed (resources, overload, configuration). Retry; the "
        "operator should check the proxy's own log.",
    ),
)

ERRORS: dict[str, ErrorCode] = {e.code: e for e in _TABLE}

AUTH_FAILED = "auth_failed"
FORBIDDEN_HOST = "forbidden_host"
DNS_FAILURE = "dns_failure"
CONNECTION_REFUSED = "connection_refused"
TIMEOUT = "timeout"
UPSTREAM_ERROR = "upstream_error"
CLIENT_ABORTED = "client_aborted"
INVALID_REQUEST = "invalid_request"
PROXY_ERROR = "proxy_error"


def unknown_error(raw: str) -> str:
    """The code kept for a raw error no rule knows: "other:<raw>", at most 64 chars.

    Whitespace runs become "_" so the code is one token; an empty raw gives "other:unknown".
    """
    text = "_".join(raw.split()) or "unknown"
    return (UNKNOWN_PREFIX + text)[:MAX_CODE_LEN]


def describe(code: str) -> ErrorCode:
    """The table entry for a code, or a generic entry for an "other:<raw>" code."""
    known = ERRORS.get(code)
    if known is not None:
        return known
    raw = code[len(UNKNOWN_PREFIX):] if code.startswith(UNKNOWN_PREFIX) else code
    return ErrorCode(code, f"Unclassified proxy error ({raw})",
                     "The proxy reported an error proxymeter does not classify yet; see "
                     "the proxy's documentation for this outcome.")
