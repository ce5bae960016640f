"""Both services speak systemd's notify protocol to a real socket, as under Type=notify.

The test plays systemd: it binds an AF_UNIX datagram socket, passes NOTIFY_SOCKET and
WATCHDOG_USEC to the child and reads what arrives: READY=1 once the service works,
WATCHDOG=1 pings while it runs, STOPPING=1 after SIGTERM, in that order.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from shellkit import Procs, agent_toml, free_port, http, new_token, start_collector

READY, WATCHDOG, STOPPING = "READY=1", "WATCHDOG=1", "STOPPING=1"


def _receive_lifecycle(sock: socket.socket, proc_signal: Callable[[int], None],
                       is_ready: Callable[[], bool]) -> list[str]:
    """Collect datagrams until STOPPING=1 (sending SIGTERM after two watchdog pings)."""
    got: list[str] = []
    deadline = time.monotonic() + 40
    sent_term = False
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        for state in data.decode().split("\n"):
            got.append(state)
            if state == READY and got.count(READY) == 1:
                assert is_ready()  # READY=1 meant it: the service answers at once
        if READY in got and not sent_term and got.count(WATCHDOG) >= 2:
            proc_signal(signal.SIGTERM)
            sent_term = True
        if STOPPING in got:
            return got
    raise AssertionError(f"no STOPPING=1 within the time limit; got {got}")


def _lifecycle_only(states: list[str]) -> list[str]:
    return [s for s in states if s in (READY, WATCHDOG, STOPPING)]


def _check_order(states: list[str]) -> None:
    seq = _lifecycle_only(states)
    assert seq[0] == READY, states
    stop = seq.index(STOPPING)
    assert stop >= 3 and set(seq[1:stop]) == {WATCHDOG}, states


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    return sock, path


def test_collector_notifies_ready_watchdog_stopping(tmp_path: Path, procs: Procs) -> None:
    sock, path = _notify_socket(tmp_path)
    with sock:
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
        col = start_collector(procs, tmp_path, env=env)
        states = _receive_lifecycle(sock, col.proc.signal, lambda: http(f"{col.base}/healthz")[0] == 200)
        assert col.proc.wait(30) == 0, col.proc.text()
    _check_order(states)


def test_agent_notifies_ready_watchdog_stopping(tmp_path: Path, procs: Procs) -> None:
    col = start_collector(procs, tmp_path)
    log = tmp_path / "access.log"
    log.write_text("")
    metrics_port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml(tmp_path, col.base, col.agent, [log], metrics_port=metrics_port))
    sock, path = _notify_socket(tmp_path)
    with sock:
        agent = procs.start("agent", ["-m", "agent", "run", "--config", str(config)],
                            {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        states = _receive_lifecycle(
            sock, agent.signal, lambda: http(f"http://127.0.0.1:{metrics_port}/metrics")[0] == 200
        )
        assert agent.wait(30) == 0, agent.text()
    _check_order(states)


def test_without_notify_socket_services_run_normally(tmp_path: Path, procs: Procs) -> None:
    """Outside systemd (no NOTIFY_SOCKET) nothing is sent and both services still work."""
    col = start_collector(procs, tmp_path, env={"NOTIFY_SOCKET": ""})
    token, _ = new_token()
    assert http(f"{col.base}/analytics/requests?from=2026-01-01&to=2026-01-02", token)[0] == 401
    col.proc.signal(signal.SIGTERM)
    assert col.proc.wait(30) == 0


def test_no_watchdog_pings_without_watchdog_usec(tmp_path: Path, procs: Procs) -> None:
    """Without WatchdogSec (no WATCHDOG_USEC) the collector sends READY=1 and STOPPING=1 only."""
    sock, path = _notify_socket(tmp_path)
    with sock:
        col = start_collector(procs, tmp_path, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": ""})
        got: list[str] = []
        deadline = time.monotonic() + 1.5  # several watchdog periods of the other tests
        while time.monotonic() < deadline:
            try:
                got += sock.recv(4096).decode().split("\n")
            except TimeoutError:
                continue
        col.proc.signal(signal.SIGTERM)
        assert col.proc.wait(30) == 0
        deadline = time.monotonic() + 10
        while STOPPING not in got and time.monotonic() < deadline:
            try:
                got += sock.recv(4096).decode().split("\n")
            except TimeoutError:
                continue
    assert _lifecycle_only(got) == [READY, STOPPING], got
