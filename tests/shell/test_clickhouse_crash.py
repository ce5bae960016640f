"""Exactly-once on ClickHouse when the collector dies in the middle of a flush.

A loopback TCP proxy sits between a collector subprocess and the session's real
clickhouse-server. Armed, it watches the collector's requests; at the chosen point of
a flush it kills the collector (SIGKILL, by pid) and drops the connection, so the
point of death is exact, not a matter of timing:
- "ledger": the rows were inserted, the ledger (commit) request never reaches
  ClickHouse. After a restart the agent's retry with the same Idempotency-Key must be
  applied, and counted once (the uncommitted rows are voided).
- "ack": the ledger insert landed, the collector dies before it answers the agent.
  The retry must be a no-op.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from shellkit import Procs, start_collector, totals, wait_for

from tests.fixtures.clickhouse import ClickHouseServer

pytestmark = pytest.mark.e2e


class KillingProxy:
    """Forwards loopback TCP to `upstream`; when armed, SIGKILLs `victim` at the flush's
    ledger request ("ledger": before sending it on) or at its answer ("ack")."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.mode: str | None = None
        self.victim: int | None = None
        self.killed = threading.Event()
        self.requests: list[str] = []  # request lines seen, for the failure message
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, mode: str, victim: int) -> None:
        with self._lock:
            self.mode, self.victim = mode, victim

    def _kill(self) -> bool:
        with self._lock:
            if self.victim is None or self.killed.is_set():
                return False
            os.kill(self.victim, signal.SIGKILL)
            self.victim, self.mode = None, None
            self.killed.set()
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            state = {"ledger_sent": False}
            threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, state), daemon=True).start()

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _up(self, client: socket.socket, upstream: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := client.recv(65536):
                head = urllib.parse.unquote_plus(data[:4096].decode("latin-1"))
                if head.startswith("POST /?"):
                    self.requests.append(head.split("\r\n", 1)[0][:160])
                is_ledger = head.startswith("POST /?") and "INSERT INTO" in head.split("\r\n", 1)[0] and ".ledger" in head.split("\r\n", 1)[0]
                if is_ledger and self.mode == "ledger" and self._kill():
                    break  # the commit never reaches ClickHouse
                if is_ledger and self.mode == "ack":
                    state["ledger_sent"] = True
                upstream.sendall(data)
        except OSError:
            pass
        self._close(client, upstream)

    def _down(self, upstream: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := upstream.recv(65536):
                if state["ledger_sent"] and self._kill():
                    break  # ClickHouse committed; the collector never hears it
                client.sendall(data)
        except OSError:
            pass
        self._close(client, upstream)

    def close(self) -> None:
        self.sock.close()


def post(base: str, token: str, body: dict[str, Any], key: str) -> int | None:
    """Status of an ingest, None when the collector went away mid-request."""
    req = urllib.request.Request(
        f"{base}/analytics/ingest", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Idempotency-Key": key},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


def body_of_minutes() -> tuple[dict[str, Any], int, int]:
    """Rows over three hours before now (so minute, hour and day tables all hold them)."""
    base = (int(time.time()) // 3600 - 3) * 3600
    rows = [
        {"ts": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base + i * 600)), "domain": f"d{i % 4}.com",
         "count": i + 1, "bytes_sent": 1000 * (i + 1), "max_concurrency": i % 5}
        for i in range(18)
    ]
    return {"logs": rows}, sum(r["count"] for r in rows), sum(r["bytes_sent"] for r in rows)


@pytest.mark.parametrize("mode", ["ledger", "ack"])
def test_a_batch_retried_after_a_kill_mid_flush_counts_once(
    mode: str, tmp_path: Path, procs: Procs, clickhouse_server: ClickHouseServer
) -> None:
    proxy = KillingProxy(clickhouse_server.port)
    db = "crash_" + secrets.token_hex(6)
    storage = (
        f'backend = "clickhouse"\n[storage.clickhouse]\nurl = "http://127.0.0.1:{proxy.port}"\n'
        f'database = "{db}"\ninsert_interval = 0.0\n'
    )
    try:
        col = start_collector(procs, tmp_path, storage=storage)
        body, count, sent = body_of_minutes()
        proxy.arm(mode, col.proc.pid)
        assert post(col.base, col.agent, body, "batch-1") is None
        assert col.proc.wait(30) == -signal.SIGKILL
        assert proxy.killed.is_set(), proxy.requests

        def q(sql: str) -> int:
            return int(clickhouse_server.query(sql).strip())

        # Died exactly where meant: the rows are in, the commit is in only for "ack".
        assert q(f"SELECT count() FROM {db}.m") > 0
        assert q(f"SELECT count() FROM {db}.ledger WHERE key = 'batch-1'") == (1 if mode == "ack" else 0)

        col = start_collector(procs, tmp_path, storage=storage)
        assert post(col.base, col.agent, body, "batch-1") == 204
        assert post(col.base, col.agent, body, "batch-1") == 204  # and once more: still once
        for interval in ("1m", "1h", "1d"):
            got = totals(col, "/analytics/traffic", interval=interval)
            assert (got.get("total_count"), got.get("total_bytes_sent")) == (count, sent), interval
        # The uncommitted flush was voided (and only then: "ack" had committed).
        assert q(f"SELECT count() FROM {db}.void") == (1 if mode == "ledger" else 0)
    finally:
        proxy.close()
        clickhouse_server.query(f"DROP DATABASE IF EXISTS {db}")
