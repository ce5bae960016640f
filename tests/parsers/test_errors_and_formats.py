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


def _agent_config_section() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = text.index("<!-- section:agent-config -->")
    return text[start:text.index("<!-- /section:agent-config -->", start)]


def test_readme_lists_every_error_code_with_its_how_to_fix() -> None:
    section = _agent_config_section()
    table = section[section.index("**Error codes.**"):]
    rows = []
    for line in table.splitlines():
        if line.startswith("| `"):
            code, title, how = (cell.strip() for cell in line.strip("|").split(" | "))
            rows.append((code.strip("`"), title, how))
        elif rows:
            break
    assert rows == [(e.code, e.title, e.how_to_fix) for e in ERRORS.values()]


def test_readme_documents_the_domain_fallback() -> None:
    import re

    from agent.domains import FALLBACK_SLDS

    section = _agent_config_section()
    para = " ".join(section[section.index("**Domains.**"):section.index("**Error codes.**")].split())
    listed = re.search(r"the one before it is (.*?) \(", para)
    assert listed is not None
    assert set(re.findall(r"`([a-z]+)`", listed.group(1))) == FALLBACK_SLDS
