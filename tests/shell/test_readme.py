"""Every curl example in README.md, run as printed against a real collector.

The commands are taken from the README's ```sh blocks (continuation lines and multi-line
quoted bodies joined like a shell would), `$TOKEN` filled with a token of the role the
endpoint needs, and the documented address 127.0.0.1:8428 pointed at the test's collector.
Each must answer what the README says: 204 for the ingest example, 200 and the documented
response fields for every query, {"status": "ok"} for /healthz.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from shellkit import REPO, Procs, start_collector

# Response fields per endpoint: FonProxy's, plus the documented extensions.
FIELDS = {
    "traffic": {"bucket", "total_bytes_sent", "total_bytes_received", "bytes_total", "total_count"},
    "requests": {"bucket", "total_count", "total_errors"},
    "concurrency": {"bucket", "max_concurrency", "total_count", "avg_concurrency"},
    "latency": {"bucket", "p50", "p95", "p99", "max", "samples", "total_count"},
    "domains": {"domain", "total_count", "bytes_total", "total_bytes_sent", "total_bytes_received", "total_errors"},
    "errors": {"error", "total_errors", "first_seen", "last_seen", "sample_domains"},
    "websites": {"domain", "total_count", "bytes_total", "first_visit", "last_visit"},
}


def readme_curls() -> list[str]:
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        pending = ""
        for line in block.splitlines():
            pending = f"{pending}\n{line}" if pending else line
            if pending.endswith("\\"):
                continue
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on
                continue
            if pending.lstrip().startswith("curl "):
                commands.append(pending.replace("\\\n", " "))
            pending = ""
    return commands


def run(words: list[str]) -> tuple[int, bytes]:
    """Run curl's words; with curl when installed, else the same request with urllib."""
    if shutil.which("curl"):
        proc = subprocess.run([*words, "-o", "/dev/stdout", "-w", "\n%{http_code}"], capture_output=True, timeout=30)
        body, _, code = proc.stdout.rpartition(b"\n")
        return int(code), body
    headers: dict[str, str] = {}
    method, data, url = "GET", None, ""
    it = iter(words[1:])
    for w in it:
        if w == "-H":
            k, _, v = next(it).partition(": ")
            headers[k] = v
        elif w == "-X":
            method = next(it)
        elif w == "-d":
            data = next(it).encode()
        elif not w.startswith("-"):
            url = w
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_every_readme_curl_example_answers_as_documented(tmp_path: Path, procs: Procs) -> None:
    commands = readme_curls()
    endpoints = {m for c in commands for m in re.findall(r"/analytics/(\w+)", c)}
    assert endpoints >= set(FIELDS) | {"ingest"}, endpoints
    # The README's dates are in March 2026: keep them whatever day the test runs.
    col = start_collector(procs, tmp_path, storage="retention_days = 36500")
    ingest_first = sorted(commands, key=lambda c: "/analytics/ingest" not in c)
    seen_data = set()
    for command in ingest_first:
        token = col.agent if "/analytics/ingest" in command else col.admin
        words = [w.replace("http://127.0.0.1:8428", col.base)
                 for w in shlex.split(command.replace("$TOKEN", token), comments=True)]
        status, body = run(words)
        where = re.search(r"/(analytics/\w+|healthz|metrics|openapi\.json)", command)
        assert where, command
        path = where[1]
        if path == "analytics/ingest":
            assert status == 204, (command, body)
        elif path == "healthz":
            assert (status, json.loads(body)) == (200, {"status": "ok"})
        elif path == "metrics":
            assert status == 200 and b"# TYPE proxymeter_collector_batches_ingested_total counter" in body
        elif path == "openapi.json":
            assert status == 200 and json.loads(body)["openapi"].startswith("3.")
        else:
            assert status == 200, (command, body)
            doc = json.loads(body)
            name = path.split("/")[1]
            for item in doc["data"]:
                assert set(item) == FIELDS[name], (command, item)
                seen_data.add(name)
            if name == "websites":
                assert {"page", "limit", "total", "totalPages"} <= set(doc)
    # The ingest example's row (2026-03-15 10:15, order 3, google.com) shows up where a
    # query's range and filters cover it.
    assert {"traffic", "latency", "domains"} <= seen_data
