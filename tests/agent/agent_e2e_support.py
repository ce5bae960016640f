"""Helpers for the agent end-to-end tests: the real collector and agent as child processes,
a deterministic squid log writer that keeps its own totals, and API read-back.

Everything runs on 127.0.0.1; every wait loop is bounded in time; processes are stopped
by pid in the tests' finally blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AGENT_TOKEN = "agent-token-for-tests-0123456789"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
USERS_PATTERN = "^user-(?P<user_id>[0-9]+)-order-(?P<order_id>[0-9]+)$"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    return env


def wait_until(pred, timeout: float, what: str, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    os.kill(proc.pid, sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(10)


class Collector:
    """`python -m collector serve` on a SQLite file in `root`; restartable on the same port/db."""

    def __init__(self, root: Path, *, max_body_bytes: int | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = root / "collector.toml"
        self.log = root / "collector.log"
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
log_level = "warning"
{f"max_body_bytes = {max_body_bytes}" if max_body_bytes else ""}

[storage]
backend = "sqlite"
path = "{root / 'collector.db'}"
retention_days = 3650

[[auth.tokens]]
name = "agents"
role = "agent"
sha256 = "{sha256(AGENT_TOKEN)}"

[[auth.tokens]]
name = "admin"
role = "admin"
sha256 = "{sha256(ADMIN_TOKEN)}"
"""
        )

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "collector", "serve", "--config", str(self.config)],
                cwd=REPO, env=_env(), stdout=logf, stderr=subprocess.STDOUT,
            )
        wait_until(self._healthy, 30, "collector /healthz")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"collector exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def get(self, path: str, **params: object) -> dict:  # type: ignore[type-arg]
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_totals(col: Collector, users: list[int], start: int, end: int) -> dict[tuple[int, str], tuple[int, int, int, int]]:
    """(user_id, minute 'YYYY-MM-DD HH:MM:SS') -> (requests, bytes_sent, bytes_received, errors) via the API."""
    out: dict[tuple[int, str], list[int]] = {}
    for uid in users:
        common = {"from": iso(start), "to": iso(end), "interval": "1m", "userId": uid}
        for item in col.get("/analytics/requests", **common)["data"]:
            row = out.setdefault((uid, item["bucket"]), [0, 0, 0, 0])
            row[0] = int(item["total_count"])
            row[3] = int(item["total_errors"])
        for item in col.get("/analytics/traffic", **common)["data"]:
            row = out.setdefault((uid, item["bucket"]), [0, 0, 0, 0])
            row[1] = int(item["total_bytes_sent"])
            row[2] = int(item["total_bytes_received"])
    # A connection open across a minute boundary leaves a row with count 0 in the later
    # minute (its conn_ms); such buckets carry no requests, bytes or errors.
    return {k: (v[0], v[1], v[2], v[3]) for k, v in out.items() if any(v)}


def minute_str(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s - epoch_s % 60, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class SquidWriter:
    """Writes squid lines ('proxymeter' extended logformat) and keeps the expected totals.

    Every line is a finished request of user-<uid>-order-<oid>; about 1 in 16 is a
    TCP_DENIED/403 (a proxy error: forbidden_host), the rest are served (TCP_MISS/200 or a
    CONNECT tunnel). Start times advance monotonically from `base`; squid stamps the end,
    so the line's time is start + elapsed.
    """

    path: Path
    base: int  # epoch seconds, the first request's start
    seed: int = 1
    users: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17, 18)
    ms_per_line: float = 3.0
    written: int = 0
    rotations: int = 0
    expected: dict[tuple[int, str], list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._minutes: dict[int, str] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def lines(self, n: int) -> bytes:
        rnd = self.rng.random
        users = self.users
        n_users = len(users)
        out = []
        exp = self.expected
        minutes = self._minutes
        for _ in range(n):
            i = self.written
            self.written += 1
            start_ms = self.base * 1000 + int(i * self.ms_per_line)
            uid = users[int(rnd() * n_users)]
            oid = uid * 10 + int(rnd() * 2)
            host = f"site{int(rnd() * 20)}.example.com"
            client = f"10.1.0.{1 + int(rnd() * 4)}"
            elapsed = int(rnd() * 3000)
            sent = 100 + int(rnd() * 4900)
            kind = int(rnd() * 16)
            end_ms = start_ms + elapsed
            stamp = f"{end_ms // 1000}.{end_ms % 1000:03d}"
            user = f"user-{uid}-order-{oid}"
            if kind == 0:
                recv = 3464
                err = 1
                out.append(
                    f"{stamp} {elapsed:6d} {client} TCP_DENIED/403 {recv} GET http://{host}/x {user} "
                    f"HIER_NONE/- text/html {sent} - 3128 ERR_ACCESS_DENIED/-\n"
                )
            elif kind < 4:
                recv = 1000 + int(rnd() * 999_000)
                err = 0
                out.append(
                    f"{stamp} {elapsed:6d} {client} TCP_TUNNEL/200 {recv} CONNECT {host}:443 {user} "
                    f"HIER_DIRECT/203.0.113.7 - {sent} 192.0.2.1 3128 -/-\n"
                )
            else:
                recv = 200 + int(rnd() * 199_800)
                err = 0
                out.append(
                    f"{stamp} {elapsed:6d} {client} TCP_MISS/200 {recv} GET http://{host}/p/{i % 97} {user} "
                    f"HIER_DIRECT/203.0.113.7 text/plain {sent} 192.0.2.1 3128 -/-\n"
                )
            minute = start_ms // 60_000
            label = minutes.get(minute)
            if label is None:
                label = minutes[minute] = minute_str(minute * 60)
            key = (uid, label)
            row = exp.get(key)
            if row is None:
                row = exp[key] = [0, 0, 0, 0]
            row[0] += 1
            row[1] += sent
            row[2] += recv
            row[3] += err
        return "".join(out).encode()

    def write(self, n: int) -> None:
        with open(self.path, "ab") as f:
            f.write(self.lines(n))

    def rotate(self) -> None:
        """Rename rotation (as logrotate without copytruncate), then a fresh empty file."""
        self.rotations += 1
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{self.rotations}"))
        self.path.touch()

    @property
    def last_start(self) -> int:
        return self.base + int(self.written * self.ms_per_line) // 1000 + 1

    def totals(self) -> dict[tuple[int, str], tuple[int, int, int, int]]:
        return {k: (v[0], v[1], v[2], v[3]) for k, v in self.expected.items()}


def agent_config(
    root: Path, collector_url: str, log_path: Path, *, flush_interval: float = 0.5, extra: str = "",
    read_from: str = "beginning", shutdown_timeout: float = 10.0, once_timeout: float = 60.0,
    metrics_port: int | None = None, source_extra: str = "",
) -> Path:
    """An agent config for one squid source; `metrics_port` serves /metrics on loopback,
    `source_extra` adds lines to the [[sources]] table."""
    metrics = "" if metrics_port is None else f"127.0.0.1:{metrics_port}"
    token_file = root / "agent.token"
    token_file.write_text(AGENT_TOKEN + "\n")
    cfg = root / "agent.toml"
    cfg.write_text(
        f"""
[agent]
worker = "e2e-worker"
state_dir = "{root / 'state'}"
log_level = "info"
metrics_listen = "{metrics}"
poll_interval = 0.05

[collector]
url = "{collector_url}"
token_file = "{token_file}"
flush_interval = {flush_interval}
request_timeout = 10
max_retry_delay = 0.5
shutdown_timeout = {shutdown_timeout}
once_timeout = {once_timeout}

[[sources]]
path = "{log_path}"
format = "squid"
timezone = "UTC"
read_from = "{read_from}"
{source_extra}

[users]
pattern = '{USERS_PATTERN}'
{extra}
"""
    )
    return cfg


class AgentProc:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_mark = 0

    def _started_count(self) -> int:
        return self.log.read_text(errors="replace").count('msg="agent started"') if self.log.exists() else 0

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        self.ready_mark = self._started_count() + 1
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(self.config), *args],
                cwd=REPO, env=_env(), stdout=logf, stderr=subprocess.STDOUT,
            )
        return self.proc

    def kill9(self) -> None:
        stop_process(self.proc, signal.SIGKILL)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until this start logged "agent started" (its signal handlers are installed then,
        as READY=1 is sent; a SIGTERM before that ends the process the default way)."""
        wait_until(lambda: self._started_count() >= self.ready_mark
                   or (self.proc is not None and self.proc.poll() is not None), timeout, "agent started")

    def stop(self, timeout: float = 30.0) -> int | None:
        self.wait_ready()
        return stop_process(self.proc, signal.SIGTERM, timeout)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def once_delivers_every_writer(agent: "AgentProc", col: Collector, writers: list[SquidWriter]) -> None:
    """`run --once` exits 0 and the collector holds exactly what every writer wrote."""
    col.start()
    proc = agent.start("--once")
    assert proc.wait(120) == 0, agent.tail()
    for w in writers:
        assert api_totals(col, list(w.users), w.base - 60, w.last_start + 120) == w.totals()


class Recorder:
    """A stand-in ingest endpoint on 127.0.0.1 (a thread of this test process): records
    every request's Idempotency-Key and body and answers `status`."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.status = 503
        self.seen: list[tuple[str, bytes, int]] = []  # key, body, status answered
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = recorder.status
                recorder.seen.append((self.headers.get("Idempotency-Key", ""), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
