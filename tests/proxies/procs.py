"""Child processes for the proxy tests: start in their own session, stop by pid.

Each child gets a new session (so its process group holds every helper or worker it
forks) and its stdout/stderr go to files in the test's directory, shown when it fails.
`stop()` signals the group, waits a bounded time, then kills it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class Child:
    def __init__(self, name: str, argv: list[str], workdir: Path, *, env: dict[str, str] | None = None,
                 stdout: Path | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.out_path = stdout or workdir / f"{name}.stdout"
        self.err_path = workdir / f"{name}.stderr"
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True, env=env, cwd=cwd)
        self.pid = self.proc.pid

    def output(self) -> str:
        text = ""
        for p in (self.out_path, self.err_path):
            try:
                data = p.read_bytes()[-4000:].decode("utf-8", "replace")
            except OSError:
                continue
            text += f"--- {p.name} ---\n{data}\n"
        return text

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_port(self, port: int, timeout_s: float = 15.0) -> None:
        """Waits until something listens on 127.0.0.1:port, without connecting to it: a
        probe connection would be logged by the proxy as a request of its own."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before listening\n{self.output()}")
            if port in listening_ports():
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not listening on {port} after {timeout_s} s\n{self.output()}")

    def send(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        """Signals the whole process group, waits, then SIGKILLs what is left."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        code = self.wait(timeout_s)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if code is None:
            code = self.wait(5.0)
        return code


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this host (from /proc/net/tcp)."""
    ports: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 3 and f[3] == "0A":
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Polls predicate() until true or timeout; bounded in time and count."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / interval_s) + 2):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    return bool(predicate())


def file_lines(path: Path, prefix: bytes = b"") -> list[bytes]:
    """Non-empty lines of path starting with prefix (e.g. a client address, to leave
    out a proxy's start/stop notices)."""
    try:
        return [ln for ln in path.read_bytes().split(b"\n") if ln.strip() and ln.startswith(prefix)]
    except OSError:
        return []


def stable_file(path: Path, timeout_s: float = 5.0, quiet_s: float = 0.5) -> None:
    """Waits until path stops growing for quiet_s (the proxy has written its lines)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else -1
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])


def _installed(name: str, find: Callable[[], str | None]) -> str:
    """find() or, when it finds nothing, root installs the test packages
    (scripts/system-deps.sh, as `make test` does) and anyone else skips with the reason."""
    found = find()
    if found is None and os.geteuid() == 0:
        subprocess.run(["sh", str(REPO / "scripts" / "system-deps.sh"), "test"], check=False, timeout=600)
        found = find()
        if found is None:
            pytest.fail(f"{name} is missing and scripts/system-deps.sh did not install it")
    if found is None:
        pytest.skip(f"{name} is not installed and installing it needs root: run `make test` as root "
                    "or install the Debian package yourself")
    return found


def find_binary(name: str) -> str:
    return _installed(name, lambda: shutil.which(name, path=SBIN_PATH))


def find_file(path: Path) -> Path:
    return Path(_installed(str(path), lambda: str(path) if path.exists() else None))
