"""The proxymeter side of a proxy test: a collector and an agent as real subprocesses.

`Stack.start()` runs the collector on a free loopback port with a fresh SQLite file and
an agent that follows one proxy log from its beginning, flushing every second.
`Stack.finish()` ends the agent the way an operator does (SIGTERM: flush and wait for
the acknowledgement), then runs `agent run --once` on the same state, which must deliver
whatever the live agent had not read yet and nothing twice. After that the collector
holds everything and `Api` reads it back with an admin token.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agent import config as agent_config_mod
from agent.activity import ActivityLog
from agent.domains import DomainResolver
from agent.enrich import Enricher
from agent.parsers import make_parser
from agent.users import UserMapper
from agent.wire.batch import Activity
from tests.proxies.origin import free_port
from tests.proxies.procs import Child, wait_for

REPO = Path(__file__).resolve().parents[2]
FLUSH_INTERVAL_S = 1.0

# user_id/order_id come from the proxy user name: "user-<id>" optionally followed by a
# space and anything; every other name goes to DEFAULT_USER_ID.
USER_PATTERN = r"^user-(?P<user_id>[0-9]+)(?: .*)?$"
DEFAULT_USER_ID = 9


def user_id_of(name: str) -> int:
    """The test's own mapping of a user name (independent of agent.users)."""
    if name.startswith("user-"):
        head = name[5:].split(" ", 1)[0]
        if head.isdigit():
            return int(head)
    return DEFAULT_USER_ID


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@dataclass
class Api:
    base: str
    token: str
    since: datetime

    def get(self, path: str, **params: object) -> dict:
        now = datetime.now(timezone.utc)
        query = {
            "from": (self.since - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "to": (now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "interval": "1m",
        }
        query.update({k: str(v) for k, v in params.items()})
        req = urllib.request.Request(f"{self.base}{path}?{urllib.parse.urlencode(query)}",
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"GET {path} {query} -> {exc.code}: {exc.read()[:500]!r}") from None

    def requests(self, user_id: int | None = None) -> tuple[int, int]:
        """(requests, errors) summed over every bucket."""
        params = {} if user_id is None else {"userId": user_id}
        data = self.get("/analytics/requests", **params)["data"]
        return sum(int(b["total_count"]) for b in data), sum(int(b["total_errors"]) for b in data)

    def traffic(self, user_id: int | None = None) -> tuple[int, int]:
        """(bytes_sent, bytes_received) summed over every bucket."""
        params = {} if user_id is None else {"userId": user_id}
        data = self.get("/analytics/traffic", **params)["data"]
        return (sum(int(b["total_bytes_sent"]) for b in data), sum(int(b["total_bytes_received"]) for b in data))

    def errors(self, user_id: int | None = None) -> dict[str, int]:
        params: dict[str, object] = {"limit": 100}
        if user_id is not None:
            params["userId"] = user_id
        return {e["error"]: int(e["total_errors"]) for e in self.get("/analytics/errors", **params)["data"]}

    def activity_api(self, max_pages: int = 200) -> list[dict]:  # type: ignore[type-arg]
        """Every activity object /api/v2/proxy/activity/ lists over the test's window,
        following `next` page by page (Webshare's `Token` scheme), newest first."""
        now = datetime.now(timezone.utc)
        query = {
            "timestamp__gte": (self.since - timedelta(minutes=5)).isoformat(),
            "timestamp__lte": (now + timedelta(minutes=5)).isoformat(),
            "page_size": "100",
        }
        url: str | None = f"{self.base}/api/v2/proxy/activity/?{urllib.parse.urlencode(query)}"
        out: list[dict] = []  # type: ignore[type-arg]
        for _ in range(max_pages):
            if url is None:
                return out
            req = urllib.request.Request(url, headers={"Authorization": f"Token {self.token}"})
            try:
                with urllib.request.urlopen(req, timeout=15) as resp:
                    page = json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                raise AssertionError(f"GET {url} -> {exc.code}: {exc.read()[:500]!r}") from None
            out.extend(page["results"])
            url = page["next"]
        raise AssertionError(f"more than {max_pages} pages of activity")

    def peak(self, user_id: int) -> int:
        data = self.get("/analytics/concurrency", userId=user_id)["data"]
        return max((int(b["max_concurrency"]) for b in data), default=0)


class Stack:
    def __init__(self, workdir: Path, log_path: Path, fmt: str, *, timezone_name: str = "UTC") -> None:
        self.dir = workdir / "proxymeter"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.fmt = fmt
        self.tz = timezone_name
        self.children: list[Child] = []
        self.collector: Child | None = None
        self.agent: Child | None = None
        self.since = datetime.now(timezone.utc)
        self.agent_token = secrets.token_urlsafe(24)
        self.admin_token = secrets.token_urlsafe(24)
        self.port = free_port()
        self.api = Api(f"http://127.0.0.1:{self.port}", self.admin_token, self.since)

    def _collector_config(self) -> Path:
        path = self.dir / "collector.toml"
        sha = lambda t: hashlib.sha256(t.encode()).hexdigest()  # noqa: E731
        path.write_text(
            f"""[server]
listen = "127.0.0.1:{self.port}"

[storage]
backend = "sqlite"
path = {_toml_str(str(self.dir / "collector.db"))}
retention_days = 90

[[auth.tokens]]
name = "agents"
role = "agent"
sha256 = "{sha(self.agent_token)}"

[[auth.tokens]]
name = "admin"
role = "admin"
sha256 = "{sha(self.admin_token)}"
"""
        )
        return path

    def agent_config(self) -> Path:
        path = self.dir / "agent.toml"
        path.write_text(
            f"""[agent]
worker = "proxy-test"
state_dir = {_toml_str(str(self.dir / "agent-state"))}
metrics_listen = ""
poll_interval = 0.1

[collector]
url = "http://127.0.0.1:{self.port}"
token = {_toml_str(self.agent_token)}
flush_interval = {FLUSH_INTERVAL_S}
request_timeout = 10.0
max_retry_delay = 2.0
shutdown_timeout = 20.0
once_timeout = 60.0

[users]
pattern = {_toml_str(USER_PATTERN)}
default_user_id = {DEFAULT_USER_ID}

[[sources]]
path = {_toml_str(str(self.log_path))}
format = "{self.fmt}"
timezone = "{self.tz}"
read_from = "beginning"
"""
        )
        return path

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api.base}/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self) -> None:
        conf = self._collector_config()
        self.collector = Child("collector", [sys.executable, "-m", "collector", "serve", "--config", str(conf)],
                               self.dir, cwd=REPO)
        self.children.append(self.collector)
        if not wait_for(lambda: self._healthy() or not self.collector.running(), 20.0, 0.1) or not self._healthy():
            raise AssertionError(f"collector did not become healthy\n{self.collector.output()}")
        self.agent = Child("agent", [sys.executable, "-m", "agent", "run", "--config", str(self.agent_config())],
                           self.dir, cwd=REPO)
        self.children.append(self.agent)
        time.sleep(0.2)
        if not self.agent.running():
            raise AssertionError(f"agent exited at start\n{self.agent.output()}")

    def finish(self) -> None:
        """Live agent: SIGTERM (flush, wait for the ack); then `--once` drains the rest."""
        assert self.agent is not None
        self.agent.send(signal.SIGTERM)
        code = self.agent.wait(30.0)
        if code != 0:
            raise AssertionError(f"agent exit status {code} after SIGTERM\n{self.agent.output()}")
        once = Child("agent-once", [sys.executable, "-m", "agent", "run", "--config", str(self.agent_config()),
                                    "--once"], self.dir, cwd=REPO)
        self.children.append(once)
        code = once.wait(90.0)
        if code != 0:
            raise AssertionError(f"agent --once exit status {code}\n{once.output()}")

    def activity(self) -> list[Activity]:
        """The activity records of the proxy's log: its real lines through the agent's own
        parser, enricher and activity conversion, set up from the agent's config."""
        cfg = agent_config_mod.load(self.agent_config())
        src = cfg.sources[0]
        parser = make_parser(src.format, zoneinfo.ZoneInfo(src.timezone), max_open_sessions=src.max_open_sessions)
        enricher = Enricher(UserMapper(cfg.users), DomainResolver.load(cfg.agent.public_suffix_list or None))
        out = ActivityLog(cfg.agent.worker, cfg.activity.settings)
        for line in self.log_path.read_bytes().splitlines():
            rec = parser.parse(line)
            if rec is not None:
                enricher.enrich(rec)
                out.add(rec)
        return out.drain()

    def logs(self) -> str:
        return "".join(c.output() for c in self.children)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop(signal.SIGTERM, 10.0)
