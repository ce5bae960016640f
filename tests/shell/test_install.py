"""A fresh virtualenv installs the package like an operator would, and both commands run.

The build shows no warnings, the metadata lists exactly the issue's dependencies, extra
and commands, and the installed commands work as services outside the source tree.

`pip install <source tree>` (a real, non-editable install with the package index and
pip's cache), from a copy of the source so the build leaves nothing in the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shellkit import REPO, agent_toml, collector_toml, free_port, http, new_token, query, wait_for

from bench import loggen

pytestmark = pytest.mark.install


def _copy_source(dest: Path) -> Path:
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("agent", "collector"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=ignore)
    return src


def test_fresh_venv_installs_and_both_commands_run(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--verbose", "--disable-pip-version-check",
         str(_copy_source(tmp_path))],
        capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    # The build backend's own warnings (pyproject fields it deprecates) are shown with -v.
    build_warnings = [line for line in (pip.stdout + pip.stderr).splitlines()
                      if re.search(r"(Deprecation|BuildBackend|Setuptools)Warning|is deprecated", line)]
    assert build_warnings == []
    bindir = venv / "bin"
    for name, commands in (("proxymeter-agent", {"run", "check"}), ("proxymeter-collector", {"serve", "check", "token"})):
        out = subprocess.run([str(bindir / name), "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"usage: {name}")
        assert all(re.search(rf"\b{c}\b", out.stdout) for c in commands), out.stdout

    # `check` on the shipped example configs, paths moved into the temporary folder.
    (tmp_path / "etc/proxymeter").mkdir(parents=True)
    (tmp_path / "etc/proxymeter/agent.token").write_text("example\n")
    for service in ("agent", "collector"):
        text = re.sub(r'"/(etc|var|run)/', lambda m: f'"{tmp_path}/{m.group(1)}/', (REPO / f"systemd/{service}.toml").read_text())
        config = tmp_path / f"{service}.toml"
        config.write_text(text)
        out = subprocess.run([str(bindir / f"proxymeter-{service}"), "check", "--config", str(config)],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        broken = tmp_path / f"{service}-broken.toml"
        broken.write_text(text + "\n[nonsense]\n")
        out = subprocess.run([str(bindir / f"proxymeter-{service}"), "check", "--config", str(broken)],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 78 and "nonsense" in out.stderr

    # The distribution's metadata: exactly the runtime dependencies, the test extra and
    # the two commands of the issue, nothing else.
    meta = json.loads(subprocess.run(
        [str(venv / "bin/python"), "-c", (
            "import importlib.metadata as m, json; d = m.distribution('proxymeter'); "
            "print(json.dumps({'requires': d.requires, 'extras': d.metadata.get_all('Provides-Extra'), "
            "'scripts': sorted(f'{e.name}={e.value}' for e in d.entry_points if e.group == 'console_scripts'), "
            "'top': d.read_text('top_level.txt')}))")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=True,
    ).stdout)
    requires = {re.split(r"[<>=; \[]", r, maxsplit=1)[0]: r for r in meta["requires"]}
    assert set(requires) == {"aiohttp", "msgpack", "uvloop", "pytest", "pytest-asyncio"}, meta
    assert [n for n, r in requires.items() if "extra ==" not in r] == ["aiohttp", "msgpack", "uvloop"]
    assert 'sys_platform == "linux"' in requires["uvloop"]
    assert all('extra == "test"' in requires[n] for n in ("pytest", "pytest-asyncio"))
    assert meta["extras"] == ["test"]
    assert meta["scripts"] == ["proxymeter-agent=agent.cli:main", "proxymeter-collector=collector.cli:main"]
    assert set(meta["top"].split()) == {"agent", "collector"}

    # The installed distribution holds the two packages and the runtime dependencies only.
    listed = subprocess.run([str(venv / "bin/python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert {"proxymeter", "aiohttp", "msgpack", "uvloop"} <= names
    assert not names & {"pytest", "pytest-asyncio"}
    where = subprocess.run(
        [str(venv / "bin/python"), "-c", "import agent, collector, sys; print(agent.__file__); print(collector.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=True,
    ).stdout.split()
    assert all(str(venv) in w for w in where)

    # The installed commands as services, outside the source tree: a collector and an
    # agent delivering a generated squid log with --once; the API shows every request.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    port = free_port()
    admin, admin_sha = new_token()
    agent_token, agent_sha = new_token()
    col_config = run_dir / "collector.toml"
    col_config.write_text(collector_toml(run_dir, port, [{"name": "a", "role": "admin", "sha256": admin_sha},
                                                         {"name": "b", "role": "agent", "sha256": agent_sha}]))
    base = f"http://127.0.0.1:{port}"
    with open(run_dir / "collector.log", "wb") as col_log:
        collector = subprocess.Popen([str(bindir / "proxymeter-collector"), "serve", "--config", str(col_config)],
                                     cwd=run_dir, stdin=subprocess.DEVNULL, stdout=col_log, stderr=subprocess.STDOUT)
    try:
        wait_for("the installed collector", lambda: collector.poll() is None and http(f"{base}/healthz")[0] == 200)
        log = run_dir / "access.log"
        now_ms = int(time.time() * 1000)
        requests = loggen.write_file(log, 500, seed=9, start_ms=now_ms - 10 * 60_000, rate=5,
                                     users=10, domains=50, pool_size=500).totals()[0]
        agent_config = run_dir / "agent.toml"
        agent_config.write_text(agent_toml(run_dir, base, agent_token, [log]))
        once = subprocess.run([str(bindir / "proxymeter-agent"), "run", "--once", "--config", str(agent_config)],
                              cwd=run_dir, capture_output=True, text=True, timeout=120)
        assert once.returncode == 0, once.stderr
        frm = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(now_ms / 1000 - 3 * 3600))
        to = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(now_ms / 1000 + 3 * 3600))
        status, body = query(base, "/analytics/requests", admin, **{"from": frm, "to": to, "interval": "1d"})
        assert status == 200, body
        assert sum(int(b["total_count"]) for b in body["data"]) == requests
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            assert collector.wait(30) == 0, (run_dir / "collector.log").read_text()
        finally:
            if collector.poll() is None:
                collector.kill()
                collector.wait(10)


def test_make_creates_the_venv_once_quietly_and_every_target_reuses_it(tmp_path: Path) -> None:
    """`make venv` (the first step of demo, test and bench) on a copy of the tree: a new
    .venv with the package and the test extra, no build warnings; then demo, test and
    bench only reuse it, until pyproject.toml changes."""
    src = _copy_source(tmp_path)
    shutil.copy2(REPO / "Makefile", src / "Makefile")
    shutil.copytree(REPO / "scripts", src / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS")}
    first = subprocess.run(["make", "venv"], cwd=src, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.findall(r"\w+Warning\b.*", first.stdout + first.stderr) == []
    py = src / ".venv/bin/python"
    found = subprocess.run([str(py), "-c", "import agent, aiohttp, msgpack, pytest, pytest_asyncio; print(agent.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert found == str(src / "agent/__init__.py")  # editable: the venv runs this tree's code
    for target in ("demo", "test", "bench"):
        dry = subprocess.run(["make", "-n", target], cwd=src, capture_output=True, text=True, timeout=60, env=env)
        assert dry.returncode == 0, dry.stderr
        assert "-m venv" not in dry.stdout and "pip install" not in dry.stdout, (target, dry.stdout)
        assert f"sh scripts/system-deps.sh {target}" in dry.stdout, (target, dry.stdout)
    os.utime(src / "pyproject.toml", (time.time() + 5, time.time() + 5))
    for target in ("demo", "test", "bench"):
        dry = subprocess.run(["make", "-n", target], cwd=src, capture_output=True, text=True, timeout=60, env=env)
        assert "-m venv .venv" in dry.stdout and "pip install -q -e '.[test]'" in dry.stdout, (target, dry.stdout)
