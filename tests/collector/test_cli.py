"""The proxymeter-collector command: check, token create, and serve as a real process
(sd_notify READY/WATCHDOG/STOPPING, SIGHUP token reload, SIGTERM shutdown)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.wire.tomlschema import EXIT_CONFIG
from tests.collector.conftest import ADMIN, AGENT, config_text, sha

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector", *args], cwd=REPO, capture_output=True, text=True, timeout=30, **kw  # type: ignore[call-overload]
    )


def test_check_ok_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(config_text(tmp_path / "c.db"))
    res = run("check", "--config", str(good))
    assert (res.returncode, res.stdout.strip()) == (0, "config OK")
    bad = tmp_path / "bad.toml"
    bad.write_text(config_text(tmp_path / "c.db").replace('role = "admin"', 'role = "root"'))
    res = run("check", "--config", str(bad))
    assert res.returncode == EXIT_CONFIG
    assert "auth.tokens[1].role" in res.stderr and "'root'" in res.stderr


def test_token_create_prints_token_then_its_entry() -> None:
    res = run("token", "create", "--role", "user", "--user-id", "42", "--name", "customer-42")
    assert res.returncode == 0, res.stderr
    token, _, rest = res.stdout.partition("\n")
    entry = tomllib.loads(rest)["auth"]["tokens"][0]
    assert entry == {"name": "customer-42", "role": "user", "user_id": 42, "sha256": sha(token)}
    assert token not in rest
    assert run("token", "create", "--role", "user").returncode == 2
    other = run("token", "create", "--role", "agent")
    assert other.returncode == 0 and other.stdout.split("\n")[0] != token


class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.seen: list[str] = []

    def wait_for(self, message: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while message not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {message!r}; got {self.seen}")
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notifications]:
    n = Notifications(tmp_path / "notify.sock")
    yield n
    n.close()


def request(url: str, token: str | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serve_lifecycle(tmp_path: Path, notify: Notifications) -> None:
    cfg = tmp_path / "collector.toml"
    cfg.write_text(config_text(tmp_path / "c.db", 'listen = "127.0.0.1:0"\n').replace('listen = "127.0.0.1:8428"\n', ""))
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "serve", "--config", str(cfg)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1")
        assert proc.stderr is not None
        port = None
        for _ in range(50):
            line = proc.stderr.readline()
            m = re.search(r'msg=listening address=127\.0\.0\.1:(\d+)', line)
            if m:
                port = int(m.group(1))
                break
        assert port, "no listening line"
        base = f"http://127.0.0.1:{port}"
        assert request(f"{base}/healthz") == (200, b'{"status": "ok"}')
        body = json.dumps({"logs": [{"ts": "2026-03-15 10:00:00", "domain": "a.com", "count": 4}]}).encode()
        assert request(f"{base}/analytics/ingest", AGENT, body)[0] == 204
        q = f"{base}/analytics/requests?from=2026-03-15&to=2026-03-16&interval=1d"
        status, data = request(q, ADMIN)
        assert status == 200 and json.loads(data)["data"][0]["total_count"] == "4"
        assert request(q, "new-admin")[0] == 401
        # Both reload results are there before the first reload (at 0), so rate() works.
        metrics = request(f"{base}/metrics")[1].decode()
        assert 'proxymeter_collector_config_reloads_total{result="applied"} 0\n' in metrics
        assert 'proxymeter_collector_config_reloads_total{result="refused"} 0\n' in metrics

        # SIGHUP with a bad file: refused, the old tokens still work.
        good_text = cfg.read_text()
        cfg.write_text(good_text.replace('role = "admin"', 'role = "boss"'))
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            line = proc.stderr.readline()
            if "config reload refused" in line:
                break
        else:
            raise AssertionError("reload refusal not logged")
        assert "auth.tokens[1].role" in line
        assert request(q, ADMIN)[0] == 200
        # SIGHUP with a new token list: applied without restart.
        cfg.write_text(good_text.replace(sha(ADMIN), sha("new-admin")))
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if "config reloaded" in proc.stderr.readline():
                break
        else:
            raise AssertionError("reload not logged")
        assert request(q, "new-admin")[0] == 200
        assert request(q, ADMIN)[0] == 401
        metrics = request(f"{base}/metrics")[1].decode()
        # The same result labels as the agent's proxymeter_agent_reloads_total.
        reloads = sorted(line for line in metrics.splitlines() if line.startswith("proxymeter_collector_config_reloads_total"))
        assert reloads == ['proxymeter_collector_config_reloads_total{result="applied"} 1',
                           'proxymeter_collector_config_reloads_total{result="refused"} 1']

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        notify.wait_for("STOPPING=1")
        assert notify.seen.index("READY=1") < notify.seen.index("STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def test_serve_with_bad_config_exits_78(tmp_path: Path) -> None:
    cfg = tmp_path / "collector.toml"
    cfg.write_text('[server]\nlisten = "nowhere"\n')
    res = run("serve", "--config", str(cfg))
    assert res.returncode == EXIT_CONFIG
    assert "server.listen" in res.stderr
