"""`check --config` and `run`/`serve` on broken configs: exit 78 and the full key path.

Each case starts from a valid config and breaks one thing; the expected message is the
key path the operator has to fix (and for some, what was expected). The examples shipped
in systemd/ are accepted once their absolute paths point into a temporary folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from shellkit import LOGFMT, REPO, cli

EX_CONFIG = 78
SHA = "a" * 64
Edit = Callable[[str], str]
Case = tuple[str, Edit, list[str]]  # (id, edit(valid text) -> broken text, fragments of the message)


def _agent_base(root: Path) -> str:
    return f"""\
[agent]
worker = "w1"
state_dir = "{root / 'state'}"
metrics_listen = ""

[collector]
url = "http://127.0.0.1:9"
token = "secret"

[[sources]]
path = "{root / 'access.log'}"
format = "squid"
"""


def _collector_base(root: Path) -> str:
    return f"""\
[server]
listen = "127.0.0.1:8428"

[storage]
backend = "sqlite"
path = "{root / 'c.db'}"
retention_days = 90

[[auth.tokens]]
name = "fleet"
role = "agent"
sha256 = "{SHA}"
"""


# (id, edit(text) -> text, expected fragments of the message)
AGENT_CASES: list[Case] = [
    ("unknown-key", lambda t: t.replace('worker = "w1"', 'worker = "w1"\nwrokers = 2'),
     ["agent.wrokers", "unknown key"]),
    ("unknown-table", lambda t: t + "\n[sppol]\nmax_bytes = 1\n", ["sppol", "unknown key"]),
    ("wrong-type", lambda t: t.replace('token = "secret"', 'token = "secret"\nflush_interval = "10s"'),
     ["collector.flush_interval", "expected a number"]),
    ("bad-value", lambda t: t.replace('token = "secret"', 'token = "secret"\nflush_interval = -1'),
     ["collector.flush_interval", "must be > 0"]),
    ("missing-required", lambda t: t.replace('url = "http://127.0.0.1:9"\n', ""),
     ["collector.url", "required key is missing"]),
    ("bad-toml", lambda t: t.replace('format = "squid"', 'format = "squid'), ["TOML syntax error"]),
    ("bad-timezone", lambda t: t + 'timezone = "Mars/Olympus_Mons"\n',
     ["sources[0].timezone", "IANA time zone"]),
    ("bad-format", lambda t: t.replace('format = "squid"', 'format = "sqiud"'),
     ["sources[0].format", "expected one of", "'squid'"]),
    ("bad-read-from", lambda t: t + 'read_from = "middle"\n', ["sources[0].read_from", "'beginning'"]),
    ("no-sources", lambda t: t.split("[[sources]]")[0], ["sources"]),
    ("token-and-token-file", lambda t: t.replace('token = "secret"', 'token = "secret"\ntoken_file = "/x"'),
     ["collector.token", "exactly one"]),
    ("unreadable-token-file", lambda t: t.replace('token = "secret"', 'token_file = "/nonexistent/agent.token"'),
     ["collector.token_file", "cannot read"]),
    ("bad-url", lambda t: t.replace("http://127.0.0.1:9", "127.0.0.1:9"), ["collector.url", "http://"]),
    ("bad-dimension", lambda t: t + '\n[aggregate]\ndrop_dimensions = ["domian"]\n',
     ["aggregate.drop_dimensions", "domian"]),
    ("bad-listen", lambda t: t.replace('metrics_listen = ""', 'metrics_listen = "9465"'),
     ["agent.metrics_listen"]),
    ("bad-log-level", lambda t: t.replace('worker = "w1"', 'worker = "w1"\nlog_level = "loud"'),
     ["agent.log_level", "'debug'"]),
    ("bool-as-number", lambda t: t + "max_line_bytes = true\n", ["sources[0].max_line_bytes", "expected an integer"]),
    ("infinite-number", lambda t: t.replace('token = "secret"', 'token = "secret"\nflush_interval = inf'),
     ["collector.flush_interval", "expected a finite number, got inf"]),
    ("quoted-table-key", lambda t: t + '\n[users.static."bob smith"]\nuser_id = -1\n',
     ['users.static."bob smith".user_id', "must be between 0 and"]),
    ("bad-user-pattern", lambda t: t + '\n[users]\npattern = "user-(?P<user_id>\\\\d+"\n', ["users.pattern"]),
    # the limits that used to be fixed in code: the whole message, key path first
    ("max-open-files-zero", lambda t: t + "max_open_files = 0\n",
     ["sources[0].max_open_files: must be between 1 and 16384, got 0"]),
    ("rotated-idle-polls-too-many", lambda t: t + "rotated_idle_polls = 10001\n",
     ["sources[0].rotated_idle_polls: must be between 1 and 10000, got 10001"]),
    ("fingerprint-bytes-too-few", lambda t: t + "fingerprint_bytes = 63\n",
     ["sources[0].fingerprint_bytes: must be between 64 and 65536, got 63"]),
    ("max-open-sessions-a-string", lambda t: t + 'max_open_sessions = "65536"\n',
     ["sources[0].max_open_sessions: expected an integer, got '65536'"]),
    ("max-duration-over-30-days", lambda t: t + "\n[aggregate]\nmax_duration = 2592001\n",
     ["aggregate.max_duration: must be between 1 and 2592000 seconds (30 days), got 2592001"]),
]

COLLECTOR_CASES: list[Case] = [
    ("unknown-key", lambda t: t.replace('listen = "127.0.0.1:8428"', 'lisen = "127.0.0.1:8428"'),
     ["server.lisen", "unknown key"]),
    ("wrong-type", lambda t: t.replace("retention_days = 90", 'retention_days = "90"'),
     ["storage.retention_days", "expected an integer"]),
    ("bad-value", lambda t: t.replace("retention_days = 90", "retention_days = 0"),
     ["storage.retention_days", "must be > 0"]),
    ("bad-listen", lambda t: t.replace("127.0.0.1:8428", "localhost"), ["server.listen", "host:port"]),
    ("bad-backend", lambda t: t.replace('backend = "sqlite"', 'backend = "mysql"'),
     ["storage.backend", "'sqlite'"]),
    ("bad-role", lambda t: t.replace('role = "agent"', 'role = "root"'),
     ["auth.tokens[0].role", "expected one of", "'agent'"]),
    ("bad-sha256", lambda t: t.replace(SHA, "not-a-hash"), ["auth.tokens[0].sha256", "64 hex"]),
    ("missing-required", lambda t: t.replace(f'sha256 = "{SHA}"\n', ""),
     ["auth.tokens[0].sha256", "required key is missing"]),
    ("user-without-user-id", lambda t: t.replace('role = "agent"', 'role = "user"'),
     ["auth.tokens[0].user_id", "required"]),
    ("duplicate-token", lambda t: t + f'\n[[auth.tokens]]\nname = "b"\nrole = "admin"\nsha256 = "{SHA}"\n',
     ["auth.tokens[1].sha256"]),
    ("bad-toml", lambda t: t.replace("[storage]", "[storage"), ["TOML syntax error"]),
    ("tokens-not-a-list", lambda t: t.split("[[auth.tokens]]")[0] + '[auth]\ntokens = "x"\n',
     ["auth.tokens", "expected an array"]),
    ("empty-storage-path", lambda t: re.sub(r'path = ".*c\.db"', 'path = ""', t), ["storage.path", "must not be empty"]),
    ("empty-token-name", lambda t: t.replace('name = "fleet"', 'name = ""'),
     ["auth.tokens[0].name", "must not be empty"]),
    ("float-for-int", lambda t: t.replace("retention_days = 90", "retention_days = 90.5"),
     ["storage.retention_days", "expected an integer"]),
]


def _run_case(service: str, command: str, base: str, edit: Edit, expected: list[str], tmp_path: Path) -> None:
    path = tmp_path / f"{service}.toml"
    path.write_text(edit(base))
    proc = cli(service, command, "--config", str(path), timeout=30)
    assert proc.returncode == EX_CONFIG, (proc.returncode, proc.stdout, proc.stderr)
    for fragment in expected:
        assert fragment in proc.stderr, (fragment, proc.stderr)
    assert "Traceback" not in proc.stderr


def test_valid_bases_pass(tmp_path: Path) -> None:
    for service, base in (("agent", _agent_base(tmp_path)), ("collector", _collector_base(tmp_path))):
        path = tmp_path / f"{service}.toml"
        path.write_text(base)
        proc = cli(service, "check", "--config", str(path), timeout=30)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("case", AGENT_CASES, ids=[c[0] for c in AGENT_CASES])
def test_agent_check_rejects(case: Case, tmp_path: Path) -> None:
    _, edit, expected = case
    _run_case("agent", "check", _agent_base(tmp_path), edit, expected, tmp_path)


@pytest.mark.parametrize("case", COLLECTOR_CASES, ids=[c[0] for c in COLLECTOR_CASES])
def test_collector_check_rejects(case: Case, tmp_path: Path) -> None:
    _, edit, expected = case
    _run_case("collector", "check", _collector_base(tmp_path), edit, expected, tmp_path)


@pytest.mark.parametrize("service,command,base,case", [
    ("agent", "run", _agent_base, dict((c[0], c) for c in AGENT_CASES)["unknown-key"]),
    ("collector", "serve", _collector_base, dict((c[0], c) for c in COLLECTOR_CASES)["unknown-key"]),
    ("collector", "serve", _collector_base, dict((c[0], c) for c in COLLECTOR_CASES)["bad-role"]),
], ids=["agent-run", "collector-serve", "collector-serve-bad-role"])
def test_run_and_serve_refuse_a_broken_config_with_78(service: str, command: str, base: Callable[[Path], str],
                                                      case: Case, tmp_path: Path) -> None:
    """Starting (not only `check`) fails the same way, so systemd does not restart-loop;
    as a service the error is one logfmt event in the journal, with the config's path."""
    _run_case(service, command, base(tmp_path), case[1], case[2], tmp_path)
    proc = cli(service, command, "--config", str(tmp_path / f"{service}.toml"), timeout=30)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and LOGFMT.match(lines[0]), proc.stderr
    assert " level=error " in lines[0] and f"config={tmp_path / f'{service}.toml'}" in lines[0]
    assert proc.stdout == ""


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    for service in ("agent", "collector"):
        proc = cli(service, "check", "--config", str(tmp_path / "nope.toml"), timeout=30)
        assert proc.returncode == EX_CONFIG
        assert "nope.toml" in proc.stderr


def localize(text: str, root: Path) -> str:
    """An example config with its absolute system paths moved under `root`."""
    return re.sub(r'"/(etc|var|run)/', lambda m: f'"{root}/{m.group(1)}/', text)


def test_examples_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "etc/proxymeter").mkdir(parents=True)
    (tmp_path / "etc/proxymeter/agent.token").write_text("example-token\n")
    for service in ("agent", "collector"):
        path = tmp_path / f"{service}.toml"
        path.write_text(localize((REPO / "systemd" / f"{service}.toml").read_text(), tmp_path))
        proc = cli(service, "check", "--config", str(path), timeout=30)
        assert proc.returncode == 0, proc.stderr
