"""agent.config and `proxymeter-agent check`: good configs load with their defaults,
broken ones fail with the full key path and exit status 78."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config
from agent.cli import main
from agent.wire.tomlschema import EXIT_CONFIG, ConfigError

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
[collector]
url = "http://127.0.0.1:8428"
token = "t0k"

[[sources]]
path = "/var/log/squid/access.log"
format = "squid"
"""


def test_minimal_config_has_documented_defaults() -> None:
    cfg = config.loads(MINIMAL)
    assert cfg.agent.worker == socket.gethostname()
    assert cfg.agent.state_dir == "/var/lib/proxymeter-agent"
    assert cfg.agent.metrics_listen == "127.0.0.1:9465"
    assert cfg.agent.log_level == "info"
    assert cfg.collector.flush_interval == 60.0
    assert cfg.collector.max_batch_rows == 100_000
    # the defaults keep a body's rows, profiles and activity records within the rule
    assert cfg.collector.max_batch_rows + cfg.activity.max_records_per_batch <= config.MAX_BODY_ENTRIES
    assert cfg.collector.shutdown_timeout == 20.0
    assert cfg.spool.max_bytes == 256 * 1024 * 1024
    src = cfg.sources[0]
    assert (src.path, src.format, src.timezone, src.read_from, src.max_line_bytes) == (
        "/var/log/squid/access.log", "squid", "UTC", "end", 65536)
    assert (src.max_open_files, src.rotated_idle_polls, src.fingerprint_bytes, src.max_open_sessions) == (
        128, 5, 1024, 65536)
    assert (cfg.aggregate.max_duration, cfg.aggregate.max_duration_ms) == (604800.0, 604_800_000)
    assert cfg.aggregate.dimensions == frozenset(
        ("user_id", "order_id", "port", "protocol", "ip_out", "ip_from", "peer_id", "worker", "domain", "error"))
    assert config.token_of(cfg) == "t0k"


def test_full_config(tmp_path: Path) -> None:
    token = tmp_path / "tok"
    token.write_text("  secret-from-file\n")
    cfg = config.loads(f"""
[agent]
worker = "w1"
state_dir = "{tmp_path}"
metrics_listen = ""
[collector]
url = "https://c.example:8428"
token_file = "{token}"
flush_interval = 2.5
max_batch_rows = 5
[spool]
max_bytes = 1048576
[aggregate]
drop_dimensions = ["ip_from", "peer_id"]
[[sources]]
path = "/var/log/haproxy/*.log"
format = "haproxy"
timezone = "Europe/Berlin"
read_from = "beginning"
max_line_bytes = 4096
""")
    assert cfg.agent.worker == "w1" and cfg.agent.metrics_listen == ""
    assert config.token_of(cfg) == "secret-from-file"
    assert cfg.collector.flush_interval == 2.5 and cfg.collector.max_batch_rows == 5
    assert "ip_from" not in cfg.aggregate.dimensions and "domain" in cfg.aggregate.dimensions
    assert cfg.sources[0].timezone == "Europe/Berlin"


BROKEN = [
    ("[agent]\nworker = 'w'\n[[sources]]\npath='/a'\nformat='squid'\n", "collector", "required key is missing"),
    (MINIMAL.replace('token = "t0k"', 'token = "t0k"\ntoken_file = "/x"'), "collector.token",
     "exactly one of collector.token and collector.token_file"),
    (MINIMAL.replace('token = "t0k"', ""), "collector.token", "exactly one"),
    (MINIMAL.replace('format = "squid"', 'format = "sqiud"'), "sources[0].format", "expected one of 'squid'"),
    (MINIMAL + 'timezone = "Mars/Olympus"\n', "sources[0].timezone", "IANA time zone"),
    (MINIMAL + 'read_from = "middle"\n', "sources[0].read_from", "expected one of 'end', 'beginning'"),
    (MINIMAL + "max_line_bytes = 10\n", "sources[0].max_line_bytes", "must be >= 256"),
    (MINIMAL + "colour = 1\n", "sources[0].colour", "unknown key"),
    (MINIMAL.replace("http://127.0.0.1:8428", "ftp://x"), "collector.url", "http:// or https://"),
    (MINIMAL.replace('token = "t0k"', 'token = "t0k"\nflush_interval = 0'), "collector.flush_interval",
     "must be > 0"),
    ("[agent]\nmetrics_listen = 'localhost'\n" + MINIMAL, "agent.metrics_listen", "host:port"),
    ("[agent]\nlog_level = 'loud'\n" + MINIMAL, "agent.log_level", "expected one of 'debug'"),
    ("[aggregate]\ndrop_dimensions = ['colour']\n" + MINIMAL, "aggregate.drop_dimensions", "unknown dimension"),
    ("[spool]\nmax_bytes = 10\n" + MINIMAL, "spool.max_bytes", "must be >="),
    (MINIMAL + '[[sources]]\npath = "/var/log/squid/access.log"\nformat = "nginx"\n', "sources[1].path",
     "same path as sources[0]"),
    ('[collector]\nurl = "http://127.0.0.1:1"\ntoken = "t"\n', "sources", "required key is missing"),
    ('sources = []\n[collector]\nurl = "http://127.0.0.1:1"\ntoken = "t"\n', "sources", "at least one"),
    (MINIMAL.replace('token = "t0k"', 'token_file = "/nonexistent/tok"'), "collector.token_file", "cannot read"),
]


# The limits that were fixed in code: (table, key, default, a good value, a value out of
# range and its exact error, a value of the wrong type and its exact error). The table
# "sources" is the [[sources]] entry of MINIMAL.
LIMITS = [
    ("sources", "max_open_files", 128, 2,
     "0", "sources[0].max_open_files: must be between 1 and 16384, got 0",
     '"2"', "sources[0].max_open_files: expected an integer, got '2'"),
    ("sources", "rotated_idle_polls", 5, 1,
     "10001", "sources[0].rotated_idle_polls: must be between 1 and 10000, got 10001",
     "5.0", "sources[0].rotated_idle_polls: expected an integer, got 5.0"),
    ("sources", "fingerprint_bytes", 1024, 4096,
     "63", "sources[0].fingerprint_bytes: must be between 64 and 65536, got 63",
     "true", "sources[0].fingerprint_bytes: expected an integer, got True"),
    ("sources", "max_open_sessions", 65536, 3,
     "0", "sources[0].max_open_sessions: must be between 1 and 4194304, got 0",
     '"many"', "sources[0].max_open_sessions: expected an integer, got 'many'"),
    ("aggregate", "max_duration", 604800.0, 90.5,
     "2592001", "aggregate.max_duration: must be between 1 and 2592000 seconds (30 days), got 2592001",
     '"7d"', "aggregate.max_duration: expected a number, got '7d'"),
    ("activity", "sample_rate", 1.0, 0.25,
     "0", "activity.sample_rate: must be > 0 and <= 1 (1 = every request), got 0",
     '"all"', "activity.sample_rate: expected a number, got 'all'"),
    ("activity", "max_records_per_batch", 20000, 1,
     "100001", "activity.max_records_per_batch: must be between 1 and 100000, got 100001",
     "1.5", "activity.max_records_per_batch: expected an integer, got 1.5"),
]


def _with(table: str, key: str, value: str) -> str:
    if table == "sources":
        return MINIMAL + f"{key} = {value}\n"
    return f"[{table}]\n{key} = {value}\n" + MINIMAL


def _value(cfg: config.Config, table: str, key: str) -> object:
    return getattr(cfg.sources[0] if table == "sources" else getattr(cfg, table), key)


@pytest.mark.parametrize("table,key,default,good,bad,bad_error,wrong,wrong_error", LIMITS,
                         ids=[f"{t}.{k}" for t, k, *_ in LIMITS])
def test_limit_keys_default_accept_and_refuse_with_the_full_key_path(
        table: str, key: str, default: float, good: float, bad: str, bad_error: str, wrong: str,
        wrong_error: str) -> None:
    assert _value(config.loads(MINIMAL), table, key) == default
    assert _value(config.loads(_with(table, key, repr(good))), table, key) == good
    for text, error in ((bad, bad_error), (wrong, wrong_error)):
        with pytest.raises(ConfigError) as err:
            config.loads(_with(table, key, text))
        assert str(err.value) == error


def test_limit_ranges_include_their_bounds() -> None:
    cases = {"max_open_files": (1, 16384), "rotated_idle_polls": (1, 10000), "fingerprint_bytes": (64, 65536),
             "max_open_sessions": (1, 4_194_304)}
    for key, bounds in cases.items():
        for v in bounds:
            assert getattr(config.loads(MINIMAL + f"{key} = {v}\n").sources[0], key) == v
    for v, ms in ((1, 1000), (1.5, 1500), (2_592_000, 2_592_000_000)):
        assert config.loads(f"[aggregate]\nmax_duration = {v}\n" + MINIMAL).aggregate.max_duration_ms == ms


def test_activity_bounds_and_the_body_limit() -> None:
    """sample_rate 1 and max_records_per_batch 1..100000 are accepted; with
    collector.max_batch_rows the sum must stay <= 150000 (rows, profiles and activity
    share one body and the collector's server.max_rows)."""
    for v in (1, 1.0, 1e-9):
        assert config.loads(f"[activity]\nsample_rate = {v}\n" + MINIMAL).activity.sample_rate == v
    # the default collector.max_batch_rows (100000) leaves 50000 to the activity records
    for v in (1, 50_000):
        assert config.loads(f"[activity]\nmax_records_per_batch = {v}\n" + MINIMAL).activity.max_records_per_batch == v
    with pytest.raises(ConfigError) as err:
        config.loads("[activity]\nmax_records_per_batch = 50001\n" + MINIMAL)
    assert err.value.path == "activity.max_records_per_batch" and "(100000)" in err.value.message
    half = MINIMAL.replace('token = "t0k"', 'token = "t0k"\nmax_batch_rows = 50000')
    assert config.loads("[activity]\nmax_records_per_batch = 100000\n" + half).activity.max_records_per_batch == 100_000
    big = MINIMAL.replace('token = "t0k"', 'token = "t0k"\nmax_batch_rows = 60000')
    assert config.loads("[activity]\nmax_records_per_batch = 90000\n" + big).activity.max_records_per_batch == 90000
    with pytest.raises(ConfigError) as err:
        config.loads("[activity]\nmax_records_per_batch = 90001\n" + big)
    assert err.value.path == "activity.max_records_per_batch" and "150000" in err.value.message
    assert config.loads(MINIMAL).activity.enabled is True
    assert config.loads("[activity]\nenabled = false\n" + MINIMAL).activity.enabled is False
    with pytest.raises(ConfigError) as err:
        config.loads("[activity]\nenabled = 1\n" + MINIMAL)
    assert err.value.path == "activity.enabled"
    # without activity records the sum does not matter
    assert not config.loads("[activity]\nenabled = false\nmax_records_per_batch = 100000\n"
                            + big.replace("60000", "140000")).activity.enabled
    with pytest.raises(ConfigError) as err:
        config.loads("[activity]\nsampling = 0.5\n" + MINIMAL)
    assert err.value.path == "activity.sampling"


@pytest.mark.parametrize("text,path,message", BROKEN)
def test_broken_configs_name_the_key(text: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.loads(text)
    assert err.value.path == path
    assert message in err.value.message


def test_check_command_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL)
    assert main(["check", "--config", str(good)]) == 0
    assert capsys.readouterr().out.strip() == "config OK"
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace('format = "squid"', 'format = "sqiud"'))
    assert main(["check", "--config", str(bad)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "sources[0].format" in err and "sqiud" in err
    assert main(["check", "--config", str(tmp_path / "missing.toml")]) == EXIT_CONFIG


def test_run_with_bad_config_exits_78_as_a_process(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "bogus = true\n")
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(bad)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert "sources[0].bogus: unknown key" in proc.stderr
