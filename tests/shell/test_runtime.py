"""How both services behave as daemons: logs and event loop.

- Logs go to stderr, one `key=value` event per line, at the configured level, and a new
  level applies on SIGHUP (`debug` also turns on the collector's access log).
- A host that refuses the start (corrupt store, address in use) is exit status 1 with
  one error line, not a traceback.
- uvloop is used when it is installed, and both services still work without it (the
  test hides it from the child interpreter, the package stays installed).
"""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

import pytest
from shellkit import (
    LOGFMT,
    Procs,
    agent_toml,
    cli,
    collector_toml,
    free_port,
    http,
    metric,
    start_collector,
    totals,
    wait_for,
    without_uvloop,
)

from bench import loggen

NOW_MS = int(time.time() * 1000)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


def _assert_logfmt(text: str) -> list[str]:
    """Every line is one logfmt event; returns the lines."""
    lines = _lines(text)
    bad = [line for line in lines if not LOGFMT.match(line)]
    assert bad == [], bad
    return lines


def _levels(lines: list[str]) -> set[str]:
    return {m[1] for line in lines if (m := LOGFMT.match(line))}


def test_collector_logs_logfmt_at_the_configured_level_and_reload_changes_it(tmp_path: Path, procs: Procs) -> None:
    col = start_collector(procs, tmp_path, server='log_level = "warning"')
    port = int(col.base.rsplit(":", 1)[1])
    url = f"{col.base}/analytics/requests?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"
    assert http(url, col.admin)[0] == 200
    time.sleep(0.5)
    quiet = _assert_logfmt(col.proc.text())
    assert _levels(quiet) <= {"warning", "error"}, quiet  # "listening" (info) is not logged
    assert not any("msg=listening" in line for line in quiet)

    # debug on reload: the reload line (info) and one access-log line per request.
    col.config.write_text(collector_toml(tmp_path, port, col.tokens, server='log_level = "debug"'))
    col.proc.signal(signal.SIGHUP)
    wait_for("the reload line", lambda: "config reloaded" in col.proc.text())
    for _ in range(3):
        assert http(url, col.admin)[0] == 200
    wait_for("three access-log lines", lambda: col.proc.text().count("logger=aiohttp.access") >= 3 or None)
    loud = _assert_logfmt(col.proc.text())
    assert any('msg="config reloaded"' in line and "log_level=debug" in line for line in loud)
    access = [line for line in loud if "logger=aiohttp.access" in line]
    assert all("/analytics/requests" in line for line in access[-3:]), access

    # error: nothing below error any more, neither the access log nor the shutdown lines.
    col.config.write_text(collector_toml(tmp_path, port, col.tokens, server='log_level = "error"'))
    col.proc.signal(signal.SIGHUP)
    before = len(_lines(col.proc.text()))

    def access_log_off() -> bool:
        # The reload line itself is info, so it is not logged: poll until requests stop
        # producing access lines.
        n = len(_lines(col.proc.text()))
        http(url, col.admin)
        time.sleep(0.3)
        return len(_lines(col.proc.text())) == n

    wait_for("the access log to stop", access_log_off, timeout=15)
    col.proc.signal(signal.SIGTERM)
    assert col.proc.wait(30) == 0
    after = _assert_logfmt(col.proc.text())
    assert not any("msg=stopped" in line for line in after[before:]), after[before:]


def test_agent_logs_logfmt_at_the_configured_level_and_reload_changes_it(tmp_path: Path, procs: Procs) -> None:
    col = start_collector(procs, tmp_path)
    log = tmp_path / "access.log"
    loggen.write_file(log, 200, seed=5, start_ms=NOW_MS - 10 * 60_000, rate=5, users=10, domains=50, pool_size=500)
    metrics_port = free_port()
    config = tmp_path / "agent.toml"
    base = agent_toml(tmp_path, col.base, col.agent, [log], flush=0.3, metrics_port=metrics_port)
    config.write_text(base.replace('worker = "test-worker"', 'worker = "test-worker"\nlog_level = "warning"'))
    agent = procs.start("agent", ["-m", "agent", "run", "--config", str(config)])

    def read_all() -> bool:
        status, body = http(f"http://127.0.0.1:{metrics_port}/metrics")
        return status == 200 and metric(body.decode(), "proxymeter_agent_lines_read_total") == 200

    wait_for("the agent to read the log", read_all)
    quiet = _assert_logfmt(agent.text())
    assert not any('msg="agent started"' in line for line in quiet), quiet

    config.write_text(base)  # log_level back to the default, info
    agent.signal(signal.SIGHUP)
    wait_for("the reload line", lambda: 'msg="config reloaded"' in agent.text())
    agent.signal(signal.SIGTERM)
    assert agent.wait(60) == 0, agent.text()
    lines = _assert_logfmt(agent.text())
    assert "info" in _levels(lines)
    assert any('msg="all batches acknowledged, exiting"' in line for line in lines)


def test_services_use_uvloop_when_installed_and_run_without_it(tmp_path: Path, procs: Procs) -> None:
    pytest.importorskip("uvloop")
    (tmp_path / "a").mkdir()
    with_uv = start_collector(procs, tmp_path / "a")
    assert re.search(r"msg=listening .*loop=uvloop", with_uv.proc.text()), with_uv.proc.text()
    with_uv.proc.signal(signal.SIGTERM)
    assert with_uv.proc.wait(30) == 0

    root = tmp_path / "b"
    root.mkdir()
    col = start_collector(procs, root, python_args=without_uvloop("collector"))
    assert re.search(r"msg=listening .*loop=asyncio", col.proc.text()), col.proc.text()

    # Two agents, each with --once on its own log: one on uvloop, one without it. Both
    # deliver everything they read (the generator's own request count is the oracle).
    expected = 0
    for name, python_args, loop in (("uv", ["-m", "agent"], "uvloop"), ("plain", without_uvloop("agent"), "asyncio")):
        home = root / name
        home.mkdir()
        log = home / "access.log"
        truth = loggen.write_file(log, 300, seed=len(name), start_ms=NOW_MS - 10 * 60_000, rate=5,
                                  users=10, domains=50, pool_size=500)
        expected += truth.totals()[0]
        config = home / "agent.toml"
        config.write_text(agent_toml(home, col.base, col.agent, [log]))
        agent = procs.start(f"agent-{name}", [*python_args, "run", "--once", "--config", str(config)])
        assert agent.wait(60) == 0, agent.text()
        assert f"loop={loop}" in agent.text(), agent.text()
    assert totals(col)["total_count"] == expected


def test_start_up_failures_exit_1_with_one_error_line(tmp_path: Path) -> None:
    """Not a config error (the file is valid) but the host refuses: status 1 (systemd
    retries), and the journal gets a logfmt error line naming the cause, no traceback."""
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not an SQLite file" * 200)
    col_config = tmp_path / "collector.toml"
    col_config.write_text(f'[server]\nlisten = "127.0.0.1:0"\n\n[storage]\npath = "{corrupt}"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent_config = tmp_path / "agent.toml"
        agent_config.write_text(agent_toml(tmp_path, "http://127.0.0.1:9", "t", [tmp_path / "access.log"],
                                           metrics_port=port))
        for service, config, cause in (("collector", col_config, f"store={corrupt}"),
                                       ("agent", agent_config, "address already in use")):
            proc = cli(service, "run" if service == "agent" else "serve", "--config", str(config), timeout=60)
            assert proc.returncode == 1, (service, proc.stderr)
            assert "Traceback" not in proc.stderr, proc.stderr
            errors = [line for line in _assert_logfmt(proc.stderr) if " level=error " in line]
            assert any(cause in line and "start" in line for line in errors), (service, errors)
