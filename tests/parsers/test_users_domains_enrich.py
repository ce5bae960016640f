"""User mapping, registrable domains (small PSL written here + the system list), enrich."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.domains import SYSTEM_PSL, DomainResolver
from agent.enrich import Enricher
from agent.record import Record
from agent.users import DEFAULT_PATTERN, StaticUser, UserMapper, UsersConfig
from agent.wire.tomlschema import ConfigError, load_text

# --- users -------------------------------------------------------------------------


@pytest.mark.parametrize("name,expected", [
    ("user-1001", (1001, 0, True)),
    ("user-1001-order-7", (1001, 7, True)),
    ("user-0", (0, 0, True)),
    ("user-1001-order-", (5, 6, False)),
    ("User-1001", (5, 6, False)),
    ("user-1001 ", (5, 6, False)),
    ("bob smith", (42, 3, True)),  # static table
    ("user-77", (77, 1, True)),  # static wins over the pattern
    ("", (5, 6, False)),
    ("user-99999999999999999999", (5, 6, False)),  # beyond int64: unmatched, not a crash
    ("user-\u0661\u0662", (5, 6, False)),  # non-ASCII digits are not ids
])
def test_default_pattern_static_and_defaults(name: str, expected: tuple[int, int, bool]) -> None:
    m = UserMapper(UsersConfig(default_user_id=5, default_order_id=6,
                               static={"bob smith": StaticUser(42, 3), "user-77": StaticUser(77, 1)}))
    assert m.map(name) == expected
    assert m.map(name) == expected  # memoised answer is the same


def test_custom_pattern_from_toml() -> None:
    cfg = load_text(UsersConfig, r'''
pattern = '^(?P<order_id>\d+)_(?P<user_id>\d+)@shop$'
default_user_id = 1
[static."x y"]
user_id = 9
''')
    m = UserMapper(cfg)
    assert m.map("12_34@shop") == (34, 12, True)
    assert m.map("x y") == (9, 0, True)
    assert m.map("user-5") == (1, 0, False)
    assert cfg.pattern != DEFAULT_PATTERN


def test_optional_user_group_that_took_no_part_is_unmatched() -> None:
    m = UserMapper(UsersConfig(pattern=r"(?:u(?P<user_id>\d+)|guest)(?:-o(?P<order_id>\d+))?",
                               default_user_id=8, default_order_id=9))
    assert m.map("u12-o3") == (12, 3, True)
    assert m.map("u12") == (12, 0, True)  # an absent order is order 0 of a matched user
    assert m.map("guest-o3") == (8, 9, False)  # no user_id in the name: the default, counted
    assert m.map("guest") == (8, 9, False)


@pytest.mark.parametrize("toml,path,needle", [
    ('pattern = "(?P<uid>x)"', "pattern", "user_id"),
    ('pattern = "(?P<user_id>x"', "pattern", "regular expression"),
    ('pattern = "(?P<user_id>x)(?P<plan>y)"', "pattern", "plan"),
    ("default_user_id = -1", "default_user_id", "between"),
    ('[static."a"]\norder_id = 1', "static.a.user_id", ""),
])
def test_bad_user_config_names_the_key(toml: str, path: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(UsersConfig, toml)
    assert err.value.path == path
    assert needle in err.value.message


# --- domains -----------------------------------------------------------------------

PSL = """// a tiny list in the real file's syntax
com
uk
co.uk
// wildcard with an exception
*.ck
!www.ck
jp
*.kawasaki.jp
!city.kawasaki.jp
公司.cn
cn
"""


@pytest.mark.parametrize("host,expected", [
    ("www.example.com", "example.com"),
    ("WWW.Example.COM.", "example.com"),
    ("example.com", "example.com"),
    ("com", "com"),  # itself a public suffix: unchanged
    ("a.b.bbc.co.uk", "bbc.co.uk"),
    ("co.uk", "co.uk"),
    ("foo.bar.ck", "foo.bar.ck"),  # *.ck: bar.ck is a suffix
    ("bar.ck", "bar.ck"),
    ("www.ck", "www.ck"),  # exception: www.ck is registrable
    ("a.www.ck", "www.ck"),
    ("x.y.kawasaki.jp", "x.y.kawasaki.jp"),
    ("a.city.kawasaki.jp", "city.kawasaki.jp"),
    ("食狮.公司.cn", "食狮.公司.cn"),
    ("a.xn--85x722f.xn--55qx5d.cn", "xn--85x722f.xn--55qx5d.cn"),  # punycode of the rule
    ("a.b.unlisted", "b.unlisted"),  # implicit "*" rule
    ("localhost", "localhost"),
    ("", ""),
    ("10.1.2.3", "10.1.2.3"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"),
])
def test_psl_rules(host: str, expected: str) -> None:
    d = DomainResolver(PSL)
    assert d.registrable(host) == expected
    assert d.registrable(host) == expected


@pytest.mark.parametrize("host,expected", [
    ("www.bbc.co.uk", "bbc.co.uk"),
    ("a.b.example.com", "example.com"),
    ("a.example.com.br", "example.com.br"),
    ("x.y.example.de", "example.de"),
    ("a.co.xyz", "co.xyz"),  # 3-letter TLD: two labels
    ("example.co.uk", "example.co.uk"),
    ("co.uk", "co.uk"),
    ("8.8.8.8", "8.8.8.8"),
])
def test_fallback_without_a_list(host: str, expected: str) -> None:
    assert DomainResolver(None).registrable(host) == expected


def test_load_from_file_and_missing_explicit_path(tmp_path: Path) -> None:
    f = tmp_path / "psl.dat"
    f.write_text(PSL, encoding="utf-8")
    assert DomainResolver.load(str(f)).registrable("a.www.ck") == "www.ck"
    with pytest.raises(OSError):
        DomainResolver.load(str(tmp_path / "missing.dat"))


@pytest.mark.skipif(not os.path.exists(SYSTEM_PSL), reason="publicsuffix package not installed")
@pytest.mark.parametrize("host,expected", [
    ("www.bbc.co.uk", "bbc.co.uk"),
    ("user.github.io", "user.github.io"),  # private-section rule github.io
    ("a.b.example.com.au", "example.com.au"),
    ("www.city.kawasaki.jp", "city.kawasaki.jp"),
    ("nosuchhost.invalid", "nosuchhost.invalid"),
])
def test_system_list(host: str, expected: str) -> None:
    d = DomainResolver.load()
    assert d.uses_psl
    assert d.registrable(host) == expected


# --- enrich ------------------------------------------------------------------------


def test_enricher_fills_domain_ids_and_counts_unmatched() -> None:
    e = Enricher(UserMapper(UsersConfig(default_user_id=3)), DomainResolver(PSL))
    recs = [
        Record(0, 0, 0, 0, "10.0.0.1", "user-12-order-4", "WWW.BBC.co.uk", 443, "HTTPS"),
        Record(0, 0, 0, 0, "10.0.0.1", "someone", "10.9.9.9", 80, "HTTP"),
        Record(0, 0, 0, 0, "10.0.0.1", "", "", 0, "SOCKS"),
    ]
    for r in recs:
        e.enrich(r)
    assert [(r.domain, r.user_id, r.order_id) for r in recs] == [
        ("bbc.co.uk", 12, 4), ("10.9.9.9", 3, 0), ("", 3, 0)]
    assert e.unmatched_users == 2
