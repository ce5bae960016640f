"""The agent's configurable limits, used as configured by a real agent process.

Each test starts the agent (and where the numbers are checked through the API, the real
collector) as child processes and sets one limit: sources[].max_open_files,
sources[].rotated_idle_polls, sources[].fingerprint_bytes, sources[].max_open_sessions
and aggregate.max_duration. What the agent holds open is read from /proc/<pid>/fd, what it
counted from its /metrics, what it delivered from the collector's API; a SIGHUP that
changes the limit shows it is applied on reload.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent_e2e_support import (
    AgentProc,
    Collector,
    SquidWriter,
    agent_config,
    api_totals,
    free_port,
    minute_str,
    once_delivers_every_writer,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _base_minute(minutes_ago: int) -> int:
    now = int(time.time())
    return now - now % 60 - minutes_ago * 60


def metric(port: int, name: str, **labels: str) -> float:
    """The sample of `name` with exactly `labels` at the agent's /metrics (0 when absent,
    -1 while the endpoint is not up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return -1.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        series_name, _, rest = series.partition("{")
        pairs = {k: v.strip('"') for k, _, v in (p.partition("=") for p in rest.rstrip("}").split('",') if p)}
        if series_name == name and pairs == labels:
            return float(value)
    return 0.0


def open_files_under(pid: int, folder: Path) -> set[str]:
    """The files under `folder` process `pid` holds open right now."""
    out: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(f"{folder}{os.sep}"):
            out.add(target)
    return out


class FdSampler:
    """Samples which files under `folder` the process holds open, every few ms, in a thread."""

    def __init__(self, pid: int, folder: Path) -> None:
        self.pid, self.folder = pid, folder
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, len(open_files_under(self.pid, self.folder)))
            time.sleep(0.002)

    def __enter__(self) -> FdSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _with_metrics(cfg: Path, port: int, source_extra: str = "", extra: str = "") -> str:
    """The support config with a metrics port, `source_extra` in its [[sources]] entry and
    `extra` at the end; written back, and returned for later edits."""
    text = cfg.read_text().replace('metrics_listen = ""', f'metrics_listen = "127.0.0.1:{port}"')
    text = text.replace('timezone = "UTC"\n', f'timezone = "UTC"\n{source_extra}', 1) + extra
    cfg.write_text(text)
    return text


def _reload(agent: AgentProc, port: int, cfg: Path, text: str) -> None:
    before = metric(port, "proxymeter_agent_reloads_total", result="applied")
    cfg.write_text(text)
    assert agent.proc is not None
    os.kill(agent.proc.pid, signal.SIGHUP)
    wait_until(lambda: metric(port, "proxymeter_agent_reloads_total", result="applied") == before + 1, 30, "reload")


def test_max_open_files_bounds_the_open_files_of_a_source_and_counts_the_rest(tmp_path: Path) -> None:
    """Five files under one glob with max_open_files = 2: never more than 2 open, the
    others wait (counted in file_events_total{event="open_limit_hits"}) and every line of
    every file arrives exactly once. A SIGHUP to the default 128 opens all five, one back
    to 2 holds two again."""
    col = Collector(tmp_path / "collector")
    logs = tmp_path / "logs"
    base = _base_minute(5)
    writers = [SquidWriter(logs / f"s{i}.log", base=base, seed=80 + i, users=(300 + 2 * i, 301 + 2 * i))
               for i in range(5)]
    glob = str(logs / "*.log")
    port = free_port()
    cfg = agent_config(tmp_path, col.url, writers[0].path, flush_interval=0.2, shutdown_timeout=5)
    text = _with_metrics(cfg, port, "max_open_files = 2\n").replace(f'path = "{writers[0].path}"', f'path = "{glob}"')
    cfg.write_text(text)
    agent = AgentProc(cfg, tmp_path / "agent.log")

    def delivered() -> bool:
        return all(api_totals(col, list(w.users), w.base - 60, w.last_start + 120) == w.totals() for w in writers)

    try:
        col.start()
        for w in writers:
            w.write(300)
        proc = agent.start()
        with FdSampler(proc.pid, logs) as limited:
            agent.wait_ready()
            for _ in range(3):  # every file changes again: parked ones are reopened in turn
                time.sleep(0.3)
                for w in writers:
                    w.write(100)
            wait_until(delivered, 60, "every file delivered", step=0.3)
        assert limited.most == 2
        assert metric(port, "proxymeter_agent_lines_read_total", source=glob) == 5 * 600
        hits = metric(port, "proxymeter_agent_file_events_total", source=glob, event="open_limit_hits")
        assert hits >= 3  # at least the three files that found no slot at the first look
        assert "open file limit reached, file waits" in agent.tail()

        _reload(agent, port, cfg, text.replace("max_open_files = 2\n", "max_open_files = 128\n"))
        for w in writers:
            w.write(100)
        wait_until(lambda: len(open_files_under(proc.pid, logs)) == 5, 30, "all five files open")
        wait_until(delivered, 60, "every file delivered after the reload", step=0.3)
        assert metric(port, "proxymeter_agent_file_events_total", source=glob, event="open_limit_hits") == hits

        _reload(agent, port, cfg, text)  # back to 2: the rebuilt source parks three of them
        with FdSampler(proc.pid, logs) as lowered:
            for _ in range(3):
                for w in writers:
                    w.write(100)
                time.sleep(0.3)
            wait_until(delivered, 60, "every file delivered after lowering the limit", step=0.3)
        assert lowered.most == 2
        assert metric(port, "proxymeter_agent_file_events_total", source=glob, event="open_limit_hits") > hits
        assert agent.stop() == 0, agent.tail()
        assert delivered()  # nothing read twice by the reload
    finally:
        stop_process(agent.proc, signal.SIGKILL)
        col.stop()


def test_once_reads_the_files_that_wait_for_the_open_file_limit(tmp_path: Path) -> None:
    """A backfill with `--once` and max_open_files = 1: the files that wait for a slot are
    read too before it exits (a pass that read nothing while files waited is not the end)."""
    col = Collector(tmp_path / "collector")
    logs = tmp_path / "logs"
    writers = [SquidWriter(logs / f"s{i}.log", base=_base_minute(30), seed=90 + i, users=(400 + i,))
               for i in range(4)]
    for w in writers:
        w.write(500)
    cfg = agent_config(tmp_path, col.url, writers[0].path)
    cfg.write_text(cfg.read_text().replace(f'path = "{writers[0].path}"', f'path = "{logs / "*.log"}"')
                   .replace('timezone = "UTC"\n', 'timezone = "UTC"\nmax_open_files = 1\n', 1))
    agent = AgentProc(cfg, tmp_path / "agent.log")
    try:
        once_delivers_every_writer(agent, col, writers)
    finally:
        stop_process(agent.proc, signal.SIGKILL)
        col.stop()


def test_rotated_idle_polls_is_the_grace_a_rotated_file_gets(tmp_path: Path) -> None:
    """rotated_idle_polls = 10000 (at poll_interval 0.05 s: minutes): a writer appending
    to the rotated file a second after the rotation is still read. A SIGHUP to 1 closes
    it at the next idle poll, and what is appended after that is no longer read."""
    logs = tmp_path / "logs"
    writer = SquidWriter(logs / "access.log", base=_base_minute(5), seed=7)
    port = free_port()
    cfg = agent_config(tmp_path, f"http://127.0.0.1:{free_port()}", writer.path, shutdown_timeout=1)
    text = _with_metrics(cfg, port, "rotated_idle_polls = 10000\n")
    agent = AgentProc(cfg, tmp_path / "agent.log")
    rotated = logs / "access.log.1"

    def read() -> float:
        return metric(port, "proxymeter_agent_lines_read_total", source=str(writer.path))

    try:
        writer.write(100)
        proc = agent.start()
        wait_until(lambda: read() == 100, 30, "first lines")
        writer.rotate()  # access.log -> access.log.1, a new empty access.log
        writer.write(50)
        wait_until(lambda: read() == 150, 30, "the new file's lines")
        time.sleep(1.0)  # 20 idle polls of the rotated file
        assert str(rotated) in open_files_under(proc.pid, logs)
        with open(rotated, "ab") as late:  # a writer that has not reopened its log yet
            late.write(writer.lines(20))
        wait_until(lambda: read() == 170, 30, "late lines of the rotated file")

        _reload(agent, port, cfg, text.replace("rotated_idle_polls = 10000\n", "rotated_idle_polls = 1\n"))
        wait_until(lambda: str(rotated) not in open_files_under(proc.pid, logs), 30, "rotated file closed")
        assert "rotated file drained, closing" in agent.tail()
        with open(rotated, "ab") as late:
            late.write(writer.lines(20))
        time.sleep(1.0)
        assert read() == 170  # closed: the grace was 1 poll
        assert agent.stop() == 0, agent.tail()
    finally:
        stop_process(agent.proc, signal.SIGKILL)


def _checkpoint_fp_lens(state: Path) -> dict[int, tuple[int, bool]]:
    """inode -> (fp_len, done) of the acknowledged read positions in checkpoint.json."""
    try:
        doc: dict[str, Any] = json.loads((state / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return {}
    return {e["ino"]: (e["fp_len"], e["done"]) for entries in doc["checkpoints"].values() for e in entries}


def test_fingerprint_bytes_is_used_and_changing_it_neither_rereads_nor_skips(tmp_path: Path) -> None:
    """fingerprint_bytes = 4096, then 64 by SIGHUP, then 2048 by a restart: the saved
    positions hold fingerprints of exactly that size, every line arrives exactly once
    (none read again, none skipped), and a copy of the rotated file that shows up after a
    change is recognised as a copy, not read."""
    col = Collector(tmp_path / "collector")
    logs = tmp_path / "logs"
    writer = SquidWriter(logs / "access.log", base=_base_minute(10), seed=11)
    port = free_port()
    cfg = agent_config(tmp_path, col.url, writer.path, flush_interval=0.2)
    text = _with_metrics(cfg, port, "fingerprint_bytes = 4096\nrotated_idle_polls = 1\n")
    agent = AgentProc(cfg, tmp_path / "agent.log")
    state = tmp_path / "state"

    def delivered() -> bool:
        return api_totals(col, list(writer.users), writer.base - 60, writer.last_start + 120) == writer.totals()

    def fp_lens_become(size: int) -> bool:
        live, old = writer.path.stat().st_ino, (logs / "access.log.1").stat().st_ino
        return _checkpoint_fp_lens(state) == {live: (size, False), old: (size, True)}

    try:
        col.start()
        writer.write(500)  # ~75 KB: longer than every fingerprint size used
        agent.start()
        wait_until(delivered, 30, "first lines")
        writer.rotate()
        writer.write(300)
        wait_until(lambda: delivered() and fp_lens_become(4096), 30, "rotation delivered, 4096-byte fingerprints")

        _reload(agent, port, cfg, text.replace("fingerprint_bytes = 4096", "fingerprint_bytes = 64"))
        writer.write(300)
        wait_until(lambda: delivered() and fp_lens_become(64), 30, "64-byte fingerprints")
        shutil.copyfile(logs / "access.log.1", logs / "access.log.2")
        writer.write(100)
        wait_until(delivered, 30, "lines after the copy")
        assert agent.stop() == 0, agent.tail()

        cfg.write_text(text.replace("fingerprint_bytes = 4096", "fingerprint_bytes = 2048"))
        agent.start()
        agent.wait_ready()
        writer.write(200)
        wait_until(lambda: delivered() and _checkpoint_fp_lens(state).get(writer.path.stat().st_ino) == (2048, False),
                   30, "2048-byte fingerprints after the restart")
        assert agent.stop() == 0, agent.tail()
        assert delivered()
        log = agent.tail()
        assert "file truncated" not in log and "rotated file never seen" not in log and "dropped" not in log
    finally:
        stop_process(agent.proc, signal.SIGKILL)
        col.stop()


def _dante(i: int, t: float, close: bool) -> str:
    """Session i (user user-<i>-order-<i>0) opening or closing at epoch `t`; dante logs
    the duration in whole seconds, 1 s for these sessions of 1.2 s."""
    stamp = f"{int(t)}.{round(t % 1 * 1e6):06d}"
    client = f"username%user-{i}-order-{i}0@10.0.0.{i}.40000 127.0.0.1.1080"
    if not close:
        return f"Nov 22 07:41:07 ({stamp}) danted[1]: info: pass(2): tcp/connect [: {client} -> 127.0.0.1.36221 192.0.2.1.443\n"
    return (f"Nov 22 07:41:07 ({stamp}) danted[1]: info: pass(2): tcp/connect ]: 100 -> {client} -> 50, "
            f"50 -> 127.0.0.1.36221 192.0.2.1.443 -> 100: local client closed.  Session duration: 1s\n")


def test_max_open_sessions_forgets_the_oldest_open_lines_and_counts_them(tmp_path: Path) -> None:
    """A dante source with max_open_sessions = 3 and five sessions open at once: the two
    oldest open lines are forgotten (counted, logged); a SIGHUP to 2 keeps the two newest
    of the three it held. Sessions open at hh:mm:59.9 for 1.2 s: a remembered one starts
    in minute M (its open line), a forgotten one in M+1 (end minus dante's 1 s)."""
    col = Collector(tmp_path / "collector")
    log_path = tmp_path / "logs" / "danted.log"
    log_path.parent.mkdir(parents=True)
    log_path.touch()
    minute = _base_minute(5)
    port = free_port()
    cfg = agent_config(tmp_path, col.url, log_path, flush_interval=0.2)
    text = _with_metrics(cfg, port, "max_open_sessions = 3\n").replace('format = "squid"', 'format = "dante"')
    cfg.write_text(text)
    agent = AgentProc(cfg, tmp_path / "agent.log")
    users = [41, 42, 43, 44, 45]
    forgotten_total = "proxymeter_agent_open_sessions_forgotten_total"
    try:
        col.start()
        agent.start()
        agent.wait_ready()
        with open(log_path, "a") as f:  # opened oldest first, 1 ms apart
            f.write("".join(_dante(u, minute + 59.9 + k / 1000, close=False) for k, u in enumerate(users)))
        wait_until(lambda: metric(port, forgotten_total, source=str(log_path)) == 2, 30, "two forgotten")
        wait_until(lambda: "open-session limit reached" in agent.tail() and "max_open=3" in agent.tail(), 30, "logged")
        _reload(agent, port, cfg, text.replace("max_open_sessions = 3\n", "max_open_sessions = 2\n"))
        with open(log_path, "a") as f:
            f.write("".join(_dante(u, minute + 61.1 + k / 1000, close=True) for k, u in enumerate(users)))
        wait_until(lambda: metric(port, "proxymeter_agent_records_total", source=str(log_path)) == 5, 30, "closes")
        assert metric(port, forgotten_total, source=str(log_path)) == 3  # 2, then 1 at the reload
        m, m1 = minute_str(minute), minute_str(minute + 60)
        expected = {(41, m1): (1, 50, 100, 0), (42, m1): (1, 50, 100, 0), (43, m1): (1, 50, 100, 0),
                    (44, m): (1, 50, 100, 0), (45, m): (1, 50, 100, 0)}
        wait_until(lambda: api_totals(col, users, minute - 60, minute + 180) == expected, 30, "sessions delivered")
        assert agent.stop() == 0, agent.tail()
    finally:
        stop_process(agent.proc, signal.SIGKILL)
        col.stop()


def _squid(end_ms: int, elapsed_ms: int) -> bytes:
    stamp = f"{end_ms // 1000}.{end_ms % 1000:03d}"
    return (f"{stamp} {elapsed_ms:6d} 10.0.0.1 TCP_TUNNEL/200 1000 CONNECT example.com:443 user-1-order-10 "
            f"HIER_DIRECT/203.0.113.7 -\n").encode()


def test_max_duration_refuses_longer_requests(tmp_path: Path) -> None:
    """aggregate.max_duration = 60: a 61 s request is a parse error (record_rejected),
    a 60 s one is a record; after a SIGHUP to 120 another 61 s request is a record."""
    log_path = tmp_path / "logs" / "access.log"
    log_path.parent.mkdir(parents=True)
    port = free_port()
    cfg = agent_config(tmp_path, f"http://127.0.0.1:{free_port()}", log_path, shutdown_timeout=1)
    text = _with_metrics(cfg, port, extra="\n[aggregate]\nmax_duration = 60\n")
    agent = AgentProc(cfg, tmp_path / "agent.log")
    source = str(log_path)
    end = _base_minute(5) * 1000
    try:
        log_path.write_bytes(_squid(end, 60_000) + _squid(end, 61_000))
        agent.start()
        wait_until(lambda: metric(port, "proxymeter_agent_lines_read_total", source=source) == 2, 30, "lines")
        assert metric(port, "proxymeter_agent_records_total", source=source) == 1
        assert metric(port, "proxymeter_agent_parse_errors_total", source=source, reason="record_rejected") == 1
        wait_until(lambda: "duration_ms: 61000 is outside 0..60000" in agent.tail(), 30, "the logged sample")

        _reload(agent, port, cfg, text.replace("max_duration = 60\n", "max_duration = 120\n"))
        with open(log_path, "ab") as f:
            f.write(_squid(end + 1000, 61_000))
        wait_until(lambda: metric(port, "proxymeter_agent_records_total", source=source) == 2, 30, "accepted")
        assert metric(port, "proxymeter_agent_parse_errors_total", source=source, reason="record_rejected") == 1
        assert agent.stop() == 0, agent.tail()
    finally:
        stop_process(agent.proc, signal.SIGKILL)
