"""The README's "Proxy setup" section is the one source of the proxies' log settings.

The proxy tests do not keep their own copy of the recommended lines: they read them
from the fenced code blocks under each proxy's heading in README.md (between the
`section:proxy-setup` markers) and put them into the configs they write, changing only
the documented placeholders (a log path, dante's `to: ...`). So the tests run exactly
what the README tells operators to configure, and an edit of the README that breaks a
parser fails the suite.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- section:proxy-setup -->", "<!-- /section:proxy-setup -->"
_COMMENT = re.compile(r"\s+#\s.*$")  # "   # every ACL denial": an explanation, not config


@cache
def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise AssertionError(f"{README}: no {BEGIN} ... {END} section")
    return text[start + len(BEGIN):end]


@cache
def lines(heading: str) -> tuple[str, ...]:
    """Config lines of the code blocks under the `### <heading>...` of the section,
    stripped, without trailing `# comments` and blank lines."""
    parts = re.split(r"^### ", _section(), flags=re.M)
    found = [p for p in parts[1:] if p.startswith(heading)]
    if len(found) != 1:
        raise AssertionError(f"README proxy-setup: {len(found)} headings start with {heading!r}")
    out: list[str] = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", found[0], flags=re.M | re.S):
        for raw in block.splitlines():
            line = _COMMENT.sub("", raw).strip()
            if line:
                out.append(line)
    if not out:
        raise AssertionError(f"README proxy-setup: no config lines under {heading!r}")
    return tuple(out)


def line(heading: str, match: Callable[[str], bool] | str) -> str:
    """The one README line under heading that starts with `match` (or satisfies it)."""
    pred = match if callable(match) else (lambda s: s.startswith(match))  # type: ignore[union-attr]
    found = [s for s in lines(heading) if pred(s)]
    if len(found) != 1:
        raise AssertionError(f"README proxy-setup, {heading!r}: {len(found)} lines match {match!r}: {found}")
    return found[0]


def replaced(text: str, old: str, new: str) -> str:
    """text with its documented placeholder old (which must be there) replaced by new."""
    if old not in text:
        raise AssertionError(f"README line {text!r} no longer contains {old!r}")
    return text.replace(old, new)


SQUID, HAPROXY, NGINX, DANTE = "Squid", "HAProxy", "nginx stream", "Dante"


# --- the lines, as each test uses them -------------------------------------------------

def squid_logformat() -> str:
    return line(SQUID, "logformat ")


def squid_access_log(path: Path) -> str:
    return replaced(line(SQUID, "access_log "), "/var/log/squid/access.log", str(path))


def haproxy_global_log() -> str:
    return line(HAPROXY, "log stdout ")


def haproxy_http_log_format() -> str:
    return line(HAPROXY, lambda s: s.startswith("log-format ") and "[%tr]" in s)


def haproxy_tcp_log_format() -> str:
    return line(HAPROXY, lambda s: s.startswith("log-format ") and "[%t]" in s)


def haproxy_user_var() -> str:
    return line(HAPROXY, "http-request set-var(txn.pm_user) ")


def nginx_load_module() -> str:
    return line(NGINX, "load_module ")


def nginx_stream_module() -> Path:
    return Path(nginx_load_module().split()[1].rstrip(";"))


def nginx_log_format() -> str:
    return line(NGINX, "log_format ")


def nginx_access_log(path: Path) -> str:
    return replaced(line(NGINX, "access_log "), "/var/log/nginx/stream.log", str(path))


def dante_logoutput(path: Path) -> str:
    return replaced(line(DANTE, "logoutput: "), "/var/log/danted.log", str(path))


def dante_client_pass() -> str:
    return line(DANTE, "client pass ")


def dante_socks_pass() -> str:
    return line(DANTE, "socks pass ")


def dante_socks_block(to: str) -> str:
    """The README's block rule with its `to: ...` placeholder set to the denied target."""
    return replaced(line(DANTE, "socks block "), "to: ...", f"to: {to}")
