"""scripts/system-deps.sh, the Debian packages each make target needs, with stand-ins
for dpkg-query, apt-get and id on PATH (the real package manager is never called).

The stand-ins record what they were asked; apt-get also records the policy-rc.d in
force while it installs (daemons must not start), and can be told to fail.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from shellkit import REPO

SCRIPT = REPO / "scripts/system-deps.sh"


def _run(root: Path, target: str, installed: frozenset[str] = frozenset(), uid: int = 0,
         apt_fails: bool = False, host_policy: str | None = None,
         ) -> tuple[subprocess.CompletedProcess[str], list[str], Path]:
    """Run the script in `root` (a fresh folder per call); returns apt-get's log and the policy path."""
    root.mkdir()
    if host_policy is not None:
        (root / "policy-rc.d").write_text(host_policy)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    listed = " ".join(sorted(installed))
    stubs = {
        "dpkg-query": f'#!/bin/sh\nfor p; do :; done\ncase " {listed} " in *" $p "*) printf "install ok installed";;'
                      " *) exit 1;; esac\n",
        "id": f"#!/bin/sh\necho {uid}\n",
        "apt-get": '#!/bin/sh\necho "$*" >> "$STUB_LOG"\n'
                   f'case "$1" in install) cat "$PROXYMETER_POLICY_RC_D" >> "$STUB_LOG"; {"exit 100" if apt_fails else ":"};;'
                   " esac\n",
    }
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log, policy = root / "apt.log", root / "policy-rc.d"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_LOG": str(log),
           "PROXYMETER_POLICY_RC_D": str(policy)}
    proc = subprocess.run(["sh", str(SCRIPT), target], capture_output=True, text=True, timeout=60, env=env)
    return proc, log.read_text().splitlines() if log.exists() else [], policy


@pytest.mark.parametrize("target,packages", [
    ("test", "squid haproxy nginx libnginx-mod-stream dante-server publicsuffix systemd clickhouse-server"),
    ("demo", "publicsuffix"),
    ("bench", "goaccess publicsuffix clickhouse-server"),
    ("venv", "python3-venv"),
])
def test_installs_the_missing_packages_with_daemons_kept_from_starting(tmp_path: Path, target: str,
                                                                       packages: str) -> None:
    proc, calls, policy = _run(tmp_path / "run", target)
    assert proc.returncode == 0, proc.stderr
    assert calls == ["update -q", f"install -y -q --no-install-recommends {packages}", "#!/bin/sh", "exit 101"]
    assert not policy.exists()  # removed again: the host had none


def test_only_the_missing_packages_and_nothing_when_all_are_there(tmp_path: Path) -> None:
    proc, calls, _ = _run(tmp_path / "one", "bench", installed=frozenset({"publicsuffix", "clickhouse-server"}))
    assert proc.returncode == 0 and calls[1] == "install -y -q --no-install-recommends goaccess"
    proc, calls, _ = _run(tmp_path / "none", "bench", installed=frozenset({"publicsuffix", "goaccess", "clickhouse-server"}))
    assert (proc.returncode, calls, proc.stdout + proc.stderr) == (0, [], "")


def test_a_policy_rc_d_of_the_host_is_put_back_also_when_apt_fails(tmp_path: Path) -> None:
    host_policy = "#!/bin/sh\n# the host's own\nexit 0\n"
    proc, calls, policy = _run(tmp_path / "run", "demo", apt_fails=True, host_policy=host_policy)
    assert proc.returncode != 0
    assert calls[-2:] == ["#!/bin/sh", "exit 101"]  # ours was in force during the install
    assert policy.read_text() == host_policy
    assert sorted(p.name for p in policy.parent.iterdir()) == ["apt.log", "bin", "policy-rc.d"]


def test_without_root_it_names_the_missing_packages_and_goes_on(tmp_path: Path) -> None:
    proc, calls, _ = _run(tmp_path / "run", "test", installed=frozenset({"squid", "publicsuffix"}), uid=1000)
    assert proc.returncode == 0 and calls == []
    assert proc.stderr == ("system-deps: missing Debian packages: haproxy nginx libnginx-mod-stream dante-server "
                           "systemd clickhouse-server (run as root, or install them yourself)\n")


def test_an_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    proc, calls, _ = _run(tmp_path / "run", "nonsense")
    assert proc.returncode == 2 and calls == [] and proc.stderr.startswith("usage: ")
