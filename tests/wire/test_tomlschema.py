from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from agent.wire.tomlschema import ConfigError, check, load_file, load_text, positive


@dataclass(frozen=True)
class Source:
    path: str
    format: Literal["squid", "haproxy"] = "squid"
    weight: float = field(default=1.0, metadata=check(positive))
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Server:
    listen: str = "127.0.0.1:1"
    verbose: bool = False
    limit: int | None = None


@dataclass(frozen=True)
class Root:
    server: Server = field(default_factory=Server)
    sources: list[Source] = field(default_factory=list)
    static: dict[str, int] = field(default_factory=dict)


def test_full_config_loads() -> None:
    cfg = load_text(
        Root,
        """
        [server]
        listen = "0.0.0.0:9"
        limit = 3
        [static]
        alice = 4
        [[sources]]
        path = "/a"
        weight = 2
        tags = ["x", "y"]
        """,
    )
    assert cfg == Root(Server("0.0.0.0:9", False, 3), [Source("/a", "squid", 2.0, ("x", "y"))], {"alice": 4})


@pytest.mark.parametrize(
    "text,path,message",
    [
        ("[server]\nlisen = 'x'", "server.lisen", "unknown key"),
        ("[server]\nverbose = 1", "server.verbose", "expected true or false, got 1"),
        ("[server]\nlimit = 'x'", "server.limit", "expected an integer, got 'x'"),
        ("[[sources]]\nformat = 'squid'", "sources[0].path", "required key is missing"),
        ("[[sources]]\npath = '/a'\n[[sources]]\npath='/b'\nformat = 'sqiud'", "sources[1].format", "expected one of 'squid', 'haproxy'; got 'sqiud'"),
        ("[[sources]]\npath = '/a'\nweight = 0", "sources[0].weight", "must be > 0, got 0"),
        ("[[sources]]\npath = '/a'\ntags = 'x'", "sources[0].tags", "expected an array"),
        ("[static]\nbob = 'x'", "static.bob", "expected an integer"),
        ("server = 3", "server", "expected a table"),
        ("[[sources]]\npath = '/a'\nweight = inf", "sources[0].weight", "expected a finite number, got inf"),
        ("[[sources]]\npath = '/a'\nweight = nan", "sources[0].weight", "expected a finite number, got nan"),
        ('[static]\n"bob smith" = "x"', 'static."bob smith"', "expected an integer"),
        ('[static]\n"a.b" = 1.5', 'static."a.b"', "expected an integer"),
        ('[server]\n"lis ten" = 1', 'server."lis ten"', "unknown key"),
    ],
)
def test_errors_name_the_full_key_path(text: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(Root, text)
    assert info.value.path == path
    assert message in info.value.message


def test_syntax_and_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TOML syntax error"):
        load_text(Root, "[server\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_file(Root, tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_file(Root, tmp_path / "bin.toml")
