"""A fresh virtualenv installs the package like an operator would, and both commands run.

`pip install <source tree>` (a real, non-editable install with the package index and
pip's cache), from a copy of the source so the build leaves nothing in the repository.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from shellkit import REPO

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
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(_copy_source(tmp_path))],
        capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
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
