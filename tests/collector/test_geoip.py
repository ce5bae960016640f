"""The optional GeoIP source of /api/v2/stats countries_used: the CSV table itself
(tables of lines, whole and broken) and the API's counts per country against counts
computed here from the ingested rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.wire.tomlschema import ConfigError
from collector import geoip
from collector.cli import cmd_check
from tests.collector.conftest import config_text
from tests.collector.test_activity import AGGREGATE, STATS, STATS_ROWS, minute_of, v2

CSV = """# first,last,country (DB-IP lite shape), plus IP2Location-style quoted integers
1.1.1.0,1.1.1.255,au
"33686018","33686018","FR","France"
2001:db8::,2001:db8::ffff,DE
4.4.4.0,4.4.4.255,-
"""


def test_a_table_places_addresses_in_its_ranges() -> None:
    t = geoip.parse(CSV)
    assert len(t) == 3  # the "-" range is unknown, not a country
    cases = {"1.1.1.0": "AU", "1.1.1.255": "AU", "1.1.2.0": None, "2.2.2.2": "FR", "2.2.2.3": None,
             "2001:db8::12": "DE", "2001:db9::": None, "4.4.4.4": None, "not-an-ip": None, "": None}  # fmt: skip
    assert {ip: t.country(ip) for ip in cases} == cases


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.1.1.0,1.1.1.9\n", "line 1: expected first,last,country"),
        ("\n# c\n1.1.1.x,1.1.1.9,AU\n", "line 3: '1.1.1.x' is no IP address"),
        ("1.1.1.9,1.1.1.0,AU\n", "line 1: 1.1.1.9..1.1.1.0 is no range"),
        ("1.1.1.0,2001:db8::,AU\n", "line 1: 1.1.1.0..2001:db8:: is no range"),
        ("1.1.1.0,1.1.1.9,AUS\n", "line 1: 'AUS' is no two-letter country code"),
        ("1.1.1.0,1.1.1.9,AU\n1.1.1.5,1.1.1.20,NZ\n", "ranges overlap: 1.1.1.0..1.1.1.9 and one starting at 1.1.1.5"),
    ],
)
def test_a_broken_table_names_its_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        geoip.parse(text)
    assert str(exc.value).startswith(message), str(exc.value)


def test_check_refuses_a_broken_file_naming_the_key_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "geo.csv"
    bad.write_text("1.1.1.0,1.1.1.9,AU\nnonsense\n")
    conf = tmp_path / "collector.toml"
    conf.write_text(config_text(tmp_path / "c.db", f'[geoip]\npath = "{bad}"\n'))
    assert cmd_check(str(conf)) == 78
    assert capsys.readouterr().err.strip() == f"config error: geoip.path: {bad}: line 2: expected first,last,country; got 'nonsense'"
    with pytest.raises(ConfigError) as exc:
        geoip.load(str(tmp_path / "missing.csv"))
    assert exc.value.path == "geoip.path"


def expected_countries(rows: list[dict[str, Any]]) -> dict[str, int]:
    # the test's own placement of the rows' ip_out (see CSV): 1.1.1.1 AU, 2.2.2.2 FR
    place = {"1.1.1.1": "AU", "2.2.2.2": "FR"}
    out: dict[str, int] = {}
    for r in rows:
        cc = place.get(r["ip_out"])
        if cc and r["count"]:
            out[cc] = out.get(cc, 0) + r["count"]
    return dict(sorted(out.items()))


async def test_countries_used_counts_requests_per_country_of_the_proxy(
    make_api: Callable[..., Any], tmp_path: Path
) -> None:
    table = tmp_path / "geo.csv"
    table.write_text(CSV)
    api = await make_api(extra=f'[geoip]\npath = "{table}"\n')
    await api.ingest({"logs": STATS_ROWS})
    gte, lte = "2026-03-28T00:00:00Z", "2026-03-30T23:59:59.999999Z"
    agg = await v2(api, AGGREGATE, timestamp__gte=gte, timestamp__lte=lte)
    want = expected_countries(STATS_ROWS)
    assert agg["countries_used"] == want and set(want) == {"AU", "FR"}
    hours = await v2(api, STATS, timestamp__gte=gte, timestamp__lte=lte, user_id=42)
    assert hours
    for h in hours:
        start = int(datetime.fromisoformat(h["timestamp"]).timestamp())
        rows = [r for r in STATS_ROWS if r["user_id"] == 42 and start <= minute_of(r) < start + 3600]
        assert h["countries_used"] == expected_countries(rows), h["timestamp"]


async def test_without_a_table_countries_used_is_empty(make_api: Callable[..., Any]) -> None:
    api = await make_api()
    await api.ingest({"logs": STATS_ROWS})
    agg = await v2(api, AGGREGATE, timestamp__gte="2026-03-28T00:00:00Z", timestamp__lte="2026-03-30T23:59:59Z")
    assert agg["countries_used"] == {} and agg["number_of_proxies_used"] == 3
