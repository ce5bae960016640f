"""Every curl example in README.md, run as printed against a real collector.

The commands are taken from the README's ```sh blocks (continuation lines and multi-line
quoted bodies joined like a shell would), `$TOKEN` filled with a token of the role the
endpoint needs, and the documented address 127.0.0.1:8428 pointed at the test's collector.
Each must answer what the README says: 204 for the ingest example, 200 and the documented
response fields for every query, {"status": "ok"} for /healthz; and each query's figures
are exactly those of the ingest example's rows its range and filters cover.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import tomllib
import typing
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo

import pytest
from shellkit import REPO, Procs, start_collector

from agent import config as agent_config
from collector import config as collector_config

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
    assert {c for c in commands if "/api/v2/" in c} and "$DOWNLOAD_TOKEN" in "".join(commands)
    # The README's dates are in March 2026: keep them whatever day the test runs.
    col = start_collector(procs, tmp_path, storage="retention_days = 36500\nactivity_retention_days = 36500")
    ingest_first = sorted(commands, key=lambda c: "/analytics/ingest" not in c)
    seen_data = set()
    rows: list[dict[str, Any]] = []  # what the ingest examples sent: the oracle of the queries
    activity: list[dict[str, Any]] = []
    download_token = ""  # from the token examples, for the download example
    for command in ingest_first:
        token = col.agent if "/analytics/ingest" in command else col.admin
        filled = command.replace("$TOKEN", token).replace("$DOWNLOAD_TOKEN", download_token)
        words = [w.replace("http://127.0.0.1:8428", col.base) for w in shlex.split(filled, comments=True)]
        status, body = run(words)
        where = re.search(r"/(analytics/\w+|api/v2/[\w/]+|healthz|metrics|openapi\.json)", command)
        assert where, command
        path = where[1]
        if path == "analytics/ingest":
            assert status == 204, (command, body)
            sent = json.loads(words[words.index("-d") + 1])
            rows += sent["logs"]
            activity += sent.get("activity", [])
        elif path.startswith("api/v2/"):
            assert status == 200, (command, body)
            got = _check_v2(path, command, body, rows, activity)
            download_token = got or download_token
            seen_data.add(path)
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
            _check_values(name, command, doc, _covered(rows, command))
    # The ingest example's row (2026-03-15 10:15, order 3, google.com) shows up where a
    # query's range and filters cover it.
    assert {"traffic", "latency", "domains"} <= seen_data
    assert {"api/v2/proxy/activity/download/", "api/v2/stats/aggregate/"} <= seen_data


def _v2_window(command: str) -> tuple[dict[str, str], float, float]:
    url = next(w for w in shlex.split(command, comments=True) if w.startswith("http"))
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))

    def instant(name: str, default: float) -> float:
        if name not in params:
            return default
        moment = datetime.fromisoformat(params[name])
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()

    lte = instant("timestamp__lte", datetime.now(timezone.utc).timestamp())
    return params, instant("timestamp__gte", lte - 6 * 86400), lte


def _check_v2(path: str, command: str, body: bytes, rows: list[dict[str, Any]],
              activity: list[dict[str, Any]]) -> str | None:
    """The /api/v2 examples answer the ingested figures; returns a download token's key."""
    if path.startswith("api/v2/download_token/"):
        doc = json.loads(body)
        assert set(doc) == {"id", "key", "scope", "expire_at"} and doc["scope"] == "activity", doc
        return str(doc["key"])
    params, gte, lte = _v2_window(command)
    covered = [a for a in activity if gte <= a["ts_us"] / 1e6 <= lte and a["error"]] if "error_reason" in params \
        else [a for a in activity if gte <= a["ts_us"] / 1e6 <= lte]
    if path == "api/v2/proxy/activity/download/":
        lines = body.decode().splitlines()
        assert lines[0] == "Time,Hostname,Destination Port,Bytes,Duration,Proxy,Your IP Address,Error Reason,Protocol"
        assert len(lines) - 1 == len(covered), (command, lines)
        return None
    doc = json.loads(body)
    if path == "api/v2/proxy/activity/":
        assert set(doc) == {"count", "next", "previous", "results"} and doc["count"] == len(covered), (command, doc)
        assert [r["hostname"] for r in doc["results"]] == [a["hostname"] for a in covered]
        return None
    minutes = [r for r in rows
               if gte <= datetime.fromisoformat(r["ts"]).replace(tzinfo=timezone.utc).timestamp() // 60 * 60 <= lte
               and ("plan_id" not in params or str(r.get("order_id", 0)) == params["plan_id"])]
    items = doc if isinstance(doc, list) else [doc]
    assert sum(i["requests_total"] for i in items) == sum(r.get("count", 0) for r in minutes), (command, doc)
    assert sum(i["bandwidth_total"] for i in items) == sum(
        r.get("bytes_sent", 0) + r.get("bytes_received", 0) for r in minutes), (command, doc)
    return None


def _covered(rows: list[dict[str, Any]], command: str) -> list[dict[str, Any]]:
    """The ingested rows a query's range and filters select (the README's own rules)."""
    url = next(w for w in shlex.split(command, comments=True) if w.startswith("http"))
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    zone = ZoneInfo(params.get("tz", "UTC"))

    def instant(text: str) -> datetime:
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=zone)

    frm, to = instant(params["from"]), instant(params["to"])
    out = []
    for row in rows:
        ts = datetime.fromisoformat(row["ts"]).replace(tzinfo=timezone.utc)
        if not frm <= ts < to:
            continue
        if any(p in params and str(row.get(k, "" if k == "domain" else 0)) != params[p]
               for p, k in (("orderId", "order_id"), ("userId", "user_id"), ("domain", "domain"))):
            continue
        out.append(row)
    return out


def _check_values(name: str, command: str, doc: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The answer holds exactly the covered rows' figures (empty buckets are omitted)."""
    data = doc["data"]

    def total(field: str) -> int:
        return sum(int(item[field]) for item in data)

    def rows_sum(field: str) -> int:
        return sum(int(row.get(field, 0)) for row in rows)

    if name in ("traffic", "requests", "concurrency", "latency"):
        assert bool(data) == bool(rows), (command, data)
        assert total("total_count") == rows_sum("count"), command
    if name == "traffic":
        assert (total("total_bytes_sent"), total("total_bytes_received"), total("bytes_total")) == (
            rows_sum("bytes_sent"), rows_sum("bytes_received"), rows_sum("bytes_sent") + rows_sum("bytes_received"))
    elif name == "requests":
        assert total("total_errors") == rows_sum("error_count"), command
    elif name == "concurrency" and rows:
        assert max(int(i["max_concurrency"]) for i in data) == max(int(r.get("max_concurrency", 0)) for r in rows)
    elif name in ("domains", "websites"):
        by_domain: dict[str, int] = {}
        for row in rows:
            if row.get("domain"):
                by_domain[row["domain"]] = by_domain.get(row["domain"], 0) + int(row.get("count", 0))
        if name == "websites":
            assert doc["total"] == len(by_domain), (command, doc)
            first = (int(doc["page"]) - 1) * int(doc["limit"])
            assert len(data) == max(0, min(int(doc["limit"]), len(by_domain) - first)), (command, doc)
        else:
            assert {i["domain"]: int(i["total_count"]) for i in data} == by_domain, (command, data)
    elif name == "errors":
        by_error: dict[str, int] = {}
        for row in rows:
            if row.get("error"):
                by_error[row["error"]] = by_error.get(row["error"], 0) + int(row.get("error_count", 0))
        assert {i["error"]: int(i["total_errors"]) for i in data} == by_error, (command, data)


def _section(name: str) -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(rf"<!-- section:{name} -->\n(.*?)<!-- /section:{name} -->", text, re.S)
    assert m, name
    return m[1]


def _table_rows(section: str) -> dict[str, str]:
    """Rows `| `key` / `key2` | default | meaning |` of the tables headed
    `| key | default | meaning |` -> {key: default cell}."""
    rows: dict[str, str] = {}
    in_table = False
    for line in section.splitlines():
        if line.startswith("| key | default |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and (m := re.match(r"^\| (`[^|]+`) \| ([^|]*) \|", line)):
            for key in re.findall(r"`([^`]+)`", m[1]):
                rows[key] = m[2].strip()
    return rows


def _default_of(field: Any) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _fields(cls: type, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, dataclasses.Field) of every leaf key; arrays of tables as `name[].key`."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, path = hints[f.name], f"{prefix}{f.name}"
        args = get_args(tp)
        if dataclasses.is_dataclass(tp):
            yield from _fields(typing.cast(type, tp), path + ".")
        elif get_origin(tp) in (list, tuple) and args and dataclasses.is_dataclass(args[0]):
            yield from _fields(typing.cast(type, args[0]), path + "[].")
        else:
            yield path, f


@pytest.mark.parametrize("section,schema", [("agent-config", agent_config.Config),
                                            ("collector-config", collector_config.CollectorConfig)])
def test_configuration_reference_lists_every_key_with_its_default(section: str, schema: type) -> None:
    rows = _table_rows(_section(section))
    wildcards = [k[:-1] for k in rows if k.endswith(".*")]  # `users.*`: explained in the text below
    text = _section(section)
    missing, wrong = [], []
    for path, f in _fields(schema):
        wildcard = next((w for w in wildcards if path.startswith(w)), None)
        if wildcard is not None:
            if not re.search(rf"`[^`\n]*\b{re.escape(path[len(wildcard):])}\b[^`\n]*`", text):
                missing.append(path)
            continue
        if path not in rows:
            missing.append(path)
            continue
        default, cell = _default_of(f), rows[path]
        shown = re.match(r"^`([^`]*)`", cell)
        if default is dataclasses.MISSING or f.default_factory is not dataclasses.MISSING and not shown:
            continue  # "required", or computed ("the host name")
        if default is None:
            continue  # optional keys (`collector.token`, `user_id`): described, no value
        assert shown, (path, cell)
        try:
            value = tomllib.loads(f"v = {shown[1]}")["v"]
        except tomllib.TOMLDecodeError:
            value = shown[1]  # a bare path such as /var/lib/proxymeter-agent
        if value != default:
            wrong.append((path, shown[1], default))
    assert missing == [] and wrong == []
    known = {p for p, _ in _fields(schema)}
    unknown = [k for k in rows if k not in known and not k.endswith(".*")]
    assert unknown == []  # the table documents no key the config does not have


def test_readme_starts_with_the_two_commands_and_ci_runs_what_it_says() -> None:
    text = (REPO / "README.md").read_text()
    assert text.startswith("# proxymeter\n\n```sh\nmake demo\nmake test\n```\n"), text[:80]
    sections = re.findall(r"<!-- section:([\w-]+) -->", text)
    order = ["overview", "install", "agent-config", "collector-config", "api", "operations"]
    assert [s for s in sections if s in order] == order, sections
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "make test"]
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test", "bench"):
        assert re.search(rf"^{target}: \$\(STAMP\)$", makefile, re.M), target  # each sets up the venv first
