"""The log generator: deterministic, realistic, and its truth matches what it wrote.

The truth is checked against an independent reading of the written file (a small parser
written here from the squid native format and the extended `proxymeter` one, splitting
from both ends because squid logs user names with raw spaces), and against the agent's
own parsers. The default output is pinned by its SHA-256: benchmarks compare runs on it.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from bench import loggen

REPO = Path(__file__).resolve().parents[2]
START_MS = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC
LINE = re.compile(
    r"^(?P<ts>\d+\.\d{3}) +(?P<elapsed>\d+) (?P<client>\S+) (?P<result>[A-Z_]+)/(?P<status>\d{3}) (?P<size>\d+) "
    r"(?P<method>\S+) (?P<url>\S+) (?P<user>.+) (?P<hier>[A-Z_]+)/(?P<peer>\S+) (?P<mime>\S+)$"
)


# The `proxymeter` logformat: native + %>st %<la %>lp %err_code/%err_detail.
EXTENDED = re.compile(LINE.pattern[:-1] + r" (?P<sent>\d+) (?P<ip_out>\S+) (?P<port>\d+) (?P<err_code>[A-Z_-]+)/(?P<err_detail>\S+)$")


def _read_squid(path: Path, line: re.Pattern[str] = LINE) -> list[dict[str, str]]:
    out = []
    for raw in path.read_text().splitlines():
        m = line.match(raw)
        assert m, raw
        out.append(m.groupdict())
    return out


def _is_error(rec: dict[str, str]) -> bool:
    return (
        rec["result"] in ("TCP_DENIED", "NONE_NONE")
        or rec["result"].endswith("_ABORTED")
        or (rec["status"] == "503" and rec["hier"] == "HIER_NONE")
    )


def test_same_seed_same_lines_and_different_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"
    loggen.write_file(a, 3000, seed=7, start_ms=START_MS, rate=100, pool_size=2000, users=20, domains=300)
    loggen.write_file(b, 3000, seed=7, start_ms=START_MS, rate=100, pool_size=2000, users=20, domains=300)
    loggen.write_file(c, 3000, seed=8, start_ms=START_MS, rate=100, pool_size=2000, users=20, domains=300)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_squid_lines_are_realistic_and_truth_matches(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    truth = loggen.write_file(path, 20_000, seed=3, start_ms=START_MS, rate=200, minutes=True)
    recs = _read_squid(path)
    assert len(recs) == 20_000 == truth.lines
    # Times: the stamps advance at the requested rate (end times, 5 ms apart).
    stamps = [round(float(r["ts"]) * 1000) for r in recs]
    assert stamps[0] == START_MS and stamps[-1] == START_MS + 19_999 * 5
    assert stamps == sorted(stamps)
    # Per-user and per-(user, start minute) totals, read back independently.
    per_user: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    per_minute: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r, end in zip(recs, stamps):
        if r["url"] == "error:transaction-end-before-headers":
            continue  # a connection closed before any request: not a request
        start_min = (end - int(r["elapsed"])) // 60_000 * 60
        for acc in (per_user[r["user"]], per_minute[(r["user"], start_min)]):
            acc[0] += 1
            acc[1] += int(r["size"])
            acc[3] += _is_error(r)
    assert dict(per_user) == truth.per_user
    assert dict(per_minute) == truth.per_minute
    # Realism: what the agent and the benchmarks rely on being present.
    users = set(per_user)
    assert "john smith" in users and "alice" in users and "-" in users
    assert sum(1 for u in users if re.fullmatch(r"user-\d+-order-\d+", u)) >= 150
    methods = {r["method"] for r in recs}
    assert {"GET", "CONNECT", "POST", "-"} <= methods
    codes = {f'{r["result"]}/{r["status"]}' for r in recs}
    assert {"TCP_DENIED/407", "TCP_DENIED/403", "TCP_MISS/503", "TCP_TUNNEL/503", "TCP_TUNNEL/200",
            "NONE_NONE/000", "TCP_MISS_ABORTED/000", "TCP_MISS/404"} <= codes
    assert any(int(r["elapsed"]) >= 60_000 and r["method"] == "CONNECT" for r in recs)  # long tunnels
    hosts = [r["url"].split("/")[2] if r["url"].startswith("http://") else r["url"].rsplit(":", 1)[0] for r in recs]
    counts = sorted(Counter(hosts).values(), reverse=True)
    assert len(counts) > 1000  # thousands of distinct hosts...
    assert counts[0] > 20 * counts[len(counts) // 2]  # ...with skewed popularity
    errors = sum(v[3] for v in per_user.values())
    assert 0.02 * len(recs) < errors < 0.1 * len(recs)


def test_user_ids_from_names() -> None:
    gen = loggen.LogGen(5, users=10, domains=100, pool_size=500)
    gen.render(loggen.times(START_MS, 10, 500))
    truth = gen.truth()
    for name, ids in truth.users.items():
        m = re.fullmatch(r"user-(\d+)-order-(\d+)", name)
        assert ids == ((int(m[1]), int(m[2])) if m else None)
    by_id = truth.by_user_id(default=(0, 0))
    assert sum(v[0] for v in by_id.values()) == 500
    unmatched = sum(truth.per_user.get(n, [0])[0] for n in ("alice", "backup-bot", "john smith", "-"))
    assert by_id.get((0, 0), [0])[0] == unmatched


def test_jsonl_lines_carry_webshare_fields(tmp_path: Path) -> None:
    path = tmp_path / "activity.jsonl"
    truth = loggen.write_file(path, 2000, seed=4, start_ms=START_MS, rate=20, fmt="jsonl", pool_size=1500)
    objs = [json.loads(line) for line in path.read_text().splitlines()]
    fields = {"timestamp", "protocol", "request_duration", "handshake_duration", "tunnel_duration", "error_reason",
              "error_reason_how_to_fix", "auth_username", "proxy_address", "bytes", "client_address", "ip_address",
              "hostname", "domain", "port", "proxy_port", "listen_address", "listen_port"}
    assert all(set(o) == fields | {"bytes_sent", "bytes_received"} for o in objs)
    assert all(o["bytes"] == o["bytes_sent"] + o["bytes_received"] for o in objs)
    req, received, sent, errors = truth.totals()
    assert req == len(objs)
    assert sum(o["bytes_received"] for o in objs) == received
    assert sum(o["bytes_sent"] for o in objs) == sent
    assert sum(1 for o in objs if o["error_reason"]) == errors
    assert {o["protocol"] for o in objs} == {"http", "https"}
    # The timestamp is the request's start: end time (line i at START + 50 ms * i) minus duration.
    from datetime import datetime

    first = objs[0]
    start = datetime.fromisoformat(first["timestamp"]).timestamp() * 1000
    assert round(start + first["request_duration"] * 1000) == START_MS


def test_default_output_is_byte_for_byte_unchanged(tmp_path: Path) -> None:
    """The native squid and jsonl output of given seeds (the benchmarks' inputs) stays
    what it was before the proxymeter logformat was added, through the API and the CLI."""
    path = tmp_path / "a.log"
    for fmt, digest in (("squid", "ad471fe3e7f6e873ffd0afb7fe839cc198a31cc12ac4550fba7ce13f161f25ee"),
                        ("jsonl", "175bd3190f30f77c243a2a3d52dcca854eb7c8682b4b52d6575ef8513c9ea791")):
        loggen.write_file(path, 5000, seed=3, start_ms=START_MS, rate=200, fmt=fmt, pool_size=4000, users=30,
                          domains=300)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, fmt
    subprocess.run([sys.executable, "-m", "bench.loggen", "write", "--path", str(path), "--lines", "3000", "--seed",
                    "9", "--pool", "1000"], cwd=REPO, capture_output=True, timeout=60, check=True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == \
        "8b0ca845d4641adc8acf09426485c9a85f509b94009ae2db19b05ae5042e8711"


def _proxymeter_error(rec: dict[str, str]) -> bool:
    return rec["err_code"] != "-"


def test_proxymeter_logformat_is_the_native_line_plus_four_fields_and_matches_the_truth(tmp_path: Path) -> None:
    """Same seed, same events: each extended line is its native line plus %>st %<la %>lp
    %err_code/%err_detail (a refused connection names the server squid tried instead of
    HIER_NONE/-); read back independently, the per-user and per-minute requests, bytes
    both ways and errors are exactly the truth, whose bytes_sent are now the uploads."""
    native, extended = tmp_path / "native.log", tmp_path / "extended.log"
    loggen.write_file(native, 20_000, seed=3, start_ms=START_MS, rate=200, minutes=True)
    truth = loggen.write_file(extended, 20_000, seed=3, start_ms=START_MS, rate=200, minutes=True,
                              squid_logformat="proxymeter")
    plain, recs = _read_squid(native), _read_squid(extended, EXTENDED)
    assert len(recs) == len(plain) == 20_000 == truth.lines
    refused = 0
    for a, b in zip(plain, recs):
        if b["err_code"] == "ERR_CONNECT_FAIL":
            refused += 1
            assert (a["hier"], a["peer"], b["hier"], b["err_detail"]) == ("HIER_NONE", "-", "HIER_DIRECT", "errno=111")
            assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", b["peer"]) and b["ip_out"] == "-"
            b = dict(b, hier=a["hier"], peer=a["peer"])
        assert {k: b[k] for k in a} == a
    assert refused > 0
    per_user: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    per_minute: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in recs:
        if r["url"] == "error:transaction-end-before-headers":
            assert (r["sent"], r["err_code"]) == ("0", "-")  # the client sent nothing
            continue
        end = round(float(r["ts"]) * 1000)
        for acc in (per_user[r["user"]], per_minute[(r["user"], (end - int(r["elapsed"])) // 60_000 * 60)]):
            acc[0] += 1
            acc[1] += int(r["size"])
            acc[2] += int(r["sent"])
            acc[3] += _proxymeter_error(r)
        assert int(r["sent"]) > 0  # every request has at least its request head
        assert r["port"] in ("3128", "3129")
        assert (r["ip_out"] == "-") == (r["hier"] == "HIER_NONE" or r["err_code"] == "ERR_CONNECT_FAIL")
    assert dict(per_user) == truth.per_user
    assert dict(per_minute) == truth.per_minute
    assert truth.totals()[2] == sum(v[2] for v in per_user.values()) > 0
    codes = {r["err_code"] + "/" + r["err_detail"] for r in recs}
    assert codes == {"-/-", "ERR_CACHE_ACCESS_DENIED/-", "ERR_ACCESS_DENIED/-", "ERR_DNS_FAIL/-",
                     "ERR_CONNECT_FAIL/errno=111", "ERR_CLIENT_GONE/WITH_CLIENT", "ERR_INVALID_REQ/-"}
    assert {r["ip_out"] for r in recs} == {"-", "198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.13"}


def test_agent_reads_the_proxymeter_logformat_as_the_generator_meant() -> None:
    """The agent's squid parser on extended lines: per user and start minute, requests,
    bytes_received, bytes_sent and errors equal the truth, and every error is read as
    the kind the generator made (a refused connection is not a DNS failure here)."""
    from datetime import timezone

    from agent.parsers import make_parser

    gen = loggen.LogGen(3, squid_logformat="proxymeter", pool_size=8000, minutes=True)
    text = gen.render(loggen.times(START_MS, 200, 20_000))
    parser = make_parser("squid", timezone.utc)
    per_user: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    per_minute: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    kinds: Counter[str] = Counter()
    listen_ports: Counter[int] = Counter()
    for line in text.encode().splitlines():
        rec = parser.parse(line)
        if rec is None:
            continue
        user = rec.user or loggen.NO_USER
        for acc in (per_user[user], per_minute[(user, rec.start_ms // 60_000 * 60)]):
            acc[0] += 1
            acc[1] += rec.bytes_received
            acc[2] += rec.bytes_sent
            acc[3] += rec.error != ""
        if rec.error:
            kinds[rec.error] += 1
        listen_ports[rec.listen_port] += 1
        assert rec.ip_out in ("", "198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.13")
    truth = gen.truth()
    assert dict(per_user) == truth.per_user
    assert dict(per_minute) == truth.per_minute
    assert kinds == truth.error_kinds
    assert set(truth.error_kinds) == {"auth_failed", "forbidden_host", "dns_failure", "connection_refused",
                                      "client_aborted", "invalid_request"}
    assert set(listen_ports) == {3128, 3129} and listen_ports[3128] > 5 * listen_ports[3129]
    assert truth.totals()[2] > 0


def test_command_line_write(tmp_path: Path) -> None:
    path = tmp_path / "cli.log"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loggen", "write", "--path", str(path), "--lines", "1234", "--seed", "9",
         "--pool", "1000"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )
    summary = json.loads(proc.stderr)
    recs = _read_squid(path)
    assert summary["lines"] == len(recs) == 1234
    requests = [r for r in recs if r["url"] != "error:transaction-end-before-headers"]
    assert summary["requests"] == len(requests)
    assert summary["bytes_received"] == sum(int(r["size"]) for r in requests)
    assert summary["errors"] == sum(_is_error(r) for r in requests)
    assert summary["bytes_sent"] == 0  # the native format has no upload sizes


def test_command_line_write_proxymeter_logformat(tmp_path: Path) -> None:
    path = tmp_path / "cli.log"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loggen", "write", "--path", str(path), "--lines", "1234", "--seed", "9",
         "--pool", "1000", "--squid-logformat", "proxymeter"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )
    summary = json.loads(proc.stderr)
    recs = _read_squid(path, EXTENDED)
    requests = [r for r in recs if r["url"] != "error:transaction-end-before-headers"]
    assert summary == {"lines": 1234, "requests": len(requests),
                       "bytes_received": sum(int(r["size"]) for r in requests),
                       "bytes_sent": sum(int(r["sent"]) for r in requests),
                       "errors": sum(_proxymeter_error(r) for r in requests)}
    wrong = subprocess.run(
        [sys.executable, "-m", "bench.loggen", "write", "--path", str(path), "--format", "jsonl",
         "--squid-logformat", "proxymeter"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "--squid-logformat proxymeter needs --format squid" in wrong.stderr


def test_agent_parsers_read_the_lines_as_the_generator_meant() -> None:
    """Cross-check with the agent's parsers: per-user requests, bytes and errors agree."""
    from datetime import timezone

    from agent.parsers import make_parser

    for fmt in loggen.FORMATS:
        gen = loggen.LogGen(3, fmt, pool_size=8000)
        text = gen.render(loggen.times(START_MS, 200, 10_000))
        parser = make_parser(fmt, timezone.utc)
        per_user: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for line in text.encode().splitlines():
            rec = parser.parse(line)
            if rec is None:
                continue
            acc = per_user[rec.user or loggen.NO_USER]
            acc[0] += 1
            acc[1] += rec.bytes_received
            acc[2] += rec.bytes_sent
            acc[3] += rec.error != ""
        assert dict(per_user) == gen.truth().per_user, fmt
