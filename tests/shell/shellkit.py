"""Helpers for driving the two services as real child processes, the way systemd does.

Every process is started through `Procs` (the `procs` fixture in conftest.py), which
stops it by pid at teardown (SIGTERM, then SIGKILL), whatever the test did. Every wait is
bounded in time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
T = TypeVar("T")

_VALUE = r'(?:[^\s="\\]+|"(?:[^"\\]|\\.)*")'
LOGFMT = re.compile(  # one log event: ts level logger msg, then key=value fields
    rf"^ts=\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z level=(debug|info|warning|error) logger=\S+ msg={_VALUE}"
    rf"(?: [A-Za-z_][\w.]*={_VALUE})*$"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(24)
    return token, hashlib.sha256(token.encode()).hexdigest()


def cli(service: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m agent|collector ARGS` to completion."""
    return subprocess.run(
        [PY, "-m", service, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 30.0, every: float = 0.1) -> T:
    """Call fn until it returns something other than None/False; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        else:
            if last is not None and last is not False:
                return typing.cast(T, last)
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def http(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def query(base: str, path: str, token: str, **params: str | int) -> tuple[int, Any]:
    status, body = http(f"{base}{path}?{urllib.parse.urlencode(params)}", token)
    return status, json.loads(body) if body else None


def metric(text: str, name: str, labels: str = "") -> float:
    """Sum of a metric's samples whose label set contains `labels` (e.g. 'result="refused"')."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            if labels in head:
                total += float(value)
    return total


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        return self.popen.wait(timeout)

    def alive(self) -> bool:
        return self.popen.poll() is None


class Procs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[Proc] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.root / f"{name}-{len(self.procs)}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [PY, *args], cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
                try:
                    proc.popen.wait(15)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait(10)


def collector_toml(root: Path, port: int, tokens: list[dict[str, Any]], storage: str = "", server: str = "") -> str:
    blocks = []
    for tok in tokens:
        lines = [f'name = "{tok["name"]}"', f'role = "{tok["role"]}"', f'sha256 = "{tok["sha256"]}"']
        if "user_id" in tok:
            lines.append(f'user_id = {tok["user_id"]}')
        blocks.append("[[auth.tokens]]\n" + "\n".join(lines) + "\n")
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\nshutdown_timeout = 2.0\n{server}\n'
        f'[storage]\npath = "{root / "collector.db"}"\nsynchronous = "normal"\n{storage}\n' + "\n".join(blocks)
    )


def agent_toml(root: Path, url: str, token: str, sources: list[Path], *, flush: float = 0.5,
               metrics_port: int | None = None, extra: str = "") -> str:
    src = "".join(f'\n[[sources]]\npath = "{p}"\nformat = "squid"\nread_from = "beginning"\n' for p in sources)
    metrics = f"127.0.0.1:{metrics_port}" if metrics_port else ""
    return (
        f'[agent]\nworker = "test-worker"\nstate_dir = "{root / "agent-state"}"\n'
        f'metrics_listen = "{metrics}"\npoll_interval = 0.05\n\n'
        f'[collector]\nurl = "{url}"\ntoken = "{token}"\nflush_interval = {flush}\n'
        f"shutdown_timeout = 10.0\nmax_retry_delay = 1.0\n" + extra + src
    )


@dataclass
class Collector:
    proc: Proc
    base: str
    config: Path
    admin: str
    agent: str
    tokens: list[dict[str, Any]]


def without_uvloop(module: str) -> list[str]:
    """`python` arguments running `python -m MODULE` as if uvloop were not installed."""
    return ["-c", f"import sys; sys.modules['uvloop'] = None; from {module}.cli import main; sys.exit(main())"]


def ingest_status(base: str, token: str) -> int:
    """Status of an empty JSON ingest body sent with `token` (204: accepted, 401/403: refused)."""
    req = urllib.request.Request(f"{base}/analytics/ingest", data=b'{"logs": []}', method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def start_collector(procs: Procs, root: Path, extra_tokens: Sequence[dict[str, Any]] = (),
                    env: dict[str, str] | None = None, storage: str = "", server: str = "",
                    python_args: list[str] | None = None) -> Collector:
    """A collector on a free port with an admin and an agent token, once /healthz answers.

    `server` adds lines to [server], `storage` to [storage]; `python_args` replaces
    `-m collector` (e.g. without_uvloop("collector")).
    """
    port = free_port()
    admin, admin_sha = new_token()
    agent, agent_sha = new_token()
    tokens = [{"name": "admin", "role": "admin", "sha256": admin_sha},
              {"name": "agents", "role": "agent", "sha256": agent_sha}, *extra_tokens]
    config = root / "collector.toml"
    config.write_text(collector_toml(root, port, tokens, storage, server))
    proc = procs.start("collector", [*(python_args or ["-m", "collector"]), "serve", "--config", str(config)], env)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool | None:
        if not proc.alive():
            raise AssertionError(f"collector exited {proc.popen.returncode}:\n{proc.text()}")
        return http(f"{base}/healthz")[0] == 200

    wait_for("collector /healthz", healthy)
    return Collector(proc, base, config, admin, agent, tokens)


def totals(col: Collector, path: str = "/analytics/requests", **params: str | int) -> dict[str, int]:
    """Sum every numeric column of a chart over a wide window (all buckets)."""
    now = time.time()
    frm = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400 * 3))
    to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 86400))
    status, body = query(col.base, path, col.admin, **{"from": frm, "to": to, "interval": "1d", **params})
    assert status == 200, body
    out: dict[str, int] = {}
    for bucket in body["data"]:
        for key, value in bucket.items():
            if key != "bucket" and isinstance(value, str) and value.lstrip("-").isdigit():
                out[key] = out.get(key, 0) + int(value)
    return out
