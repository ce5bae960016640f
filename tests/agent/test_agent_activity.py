"""Activity records through the real agent process: exactly once, in the rows' batches.

The ingest endpoint is agent_e2e_support.Recorder (it records every request's key and
body); the bodies are decoded with the wire's own decode_body. Expected values come from
the lines the test wrote (SquidWriter's totals, and the lines themselves).
"""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from datetime import timezone
from pathlib import Path

import msgpack
import pytest

from agent.activity import sampled_in
from agent.parsers import make_parser
from agent.wire.batch import Batch, decode_body
from agent_e2e_support import AgentProc, Recorder, SquidWriter, agent_config, free_port, stop_process, wait_until

pytestmark = pytest.mark.e2e


def _base_minute(minutes_ago: int) -> int:
    now = int(time.time())
    return now - now % 60 - minutes_ago * 60


def _accepted(rec: Recorder) -> dict[str, Batch]:
    """Bodies the endpoint acknowledged, once per Idempotency-Key (as the collector
    applies them)."""
    out: dict[str, Batch] = {}
    for key, body, status in list(rec.seen):
        if 200 <= status < 300 and key not in out:
            out[key] = decode_body(body, "application/msgpack")
    return out


def _spooled(spool: Path) -> list[dict]:  # type: ignore[type-arg]
    files = sorted(f for f in spool.glob("*.batch") if not f.name.startswith("."))
    return [msgpack.unpackb(f.read_bytes(), raw=False) for f in files]


def test_activity_rides_with_the_rows_exactly_once_across_kill9_rotation_and_outage(tmp_path: Path) -> None:
    rec = Recorder()  # answers 503 first: an outage
    log_path = tmp_path / "logs" / "access.log"
    writer = SquidWriter(log_path, base=_base_minute(20), seed=77)
    cfg = agent_config(tmp_path, rec.url, log_path, flush_interval=0.2)
    agent = AgentProc(cfg, tmp_path / "agent.log")
    spool = tmp_path / "state" / "spool"
    try:
        agent.start()
        agent.wait_ready()
        writer.write(1_500)
        wait_until(lambda: sum(b.get("activity", 0) for b in _spooled(spool)) >= 1_500, 30, "activity spooled")
        writer.rotate()
        writer.write(700)
        wait_until(lambda: sum(b.get("activity", 0) for b in _spooled(spool)) >= 2_200, 30, "after the rotation")
        wait_until(lambda: len(rec.seen) >= 2, 30, "attempts refused with 503")
        agent.kill9()
        assert _accepted(rec) == {}
        writer.write(300)  # read only after the restart
        rec.status = 204
        agent.start()
        wait_until(lambda: sum(len(b.activity) for b in _accepted(rec).values()) >= 2_500, 60, "everything delivered")
        wait_until(lambda: _spooled(spool) == [], 30, "the spool empty")
        assert agent.stop() == 0, agent.tail()
    finally:
        stop_process(agent.proc, signal.SIGKILL)
        rec.close()

    batches = list(_accepted(rec).values())
    activity = [a for b in batches for a in b.activity]
    rows = [r for b in batches for r in b.rows]
    assert len(activity) == writer.written == 2_500
    # one record per line: no line twice, none missing
    assert len({(a.ts_us, a.client_address, a.bytes_sent, a.bytes_received, a.hostname) for a in activity}) == 2_500
    want = writer.totals()
    assert sum(v[0] for v in want.values()) == sum(r.count for r in rows) == 2_500
    assert sum(a.bytes_sent for a in activity) == sum(v[1] for v in want.values())
    assert sum(a.bytes_received for a in activity) == sum(v[2] for v in want.values())
    assert sum(1 for a in activity if a.error) == sum(v[3] for v in want.values())
    # and each batch's activity records belong to that batch's rows (same lines)
    for b in batches:
        assert sum(r.count for r in b.rows) == len(b.activity)
    assert {a.worker for a in activity} == {"e2e-worker"}
    assert {a.error for a in activity} <= {"", "forbidden_host"}


def test_sampling_thins_activity_only_and_the_rows_stay_exact(tmp_path: Path) -> None:
    rec = Recorder()
    rec.status = 204
    log_path = tmp_path / "logs" / "access.log"
    writer = SquidWriter(log_path, base=_base_minute(30), seed=78)
    writer.write(2_000)
    cfg = agent_config(tmp_path, rec.url, log_path, extra="\n[activity]\nsample_rate = 0.25\n")
    agent = AgentProc(cfg, tmp_path / "agent.log")
    try:
        agent.start("--once")
        assert agent.proc is not None and agent.proc.wait(90) == 0, agent.tail()
    finally:
        stop_process(agent.proc, signal.SIGKILL)
        rec.close()
    batches = list(_accepted(rec).values())
    assert sum(r.count for b in batches for r in b.rows) == 2_000  # every request in the rows
    parser = make_parser("squid", timezone.utc)
    lines = log_path.read_bytes().splitlines()
    kept = [r for r in (parser.parse(x) for x in lines) if r is not None and sampled_in(r, 0.25)]
    got = sorted(a.ts_us for b in batches for a in b.activity)
    assert got == sorted(r.start_ms * 1000 for r in kept)
    assert 350 <= len(got) <= 650  # about a quarter


def _activity_metric(port: int) -> dict[str, float]:
    """proxymeter_agent_activity_records_total by result; {} while /metrics is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'^proxymeter_agent_activity_records_total\{result="(\w+)"\} (\S+)$', line)
        if m:
            out[m[1]] = float(m[2])
    return out


def test_activity_metrics_count_every_record_and_a_reload_applies_the_activity_section(tmp_path: Path) -> None:
    """Every aggregated request is counted once as spooled, sampled_out or disabled; the
    spooled ones as shipped once acknowledged. SIGHUP applies a changed [activity]."""
    rec = Recorder()
    rec.status = 204
    log_path = tmp_path / "logs" / "access.log"
    writer = SquidWriter(log_path, base=_base_minute(25), seed=79)
    port = free_port()
    cfg = agent_config(tmp_path, rec.url, log_path, flush_interval=0.2, metrics_port=port,
                       extra="\n[activity]\nsample_rate = 0.5\n")
    agent = AgentProc(cfg, tmp_path / "agent.log")
    try:
        agent.start()
        agent.wait_ready()
        assert _activity_metric(port) == {"spooled": 0, "sampled_out": 0, "disabled": 0, "shipped": 0,
                                          "dead_lettered": 0}
        writer.write(1_000)
        wait_until(lambda: (m := _activity_metric(port)).get("spooled", 0) + m.get("sampled_out", 0) == 1_000
                   and m["shipped"] == m["spooled"], 30, "1,000 records counted and the kept ones shipped")
        first = _activity_metric(port)
        delivered = sum(len(b.activity) for b in _accepted(rec).values())
        assert first["shipped"] == delivered and 350 <= delivered <= 650
        cfg.write_text(cfg.read_text().replace("sample_rate = 0.5", "enabled = false"))
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: 'msg="config reloaded"' in agent.tail(), 30, "the reload")
        writer.write(200)
        wait_until(lambda: _activity_metric(port).get("disabled") == 200, 30, "200 records while disabled")
        assert {k: v for k, v in _activity_metric(port).items() if k != "disabled"} == {
            k: v for k, v in first.items() if k != "disabled"}
        assert agent.stop() == 0, agent.tail()
    finally:
        stop_process(agent.proc, signal.SIGKILL)
        rec.close()
    assert sum(len(b.activity) for b in _accepted(rec).values()) == delivered
    assert sum(r.count for b in _accepted(rec).values() for r in b.rows) == 1_200  # the rows: every request


def test_max_records_per_batch_flushes_sooner(tmp_path: Path) -> None:
    """A backlog of ~1.2 MB (three 512 KiB reads) with max_records_per_batch = 100 and
    neither the row limit nor the interval near: the activity limit alone cuts it into a
    batch per read, each within 100 records plus one read's worth, all delivered once."""
    rec = Recorder()
    rec.status = 204
    log_path = tmp_path / "logs" / "access.log"
    writer = SquidWriter(log_path, base=_base_minute(40), seed=80)
    writer.write(8_000)
    size = log_path.stat().st_size
    assert size > 2 * 512 * 1024
    per_read = 8_000 * 512 * 1024 // size + 1  # lines in one read, about
    cfg = agent_config(tmp_path, rec.url, log_path, flush_interval=3600,
                       extra="\n[activity]\nmax_records_per_batch = 100\n")
    cfg.write_text(cfg.read_text().replace("max_retry_delay = 0.5", "max_retry_delay = 0.5\nmax_batch_rows = 100000"))
    agent = AgentProc(cfg, tmp_path / "agent.log")
    try:
        agent.start("--once")
        assert agent.proc is not None and agent.proc.wait(90) == 0, agent.tail()
    finally:
        stop_process(agent.proc, signal.SIGKILL)
        rec.close()
    sizes = [len(b.activity) for b in _accepted(rec).values() if b.activity]
    assert sum(sizes) == 8_000
    assert len(sizes) >= 3, sizes
    assert max(sizes) <= 100 + per_read + 1, (sizes, per_read)


def test_values_over_the_wire_limits_are_cut_counted_and_logged(tmp_path: Path) -> None:
    """A user name longer than the wire's 255 characters (a jsonl writer may log one):
    the activity record carries its first 255, the agent logs that it cut a value, and
    the collector gets a body it accepts (nothing dead-lettered)."""
    rec = Recorder()
    rec.status = 204
    log_path = tmp_path / "logs" / "worker.jsonl"
    log_path.parent.mkdir(parents=True)
    name = "u" * 300
    log_path.write_text(
        '{"timestamp": "2026-11-22T10:00:00.250Z", "protocol": "http", "request_duration": 1, '
        f'"auth_username": "{name}", "hostname": "a.example.com", "port": 443, "bytes": 10}}\n'
        '{"timestamp": "2026-11-22T10:00:01.250Z", "protocol": "socks", "request_duration": 2, "bytes": 20}\n'
    )
    cfg = agent_config(tmp_path, rec.url, log_path)
    cfg.write_text(cfg.read_text().replace('format = "squid"', 'format = "jsonl"'))
    agent = AgentProc(cfg, tmp_path / "agent.log")
    try:
        agent.start("--once")
        assert agent.proc is not None and agent.proc.wait(90) == 0, agent.tail()
    finally:
        stop_process(agent.proc, signal.SIGKILL)
        rec.close()
    activity = [a for b in _accepted(rec).values() for a in b.activity]
    assert [(a.auth_username, a.protocol, a.hostname, a.bytes_received) for a in activity] == [
        (name[:255], "http", "a.example.com", 10), (None, "socks", None, 20)]
    assert 'msg="activity values over the ingest limits were cut or nulled" values=1 total=1' in agent.tail()


def test_a_spooled_batch_of_activity_records_alone_is_sent(tmp_path: Path) -> None:
    """A spool entry with activity records but no rows or profiles (left by a run that
    was killed) is delivered under its key, not settled locally as positions only."""
    from agent.activity import to_activity
    from agent.record import Record
    from agent.spool import Spool
    from agent.wire.batch import encode_msgpack

    a = to_activity(Record(1_795_333_267_348, 5, 1, 2, "10.0.0.1", "", "a.example.com", 443, "HTTPS"), "w")
    spool = Spool(tmp_path / "state", 1 << 20)
    entry = spool.append(encode_msgpack(Batch(activity=[a])), {}, 0, 0, 1)
    rec = Recorder()
    rec.status = 204
    log_path = tmp_path / "logs" / "access.log"
    SquidWriter(log_path, base=_base_minute(5), seed=81)  # an empty log
    agent = AgentProc(agent_config(tmp_path, rec.url, log_path), tmp_path / "agent.log")
    try:
        agent.start("--once")
        assert agent.proc is not None and agent.proc.wait(90) == 0, agent.tail()
    finally:
        stop_process(agent.proc, signal.SIGKILL)
        rec.close()
    assert _accepted(rec) == {entry.key: Batch(activity=[a])}
