"""Real processes the benchmarks drive: the collector, the agent, a byte-counting sink.

The collector and the agent run as child processes with generated TOML configs, on
loopback ports picked free just before start; each is stopped by its pid (SIGTERM, then
SIGKILL) in a finally. The sink is an aiohttp server in a thread of the bench process:
it answers 204 to every ingest and counts bodies, bytes, rows and requests in them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from agent.wire.batch import decode_body

from bench.measure import REPO, pin_to, stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(name: str, module: str) -> list[str]:
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"process exited {proc.returncode} before {url} answered: {err}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


@dataclass
class Collector:
    proc: subprocess.Popen  # type: ignore[type-arg]
    url: str
    agent_token: str
    admin_token: str
    db: Path

    def stop(self) -> None:
        stop(self.proc, grace_s=60)

    def __enter__(self) -> "Collector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def collector_config(db: Path, port: int, agent_token: str, admin_token: str, storage: str | None = None) -> str:
    """`storage`: the whole [storage] table instead of SQLite on `db`."""
    def sha(t: str) -> str:
        return hashlib.sha256(t.encode()).hexdigest()

    storage = storage or f'[storage]\nbackend = "sqlite"\npath = "{db}"\nretention_days = 3650\n'
    return f"""[server]
listen = "127.0.0.1:{port}"

{storage}
[[auth.tokens]]
name = "bench-agents"
role = "agent"
sha256 = "{sha(agent_token)}"

[[auth.tokens]]
name = "bench-admin"
role = "admin"
sha256 = "{sha(admin_token)}"
"""


def start_collector(workdir: Path, db: Path, core: int | None = None, storage: str | None = None) -> Collector:
    port = free_port()
    agent_token = secrets.token_hex(16)
    admin_token = secrets.token_hex(16)
    cfg = workdir / f"collector-{port}.toml"
    cfg.write_text(collector_config(db, port, agent_token, admin_token, storage))
    log = open(workdir / "collector.log", "ab")
    proc = subprocess.Popen(_script("proxymeter-collector", "collector") + ["serve", "--config", str(cfg)],
                            cwd=REPO, stdout=log, stderr=log, preexec_fn=pin_to(core))
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc)
    except BaseException:
        stop(proc)
        raise
    return Collector(proc, url, agent_token, admin_token, db)


def agent_config(workdir: Path, log_path: Path, fmt: str, url: str, token: str,
                 flush_s: float | None = None, read_from: str = "end", once_timeout: float | None = None) -> str:
    """The agent's config: the fixed shape from the agent issue plus our own keys."""
    collector_keys = f"flush_interval = {flush_s}\n" if flush_s is not None else ""
    if once_timeout is not None:
        collector_keys += f"once_timeout = {once_timeout}\n"
    return f"""[agent]
worker = "bench-worker"
state_dir = "{workdir / 'agent-state'}"
metrics_listen = "127.0.0.1:{free_port()}"

[collector]
url = "{url}"
token = "{token}"
{collector_keys}
[[sources]]
path = "{log_path}"
format = "{fmt}"
timezone = "UTC"
read_from = "{read_from}"
"""


def start_agent(workdir: Path, config_text: str, core: int | None = None,
                profile: str = "") -> subprocess.Popen:  # type: ignore[type-arg]
    """`python -m agent run`; with `profile`, under cProfile (dumped when it exits on SIGTERM)."""
    cfg = workdir / "agent.toml"
    cfg.write_text(config_text)
    log = open(workdir / "agent.log", "ab")
    prefix = ["-m", "bench.profiles", "agent", "--dump", profile] if profile else ["-m", "agent"]
    proc = subprocess.Popen([sys.executable, *prefix, "run", "--config", str(cfg)], cwd=REPO,
                            stdout=log, stderr=log, preexec_fn=pin_to(core))
    log.close()
    return proc


@dataclass
class SinkStats:
    bodies: int = 0
    body_bytes: int = 0
    rows: int = 0
    profiles: int = 0
    requests: int = 0  # sum of row counts: lines delivered
    sizes: list[int] = field(default_factory=list)


class Sink:
    """A tiny ingest endpoint in a background thread; counts what agents send."""

    def __init__(self) -> None:
        self.stats = SinkStats()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Sink":
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("sink did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        from aiohttp import web

        async def ingest(request: web.Request) -> web.Response:
            body = await request.read()
            # either body version (the agent sends 2, columns): the reference decoder reads both
            batch = decode_body(body, request.content_type)
            s = self.stats
            s.bodies += 1
            s.body_bytes += len(body)
            s.sizes.append(len(body))
            s.rows += len(batch.rows)
            s.profiles += len(batch.profiles)
            s.requests += sum(r.count for r in batch.rows)
            return web.Response(status=204)

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application(client_max_size=256 << 20)
        app.router.add_post("/analytics/ingest", ingest)
        app.router.add_get("/healthz", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()


def dir_size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


def db_files(db: Path) -> list[Path]:
    return [db, Path(f"{db}-wal"), Path(f"{db}-shm")]


def env() -> dict[str, str]:
    return dict(os.environ)
