"""The systemd units and the example configs shipped in systemd/.

- `systemd-analyze verify` accepts both units (ExecStart pointed at this environment's
  console script, since verify insists the binary exists), with no warning;
- the units carry the hardening and lifecycle settings the README promises, and stop
  timeouts longer than the services' own shutdown timeouts;
- each example config shows every key of its schema (active, or commented out for keys
  without a fixed default) and every active key is at its default.
"""

from __future__ import annotations

import configparser
import dataclasses
import re
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from shellkit import REPO

from agent import config as agent_config
from agent.wire import tomlschema
from collector import config as collector_config

UNITS = {"agent": REPO / "systemd/proxymeter-agent.service", "collector": REPO / "systemd/proxymeter-collector.service"}


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return int(m[1]) * (60 if m[2] == "min" else 1)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (Debian package systemd)")
def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    for name, unit in UNITS.items():
        script = Path(sys.executable).parent / f"proxymeter-{name}"
        binary = script if script.exists() else Path(sys.executable)
        text = unit.read_text().replace(f"/usr/bin/proxymeter-{name}", str(binary))
        copy = tmp_path / unit.name
        copy.write_text(text)
        proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        ours = [line for line in proc.stderr.splitlines() if unit.name in line]
        assert ours == [], ours  # unknown keys and bad values are only warnings: refuse them too


def test_units_are_hardened_notify_services() -> None:
    stop_needed = {
        "agent": agent_config.CollectorSection.__dataclass_fields__["shutdown_timeout"].default,
        "collector": collector_config.ServerConfig.__dataclass_fields__["shutdown_timeout"].default,
    }
    for name, path in UNITS.items():
        svc = _unit(path)["Service"]
        assert svc["Type"] == "notify"
        assert svc["ExecStart"] == (
            "/usr/bin/proxymeter-agent run --config /etc/proxymeter/agent.toml" if name == "agent"
            else "/usr/bin/proxymeter-collector serve --config /etc/proxymeter/collector.toml"
        )
        assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
        assert svc["StateDirectory"] == ("proxymeter-agent" if name == "agent" else "proxymeter")
        assert svc.get("User") or svc.get("DynamicUser") == "yes"
        for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                           "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
                           "SystemCallFilter": "@system-service", "RestartPreventExitStatus": "78",
                           "Restart": "on-failure"}.items():
            assert svc[key] == value, (name, key)
        assert _seconds(svc["WatchdogSec"]) > 0
        assert _seconds(svc["TimeoutStopSec"]) > stop_needed[name] + 5
        assert _unit(path)["Install"]["WantedBy"] == "multi-user.target"
    assert set(_unit(UNITS["agent"])["Service"]["SupplementaryGroups"].split()) == {"proxy", "adm"}
    # The example agent config's state_dir is the unit's state directory.
    agent_example = tomllib.loads((REPO / "systemd/agent.toml").read_text())
    assert agent_example["agent"]["state_dir"] == "/var/lib/proxymeter-agent"
    collector_example = tomllib.loads((REPO / "systemd/collector.toml").read_text())
    assert collector_example["storage"]["path"].startswith("/var/lib/proxymeter/")


_SHOWN = re.compile(r"^#\s?(\[\[?[\w.\" -]+\]\]?\s*|[A-Za-z_]\w* = .*)$")


def _shown_keys(text: str) -> dict[str, Any]:
    """The example with its commented-out keys and tables switched on."""
    return tomllib.loads("\n".join(_SHOWN.sub(r"\1", line) for line in text.splitlines()))


def _schema_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        origin, args = get_origin(tp), get_args(tp)
        if dataclasses.is_dataclass(tp):
            paths += _schema_paths(typing.cast(type, tp), path + ".")
        elif origin in (list, tuple) and args and dataclasses.is_dataclass(args[0]):
            paths += _schema_paths(typing.cast(type, args[0]), path + "[].")
        else:
            paths.append(path)
    return paths


def _has(doc: Any, path: str) -> bool:
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        items = doc.get(head[:-2]) if isinstance(doc, dict) else None
        return isinstance(items, list) and any(_has(item, rest) for item in items)
    if not isinstance(doc, dict) or head not in doc:
        return False
    return _has(doc[head], rest) if rest else True


@pytest.mark.parametrize("name,schema", [("agent", agent_config.Config), ("collector", collector_config.CollectorConfig)])
def test_examples_show_every_key(name: str, schema: type) -> None:
    doc = _shown_keys((REPO / f"systemd/{name}.toml").read_text())
    missing = [p for p in _schema_paths(schema) if not _has(doc, p)]
    assert missing == []


def test_example_values_are_the_defaults() -> None:
    cfg = tomlschema.load_text(agent_config.Config, (REPO / "systemd/agent.toml").read_text())
    for section in ("agent", "spool", "users", "aggregate"):
        assert getattr(cfg, section) == typing.cast(Any, type(getattr(cfg, section)))(), section
    col = cfg.collector
    assert col == agent_config.CollectorSection(url=col.url, token_file=col.token_file, token=col.token)
    for src in cfg.sources:
        assert src == agent_config.Source(path=src.path, format=src.format)
    assert tomlschema.load_text(collector_config.CollectorConfig, (REPO / "systemd/collector.toml").read_text()) \
        == collector_config.CollectorConfig()


_KEY_LINE = re.compile(r"^(#\s?)?([A-Za-z_]\w* = .*|\[\[?[\w.\" -]+\]\]?\s*)$")


@pytest.mark.parametrize("name", ["agent", "collector"])
def test_examples_comment_every_key(name: str) -> None:
    """Each key (active or commented out) has an explaining comment right above it or
    above the run of key lines it belongs to (e.g. `default_user_id`/`default_order_id`)."""
    lines = (REPO / f"systemd/{name}.toml").read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        m = _KEY_LINE.match(line)
        if not m or line.lstrip("# ").startswith("["):
            continue
        j = i - 1
        while j >= 0 and (_KEY_LINE.match(lines[j]) or lines[j].strip() == "#"):
            j -= 1
        if j < 0 or not lines[j].startswith("#"):
            uncommented.append(line)
    assert uncommented == []
