"""Normalised error codes, in the spirit of Webshare's `error_reason` (table: agent.wire.errorcodes).

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

# The table itself is shared with the collector (its Webshare-style API shows the same
# codes as error_reason), so it lives in agent.wire.errorcodes; these names stay here
# because every parser imports them from agent.errors.
from agent.wire.errorcodes import ERRORS, MAX_CODE_LEN, UNKNOWN_PREFIX, ErrorCode, describe, unknown_error

AUTH_FAILED = "auth_failed"
FORBIDDEN_HOST = "forbidden_host"
DNS_FAILURE = "dns_failure"
CONNECTION_REFUSED = "connection_refused"
TIMEOUT = "timeout"
UPSTREAM_ERROR = "upstream_error"
CLIENT_ABORTED = "client_aborted"
INVALID_REQUEST = "invalid_request"
PROXY_ERROR = "proxy_error"
# Every name above is a code of the table (checked at import: a code renamed there
# fails here, not in a parser at run time).
assert {AUTH_FAILED, FORBIDDEN_HOST, DNS_FAILURE, CONNECTION_REFUSED, TIMEOUT, UPSTREAM_ERROR,
        CLIENT_ABORTED, INVALID_REQUEST, PROXY_ERROR} == set(ERRORS)  # fmt: skip

__all__ = [
    "ERRORS", "MAX_CODE_LEN", "UNKNOWN_PREFIX", "ErrorCode", "describe", "unknown_error",
    "AUTH_FAILED", "FORBIDDEN_HOST", "DNS_FAILURE", "CONNECTION_REFUSED", "TIMEOUT", "UPSTREAM_ERROR",
    "CLIENT_ABORTED", "INVALID_REQUEST", "PROXY_ERROR",
]  # fmt: skip
