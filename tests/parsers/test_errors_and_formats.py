"""The error table, unknown-error codes and the format registry."""

from __future__ import annotations

from datetime import timezone

import pytest

from agent.errors import ERRORS, describe, unknown_error
from agent.parsers import FORMATS, make_parser

REQUIRED = ("connection_refused", "dns_failure", "timeout", "auth_failed", "forbidden_host",
            "upstream_error", "client_aborted", "invalid_request", "proxy_error")


def test_table_has_every_required_code_with_text() -> None:
    assert set(REQUIRED) <= set(ERRORS)
    for code, e in ERRORS.items():
        assert e.code == code
        assert e.title and len(e.how_to_fix) > 20


@pytest.mark.parametrize("raw,code", [
    ("ERR_NEW/x", "other:ERR_NEW/x"),
    ("  two  words\there ", "other:two_words_here"),
    ("", "other:unknown"),
    ("x" * 100, "other:" + "x" * 58),
])
def test_unknown_error_keeps_the_raw_text(raw: str, code: str) -> None:
    assert unknown_error(raw) == code
    assert len(unknown_error(raw)) <= 64


def test_describe_known_and_unknown() -> None:
    assert describe("timeout") is ERRORS["timeout"]
    other = describe("other:ERR_NEW/x")
    assert other.code == "other:ERR_NEW/x" and "ERR_NEW/x" in other.title


def test_every_format_has_a_parser_and_unknown_is_rejected() -> None:
    assert FORMATS == ("squid", "haproxy", "nginx", "dante", "jsonl")
    for fmt in FORMATS:
        assert callable(make_parser(fmt, timezone.utc).parse)
    with pytest.raises(ValueError, match="sqiud"):
        make_parser("sqiud", timezone.utc)
