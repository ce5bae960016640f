"""SIGTERM and SIGHUP on the real services (what `systemctl stop` and `systemctl reload` send).

Oracles: the log generator's own truth (requests, bytes, errors per user), and tokens the
test made itself. Numbers are read back through the collector's API.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from shellkit import (
    Collector,
    Procs,
    agent_toml,
    collector_toml,
    free_port,
    http,
    ingest_status,
    metric,
    new_token,
    start_collector,
    totals,
    wait_for,
)

from bench import loggen

NOW_MS = int(time.time() * 1000)
SMALL = dict(users=20, domains=300, pool_size=2000)


def _write(path: Path, n: int, seed: int, start_ms: int, append: bool = False) -> list[int]:
    truth = loggen.write_file(path, n, seed=seed, start_ms=start_ms, rate=5, append=append, **SMALL)
    return [int(v) for v in truth.totals()]  # requests, bytes_received, bytes_sent, errors


def _count(col: Collector) -> int:
    return totals(col).get("total_count", 0)


def test_sigterm_flushes_everything_read(tmp_path: Path, procs: Procs) -> None:
    col = start_collector(procs, tmp_path)
    log = tmp_path / "access.log"
    requests, received, _, errors = _write(log, 3000, seed=11, start_ms=NOW_MS - 20 * 60_000)
    metrics_port = free_port()
    config = tmp_path / "agent.toml"
    # A flush interval of an hour: nothing is shipped unless SIGTERM makes the agent flush.
    config.write_text(agent_toml(tmp_path, col.base, col.agent, [log], flush=3600, metrics_port=metrics_port))
    agent = procs.start("agent", ["-m", "agent", "run", "--config", str(config)])

    def lines_read() -> float | None:
        status, body = http(f"http://127.0.0.1:{metrics_port}/metrics")
        n = metric(body.decode(), "proxymeter_agent_lines_read_total") if status == 200 else 0
        return n if n == 3000 else None

    wait_for("the agent to read all 3000 lines", lines_read)
    assert _count(col) == 0
    agent.signal(signal.SIGTERM)
    assert agent.wait(60) == 0, agent.text()
    assert totals(col) == {"total_count": requests, "total_errors": errors}
    traffic = totals(col, "/analytics/traffic")
    assert traffic["total_bytes_received"] == received
    assert traffic["total_count"] == requests


def test_collector_sighup_applies_new_tokens_and_refuses_a_broken_config(tmp_path: Path, procs: Procs) -> None:
    col = start_collector(procs, tmp_path)
    port = int(col.base.rsplit(":", 1)[1])
    late, late_sha = new_token()
    url = f"{col.base}/analytics/requests?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"
    assert http(url, late)[0] == 401
    with_late = [*col.tokens, {"name": "late-admin", "role": "admin", "sha256": late_sha}]
    col.config.write_text(collector_toml(tmp_path, port, with_late))
    col.proc.signal(signal.SIGHUP)
    wait_for("the new token to be accepted", lambda: http(url, late)[0] == 200)

    # Broken: a typo, and the late token removed. Refused as a whole: the token still works.
    broken = collector_toml(tmp_path, port, col.tokens).replace("[storage]\n", "[storage]\nretention_dayz = 3\n")
    col.config.write_text(broken)
    col.proc.signal(signal.SIGHUP)
    wait_for("the refusal in the log", lambda: "storage.retention_dayz" in col.proc.text())
    assert col.proc.alive()
    assert http(url, late)[0] == 200
    assert http(url, col.admin)[0] == 200
    col.proc.signal(signal.SIGTERM)
    assert col.proc.wait(30) == 0


def test_agent_sighup_picks_up_a_new_source_and_refuses_a_broken_config(tmp_path: Path, procs: Procs) -> None:
    col = start_collector(procs, tmp_path)
    a, b, c = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"
    req_a = _write(a, 600, seed=1, start_ms=NOW_MS - 30 * 60_000)[0]
    req_b = _write(b, 500, seed=2, start_ms=NOW_MS - 30 * 60_000)[0]
    _write(c, 400, seed=3, start_ms=NOW_MS - 30 * 60_000)
    metrics_port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml(tmp_path, col.base, col.agent, [a], flush=0.3, metrics_port=metrics_port))
    agent = procs.start("agent", ["-m", "agent", "run", "--config", str(config)])
    wait_for("source a delivered", lambda: _count(col) == req_a or None)

    config.write_text(agent_toml(tmp_path, col.base, col.agent, [a, b], flush=0.3, metrics_port=metrics_port))
    agent.signal(signal.SIGHUP)
    wait_for("source b picked up and delivered", lambda: _count(col) == req_a + req_b or None)

    # Broken: a new source c with a typo in its table. Nothing of it may be applied.
    broken = agent_toml(tmp_path, col.base, col.agent, [a, b, c], flush=0.3, metrics_port=metrics_port)
    config.write_text(broken.replace('format = "squid"\nread_from = "beginning"\n',
                                     'format = "squid"\nread_from = "beginning"\nformatt = 1\n'))
    agent.signal(signal.SIGHUP)

    def refused() -> bool:
        body = http(f"http://127.0.0.1:{metrics_port}/metrics")[1].decode()
        return metric(body, "proxymeter_agent_reloads_total", 'result="refused"') == 1

    wait_for("the reload to be refused", refused)
    assert "sources[0].formatt" in agent.text()
    assert agent.alive()
    # Still running the old config: new lines in a are delivered, c is never read.
    req_a2 = _write(a, 300, seed=4, start_ms=NOW_MS - 10 * 60_000, append=True)[0]
    wait_for("new lines of a delivered", lambda: _count(col) == req_a + req_b + req_a2 or None)
    agent.signal(signal.SIGTERM)
    assert agent.wait(60) == 0, agent.text()
    assert _count(col) == req_a + req_b + req_a2


def test_agent_sighup_applies_new_flush_settings_and_token(tmp_path: Path, procs: Procs) -> None:
    """The token file and the flush interval change on SIGHUP; nothing read is lost."""
    second, second_sha = new_token()
    col = start_collector(procs, tmp_path, extra_tokens=[{"name": "agents-2", "role": "agent", "sha256": second_sha}])
    port = int(col.base.rsplit(":", 1)[1])
    log = tmp_path / "access.log"
    req1 = _write(log, 800, seed=21, start_ms=NOW_MS - 20 * 60_000)[0]
    token_file = tmp_path / "agent.token"
    token_file.write_text(col.agent + "\n")
    metrics_port = free_port()
    config = tmp_path / "agent.toml"

    def write_config(flush: float) -> None:
        text = agent_toml(tmp_path, col.base, "unused", [log], flush=flush, metrics_port=metrics_port)
        config.write_text(text.replace('token = "unused"', f'token_file = "{token_file}"'))

    write_config(3600)  # an hour: nothing is shipped until the reload
    agent = procs.start("agent", ["-m", "agent", "run", "--config", str(config)])

    def agent_metric(name: str, labels: str = "") -> float:
        status, body = http(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        return metric(body.decode(), name, labels)

    wait_for("the agent to read all 800 lines",
             lambda: agent_metric("proxymeter_agent_lines_read_total") == 800 or None)
    assert _count(col) == 0

    # The collector drops the first agent token; the agent gets the second one and a
    # short flush interval. The reload flushes what was read and ships it with the new token.
    without_first = [t for t in col.tokens if t["name"] != "agents"]
    col.config.write_text(collector_toml(tmp_path, port, without_first))
    col.proc.signal(signal.SIGHUP)
    wait_for("the first agent token to be refused", lambda: ingest_status(col.base, col.agent) == 401 or None)
    token_file.write_text(second + "\n")
    write_config(0.3)
    agent.signal(signal.SIGHUP)
    wait_for("the lines read before the reload", lambda: _count(col) == req1 or None)

    # New lines go out within the new flush interval (the old one was an hour).
    req2 = _write(log, 300, seed=22, start_ms=NOW_MS - 5 * 60_000, append=True)[0]
    wait_for("new lines shipped at the new interval", lambda: _count(col) == req1 + req2 or None, timeout=15)
    assert agent_metric("proxymeter_agent_reloads_total", 'result="applied"') == 1
    assert agent_metric("proxymeter_agent_reloads_total", 'result="refused"') == 0
    # The collector counts its reload with the same result labels.
    collector_metrics = http(f"{col.base}/metrics")[1].decode()
    assert metric(collector_metrics, "proxymeter_collector_config_reloads_total", 'result="applied"') == 1
    assert metric(collector_metrics, "proxymeter_collector_config_reloads_total", 'result="refused"') == 0
    assert agent_metric("proxymeter_agent_batches_retried_total") == 0  # never sent with the dropped token
    agent.signal(signal.SIGTERM)
    assert agent.wait(60) == 0, agent.text()
    assert _count(col) == req1 + req2


def test_collector_sighup_applies_query_limits(tmp_path: Path, procs: Procs) -> None:
    col = start_collector(procs, tmp_path)
    port = int(col.base.rsplit(":", 1)[1])
    url = f"{col.base}/analytics/requests?from=2026-01-01T00:00:00Z&to=2026-03-12T00:00:00Z"  # 70 days
    status, body = http(url, col.admin)
    assert status == 400, body
    assert json.loads(body)["error"]["field"] == "to"
    col.config.write_text(collector_toml(tmp_path, port, col.tokens) + "\n[query]\nmax_range_days = 100\n")
    col.proc.signal(signal.SIGHUP)
    wait_for("the longer range to be accepted", lambda: http(url, col.admin)[0] == 200 or None)
    col.proc.signal(signal.SIGTERM)
    assert col.proc.wait(30) == 0
