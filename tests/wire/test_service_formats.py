"""Prometheus exposition, logfmt lines and sd_notify datagrams, checked byte for byte."""

import logging
import os
import socket

import pytest

from agent.wire import logfmt, prometheus, sdnotify


def test_prometheus_text() -> None:
    reg = prometheus.Registry()
    c = reg.counter("pm_rejects_total", "Rejected lines.", ["reason"])
    c.inc(2, 'bad "ts"')
    g = reg.gauge("pm_up", "Up.", fn=lambda: 1)
    h = reg.histogram("pm_seconds", "Latency.", buckets=(0.1, 1))
    h.observe(0.05)
    h.observe(5)
    assert g.get() == 0
    assert reg.render() == (
        "# HELP pm_rejects_total Rejected lines.\n# TYPE pm_rejects_total counter\n"
        'pm_rejects_total{reason="bad \\"ts\\""} 2\n'
        "# HELP pm_up Up.\n# TYPE pm_up gauge\npm_up 1\n"
        "# HELP pm_seconds Latency.\n# TYPE pm_seconds histogram\n"
        'pm_seconds_bucket{le="0.1"} 1\npm_seconds_bucket{le="1"} 1\npm_seconds_bucket{le="+Inf"} 2\n'
        "pm_seconds_sum 5.05\npm_seconds_count 2\n"
    )


def test_logfmt_line() -> None:
    record = logging.LogRecord("agent.tailer", logging.WARNING, __file__, 1, "file rotated", None, None)
    record.created = 0.25
    record.msecs = 250
    record.kv = {"path": "/var/log/a b.log", "n": 3, "empty": ""}
    assert logfmt.LogfmtFormatter().format(record) == (
        'ts=1970-01-01T00:00:00.250Z level=warning logger=agent.tailer msg="file rotated" '
        'path="/var/log/a b.log" n=3 empty=""'
    )


def test_sdnotify_sends_datagrams(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.notify(sdnotify.READY)
        assert sdnotify.notify(sdnotify.STOPPING)
        assert [server.recv(64), server.recv(64)] == [b"READY=1", b"STOPPING=1"]


def test_sdnotify_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify(sdnotify.READY) is False
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None
