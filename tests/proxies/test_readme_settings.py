"""The log settings cannot drift: the README's lines are what the proxy tests configure
and what the parsers document. Needs no proxy program (runs in a second)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxies import readme
from tests.proxies import test_dante, test_haproxy, test_nginx, test_squid
from tests.proxies import traffic as T
from tests.proxies.origin import Origin

pytestmark = pytest.mark.proxies


@pytest.fixture
def quiet_origin() -> Iterator[Origin]:
    o = Origin(dns_port=0)  # only its port numbers are used here
    try:
        yield o
    finally:
        o.close()


def _spaces(text: str) -> str:
    """Runs of blanks as one space (the README aligns dante's rules)."""
    return re.sub(r"[ \t]+", " ", text)


def _config_lines(path: Path) -> set[str]:
    return {ln.strip() for ln in path.read_text().splitlines()}


def test_each_config_holds_the_readme_lines(quiet_origin: Origin, tmp_path: Path) -> None:
    o = quiet_origin
    squid = _config_lines(test_squid.squid_config(tmp_path, 3128, o))
    assert readme.squid_logformat() in squid
    assert readme.squid_access_log(tmp_path / "access.log") in squid

    http = _config_lines(test_haproxy.http_config(tmp_path, 8080, o))
    tcp_path = test_haproxy.tcp_config(tmp_path, {k: 9000 + i for i, k in enumerate(test_haproxy.TCP_FRONTENDS)}, o)
    tcp = _config_lines(tcp_path)
    for conf in (http, tcp):
        assert readme.haproxy_global_log() in conf
    assert readme.haproxy_http_log_format() in http and readme.haproxy_user_var() in http
    assert readme.haproxy_tcp_log_format() in tcp
    # every tcp frontend logs with the README's format
    assert [ln.strip() for ln in tcp_path.read_text().splitlines() if ln.strip().startswith("log-format ")] \
        == [readme.haproxy_tcp_log_format()] * len(test_haproxy.TCP_FRONTENDS)

    nginx = _config_lines(test_nginx.nginx_config(tmp_path, {k: 9100 + i for i, k in
                                                            enumerate(("echo", "http", "refused", "denied", "dns"))}, o))
    assert {readme.nginx_load_module(), readme.nginx_log_format(),
            readme.nginx_access_log(tmp_path / "stream.log")} <= nginx

    dante = _config_lines(test_dante.dante_config(tmp_path, 1080))
    assert {readme.dante_logoutput(tmp_path / "danted.log"), readme.dante_client_pass(),
            readme.dante_socks_pass(), readme.dante_socks_block(f"{T.BLOCKED_IP}/32")} <= dante


@pytest.mark.parametrize("module,lines", [
    ("squid", [readme.squid_logformat, lambda: readme.squid_access_log(Path("/var/log/squid/access.log"))]),
    ("haproxy", [readme.haproxy_http_log_format, readme.haproxy_tcp_log_format, readme.haproxy_user_var]),
    ("nginx", [readme.nginx_log_format, lambda: readme.nginx_access_log(Path("/var/log/nginx/stream.log"))]),
    ("dante", [lambda: readme.dante_logoutput(Path("/var/log/danted.log")), readme.dante_client_pass,
               readme.dante_socks_pass, lambda: readme.dante_socks_block("...")]),
])
def test_parsers_document_the_readme_lines(module: str, lines: list) -> None:
    doc = _spaces(importlib.import_module(f"agent.parsers.{module}").__doc__ or "")
    missing = [get() for get in lines if _spaces(get()) not in doc]
    assert not missing, f"agent/parsers/{module}.py docstring lacks the README's {missing}"
