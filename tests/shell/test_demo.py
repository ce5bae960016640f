"""`make demo` as a new user meets it: every curl example it prints works as printed.

The demo runs as a child (`python -m scripts.demo`, what `make demo` runs) in a temporary
folder on free ports. Each printed curl command is run exactly as printed (with curl when
installed, else with urllib from the same command words) and must answer 200; the
analytics examples must return data once the agent's first batches arrived; metrics
must show the pipeline moving. Ctrl-C (SIGINT) then stops everything and the demo exits 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from shellkit import REPO, metric, wait_for


def _run_curl(command: str) -> tuple[int, bytes]:
    words = shlex.split(command)
    assert words[0] == "curl" and words[1] == "-s", command
    if shutil.which("curl"):
        proc = subprocess.run([*words, "-o", "/dev/stdout", "-w", "\n%{http_code}"], capture_output=True, timeout=20)
        body, _, code = proc.stdout.rpartition(b"\n")
        return int(code), body
    headers = dict(w.split(": ", 1) for w in words[3:-1:2]) if "-H" in words else {}
    req = urllib.request.Request(words[-1], headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_demo_prints_working_curl_examples_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.demo", "--dir", str(demo_dir), "--port", "0", "--metrics-port", "0",
         "--rate", "200", "--seconds", "120"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
    )
    try:
        printed: list[str] = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops everything"):
                break
        text = "\n".join(printed)
        curls = [line for line in printed if line.startswith("curl ")]
        assert len(curls) >= 8, text
        api = curls[0].split()[-1].rsplit("/", 1)[0]  # the first example is /healthz
        analytics = [c for c in curls if "/analytics/" in c]
        assert {c.split("/analytics/")[1].split("?")[0] for c in analytics} >= {
            "traffic", "requests", "concurrency", "latency", "domains", "errors", "websites"}

        def all_have_data() -> bool:
            for cmd in analytics:
                status, body = _run_curl(cmd)
                assert status == 200, (cmd, status, body[:300])
                if not json.loads(body)["data"]:
                    return False
            return True

        wait_for("every analytics example to return data", all_have_data, timeout=60, every=1.0)
        # The generated log is squid's extended `proxymeter` logformat: uploads are counted.
        assert "logformat proxymeter" in text and "bytes_sent is 0" not in text
        traffic = next(c for c in analytics if "/analytics/traffic?" in c and "orderId" not in c)
        status, body = _run_curl(traffic)
        assert status == 200 and sum(int(i["total_bytes_sent"]) for i in json.loads(body)["data"]) > 0, body[:300]
        for cmd in curls:
            status, body = _run_curl(cmd)
            assert status == 200, (cmd, status, body[:300])
            if cmd.endswith("/metrics") and cmd.split()[-1].startswith(api):
                assert b"# TYPE proxymeter_collector" in body, body[:300]
            elif cmd.endswith("/metrics"):
                for name in ("proxymeter_agent_lines_read_total", "proxymeter_agent_batches_sent_total"):
                    assert metric(body.decode(), name) > 0, name
        assert (demo_dir / "collector.db").exists() and (demo_dir / "access.log").stat().st_size > 0
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, text + out
        assert "demo: stopped." in out
        # Every child was stopped by the demo itself (by SIGTERM, in order), none left over.
        children = [line.split() for line in (demo_dir / "pids").read_text().splitlines()]
        assert sorted(name for name, _ in children) == ["agent", "collector", "loggen"]
        assert [pid for _, pid in children if Path(f"/proc/{pid}").exists()
                and str(demo_dir) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")] == []
        assert "all batches acknowledged, exiting" in (demo_dir / "agent.log").read_text()
        assert "msg=stopped" in (demo_dir / "collector.log").read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        # Whatever happened, no child of the demo outlives the test.
        pids = demo_dir / "pids"
        for line in pids.read_text().splitlines() if pids.exists() else []:
            pid = int(line.split()[1])
            with contextlib.suppress(OSError):
                if str(demo_dir) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    os.kill(pid, signal.SIGKILL)
