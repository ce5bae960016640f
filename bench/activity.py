"""Benchmark 8: activity records (the Webshare-compatible API) at 10 million records.

Three parts, the collector always a real process (bench.services) on SQLite:

- Ingest: a fresh SQLite file per run; 8 concurrent aiohttp senders post pre-encoded
  msgpack bodies carrying only activity records (`"logs": []`), 10,000 or 1,000 records
  per body, a unique Idempotency-Key each. records/s = records acknowledged / wall time
  from the first send to the last 204; 3 runs of 1,000,000 records per body size, the two
  sizes interleaved (A B A B A B), median reported. Store size per million records is the
  file after the collector stopped (WAL checkpointed), its three indexes included.
- Query store: 10,000,000 records over the 6 days before the build, sent through the
  collector's ingest endpoint the same way (bodies generated while sending, so the build
  rate includes the generator), each body also carrying the minute rows of its records
  (what an agent sends: the stats endpoints read the rows, not the activity). Built once
  and kept in .bench/activity/ under a name holding a digest of the generator and of the
  schema; rebuilt when either changes or when it is over 5 days old (retention and the
  windows are relative to the collector's clock, which has no override).
- Latency (p50/p99, one request at a time, through HTTP with `Authorization: Token`) of
  /api/v2/proxy/activity/ (first page, a deep page via `starting_after` in the middle of
  the window, `search`, `error_reason=*`, `bytes__gte`) and of /api/v2/stats/ and
  /api/v2/stats/aggregate/, all over the store's 6 days passed explicitly as
  timestamp__gte/lte, for an admin token (every user) and a user token (the busiest
  user). Each case gets 30 requests or as many as fit in a time budget (at least 3); the
  request count is in the note. Download: POST /api/v2/download_token/activity/ (admin),
  then the CSV of the last hour, the last day and all 6 days through
  /api/v2/proxy/activity/download/?download_token=...; records/s (CSV lines counted and
  checked against the list's `count`), also per stretch of 100,000 records (or a tenth
  of the window) to show whether the stream slows down as it goes deeper; a download is
  stopped after 120 s (60 s in --quick) and then reported as incomplete with how far it
  got, and not repeated. The collector's memory during the download:
  VmRSS and RssAnon sampled every 50 ms from /proc/<pid>/status, the max increase over
  the value just before the download (VmHWM cannot be reset, so it is not used).
  RssAnon (heap) is the figure that says whether the stream holds records; VmRSS also
  counts the pages of the database file the readers' mmap (256 MiB each) touched.

Generated data: 200 users (Zipf-like activity, IP-authenticated ones without a user
name), 5,000 hostnames on ~1,700 registrable domains (Zipf-like popularity), ~3 % errors
with the agent's real codes, many equal timestamps (a third of the records repeat the
previous record's time; SOCKS records have whole seconds as dante and nginx stream log),
durations 10 ms..100 s and bytes 100 B..100 MB spread log-uniformly.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import inspect
import itertools
import json
import random
import secrets
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from bench.measure import MIB, REPO, median, percentile, stop, workdir
from bench.report import Report, Result
from bench.services import Collector, _script, collector_config, db_files, dir_size, free_port, wait_http

BENCH = "8 activity"
SENDERS = 8
USERS = 200
HOSTS = 5000
SPAN_DAYS = 6
DAY_US = 86_400 * 1_000_000
HOUR_US = 3_600 * 1_000_000
MAX_STORE_AGE_S = 5 * 86_400
QUERY_TIMEOUT_S = 300.0
SAMPLE_S = 0.05
DOWNLOAD_LIMIT_S = 120.0
TLDS = ("com", "net", "org", "io", "de", "co.uk")
SUBS = ("www", "api", "cdn")
ERROR_WEIGHTS = (("timeout", 30), ("connection_refused", 20), ("dns_failure", 15), ("client_aborted", 15),
                 ("auth_failed", 8), ("forbidden_host", 5), ("upstream_error", 5),
                 ("other:TCP_MISS_ABORTED/000", 2))
ERROR_RATE = 0.03
STORE_SEED = 11


@dataclass(frozen=True)
class Sizes:
    ingest_records: int
    store_records: int
    reps: int  # requests per latency case (fewer when the budget runs out)
    budget_s: float  # per latency case


FULL = Sizes(ingest_records=1_000_000, store_records=10_000_000, reps=30, budget_s=30.0)
QUICK = Sizes(ingest_records=100_000, store_records=200_000, reps=10, budget_s=5.0)


def _zipf(rnd: random.Random, n: int, s: float = 1.0, size: int = 1 << 16) -> list[int]:
    """A lookup table: a uniform index into it gives 0..n-1 with weight 1/(i+1)^s."""
    cum = list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(n)))
    return [min(n - 1, bisect.bisect(cum, rnd.random() * cum[-1])) for _ in range(size)]


class Generator:
    """Deterministic activity records (and their minute rows) for a seed."""

    def __init__(self, seed: int) -> None:
        rnd = self.rnd = random.Random(seed)
        self.hosts = []
        for i in range(HOSTS):
            domain = f"site{i // 3}.{TLDS[(i // 3) % len(TLDS)]}"
            ip = f"{23 + i % 180}.{(i * 7) % 256}.{(i * 13) % 256}.{1 + i % 254}"
            self.hosts.append((f"{SUBS[i % 3]}.{domain}", domain, ip))
        self.host_table = _zipf(rnd, HOSTS)
        self.user_table = _zipf(rnd, USERS, s=0.8)
        self.users = []
        for u in range(USERS):
            # one user in five authenticates by IP: Webshare shows auth_username null then
            name = None if u % 5 == 4 else f"user{u:03d}"
            clients = [f"10.{u // 100}.{u % 100}.{1 + k * 40}" for k in range(1 + u % 3)]
            self.users.append((1000 + u, 1 + u % 37, name, clients, 10_000 + u))
        self.workers = [(f"worker-0{w}", f"192.168.5.{20 + w}") for w in range(4)]
        self.proxies = [f"198.51.100.{1 + p}" for p in range(64)]
        codes = [c for c, w in ERROR_WEIGHTS for _ in range(w)]
        self.error_table = codes
        self.last_ts = 0

    def records(self, n: int, t0_us: int, step_us: float) -> list[dict[str, Any]]:
        """n records starting at t0_us, one every step_us on average, in time order."""
        r = self.rnd.random
        hosts, ht, nh = self.hosts, self.host_table, len(self.host_table)
        users, ut, nu = self.users, self.user_table, len(self.user_table)
        errs, ne = self.error_table, len(self.error_table)
        out = []
        ts = max(self.last_ts, t0_us)
        for i in range(n):
            if r() >= 0.33:  # else: the same time as the previous record (a burst)
                ts = max(ts, int(t0_us + (i + r()) * step_us))
            uid, oid, name, clients, lport = users[ut[int(r() * nu)]]
            hostname, domain, ip = hosts[ht[int(r() * nh)]]
            socks = r() < 0.15
            x = r()
            port = 443 if x < 0.7 else (80 if x < 0.95 else 8080)
            err = errs[int(r() * ne)] if r() < ERROR_RATE else ""
            duration = int(10 ** (1 + 4 * r()))
            if err and err not in ("client_aborted", "upstream_error"):
                sent = received = 0
                duration = min(duration, 30_000)  # a failed connect gives up at the proxy's timeout
            else:
                sent = int(10 ** (2 + 3 * r()))
                received = int(10 ** (2 + 6 * r()))
            # each user goes out through two proxy IPs, each IP on one worker
            pidx = (uid * 2 + (i & 1)) % len(self.proxies)
            wname, laddr = self.workers[pidx % 4]
            handshake = duration * (5 + int(r() * 30)) // 100
            rec_ts = ts - ts % 1_000_000 if socks else ts - ts % 1000
            out.append({
                "ts_us": rec_ts, "protocol": "socks" if socks else "http", "duration_ms": duration,
                "handshake_ms": handshake, "tunnel_ms": duration - handshake if socks or port == 443 else None,
                "error": err, "auth_username": name, "proxy_address": self.proxies[pidx],
                "client_address": clients[i % len(clients)], "ip_address": None if err == "dns_failure" else ip,
                "hostname": hostname, "domain": domain, "port": port, "proxy_port": None,
                "listen_address": laddr, "listen_port": lport, "user_id": uid, "order_id": oid,
                "worker": wname, "bytes_sent": sent, "bytes_received": received,
            })
        self.last_ts = ts
        return out


def minute_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Minute rows of these records, per (minute, user, order, protocol, error), each
    user's rows on its first proxy IP and worker. A real agent also splits by domain,
    proxy IP and port, so its store holds more rows per minute than this one; this keeps
    the build of the 10 M store within minutes on a shared machine, and the stats read
    every minute row of the window either way."""
    acc: dict[tuple[Any, ...], list[int]] = {}
    for rec in records:
        proto = "SOCKS" if rec["protocol"] == "socks" else ("HTTPS" if rec["port"] == 443 else "HTTP")
        key = (rec["ts_us"] // 60_000_000 * 60, rec["user_id"], rec["order_id"], proto, rec["error"])
        a = acc.get(key)
        if a is None:
            a = acc[key] = [0, 0, 0, 0, 0, 0]
        a[0] += 1
        a[1] += rec["bytes_sent"]
        a[2] += rec["bytes_received"]
        a[3] += 1 if rec["error"] else 0
        a[4] += rec["duration_ms"]
        a[5] = max(a[5], rec["duration_ms"])
    text: dict[int, str] = {}
    for k in acc:
        if k[0] not in text:
            text[k[0]] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(k[0]))
    return [{"ts": text[k[0]], "user_id": k[1], "order_id": k[2], "protocol": k[3],
             "ip_out": f"198.51.100.{1 + (k[1] * 2) % 64}", "worker": f"worker-0{(k[1] * 2) % 64 % 4}", "error": k[4], "count": a[0], "bytes_sent": a[1],
             "bytes_received": a[2], "error_count": a[3], "duration_ms": a[4], "conn_ms": a[4],
             "duration_max_ms": a[5], "max_concurrency": 1} for k, a in acc.items()]


def bodies(n: int, start_us: int, end_us: int, per_body: int, seed: int,
           with_rows: bool) -> Iterator[tuple[bytes, int]]:
    """(msgpack body, records in it), generated lazily, oldest first."""
    gen = Generator(seed)
    step = (end_us - start_us) / n
    for i in range(0, n, per_body):
        k = min(per_body, n - i)
        recs = gen.records(k, int(start_us + i * step), step)
        obj = {"logs": minute_rows(recs) if with_rows else [], "activity": recs}
        yield msgpack.packb(obj, use_bin_type=True), k


async def send_all(url: str, token: str, payloads: Iterator[tuple[bytes, int]]) -> tuple[float, int]:
    """Post every body from SENDERS concurrent senders; (seconds, records acknowledged)."""
    run = uuid.uuid4().hex[:8]
    counter = itertools.count()
    done = 0

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal done
        for body, n in payloads:  # one shared iterator: each body is taken once
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/msgpack",
                       "Idempotency-Key": f"bench-activity-{run}:{next(counter)}"}
            async with session.post(url + "/analytics/ingest", data=body, headers=headers) as resp:
                if resp.status != 204:
                    raise RuntimeError(f"ingest answered {resp.status}: {(await resp.text())[:300]}")
            done += n

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(sender(session) for _ in range(SENDERS)))
        return time.perf_counter() - start, done


# ---- the collector, with a user token besides the admin and agent ones ------------------


@dataclass
class Tokens:
    user_token: str
    user_id: int


def start(wd: Path, db: Path, user_id: int) -> tuple[Collector, Tokens]:
    """bench.services.start_collector plus a `user` token (that config has none) and a
    generous retention, so a cached store is never swept while benchmarked."""
    port = free_port()
    agent_token, admin_token, user_token = (secrets.token_hex(16) for _ in range(3))
    text = collector_config(db, port, agent_token, admin_token).replace(
        'retention_days = 3650', 'retention_days = 3650\nactivity_retention_days = 3650')
    text += (f'\n[[auth.tokens]]\nname = "bench-user"\nrole = "user"\nuser_id = {user_id}\n'
             f'sha256 = "{hashlib.sha256(user_token.encode()).hexdigest()}"\n')
    cfg = wd / f"collector-{port}.toml"
    cfg.write_text(text)
    log = open(wd / "collector.log", "ab")
    proc = subprocess.Popen(_script("proxymeter-collector", "collector") + ["serve", "--config", str(cfg)],
                            cwd=REPO, stdout=log, stderr=log)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc)
    except BaseException:
        stop(proc)
        raise
    return Collector(proc, url, agent_token, admin_token, db), Tokens(user_token, user_id)


def _unlink(db: Path) -> None:
    for p in db_files(db):
        p.unlink(missing_ok=True)


# ---- part 1: ingest rate ----------------------------------------------------------------


def bench_ingest(report: Report, sizes: Sizes, wd: Path) -> None:
    n = sizes.ingest_records
    end_us = int(time.time()) * 1_000_000
    cases = (10_000, 1_000)
    payloads = {c: list(bodies(n, end_us - DAY_US, end_us, c, seed=7, with_rows=False)) for c in cases}
    rates: dict[int, list[float]] = {c: [] for c in cases}
    per_million: list[float] = []
    for rnd in range(3):
        for per_body in cases:  # interleaved: A B A B A B
            db = wd / f"ingest-{per_body}-{rnd}.db"
            _unlink(db)
            coll, _ = start(wd, db, 1000)
            try:
                secs, acked = asyncio.run(send_all(coll.url, coll.agent_token, iter(payloads[per_body])))
            finally:
                coll.stop()
            if acked != n:
                raise RuntimeError(f"{acked:,} of {n:,} records acknowledged")
            rates[per_body].append(n / secs)
            if per_body == cases[0]:
                per_million.append(dir_size(db_files(db)) / n * 1e6 / MIB)
            _unlink(db)
    for per_body in cases:
        body = payloads[per_body][0][0]
        report.add(Result(BENCH, f"ingest, activity only, {per_body:,} records/body, {SENDERS} senders",
                          f"{median(rates[per_body]):,.0f} records/s",
                          note=f"msgpack, {n:,} records per run, median of 3 runs interleaved; "
                               f"body {len(body) / 1024:,.0f} KiB ({len(body) / per_body:.0f} B/record)"))
    report.add(Result(BENCH, "SQLite store size per million activity records", f"{median(per_million):,.0f} MiB",
                      note="file after the collector stopped; table and its 3 indexes"))


# ---- part 2: the query store -------------------------------------------------------------


def store_path(n: int, wd: Path) -> tuple[Path, Path, str]:
    """Named after the record count and a digest of the schema and of the generator's
    code, so a change to either is never benchmarked against a stale file, while a
    change elsewhere in this module (reporting, cases) keeps the store."""
    from collector.storage.sqlite import MIGRATIONS

    digest = hashlib.sha256("\n--\n".join(MIGRATIONS).encode())
    for fn in (_zipf, Generator, minute_rows, bodies):
        digest.update(inspect.getsource(fn).encode())
    digest.update(repr((USERS, HOSTS, SPAN_DAYS, TLDS, SUBS, ERROR_WEIGHTS, ERROR_RATE)).encode())
    code = digest.hexdigest()[:10]
    return wd / f"store-{n}-{code}.db", wd / f"store-{n}-{code}.json", code


def ensure_store(n: int, wd: Path) -> tuple[Path, dict[str, Any]]:
    db, note, _ = store_path(n, wd)
    if db.exists() and note.exists():
        info = json.loads(note.read_text())
        if time.time() - info["built_at"] < MAX_STORE_AGE_S:
            return db, info
    for stale in wd.glob(f"store-{n}-*"):  # same size, older generator or schema, or too old
        stale.unlink()
    end_us = int(time.time()) * 1_000_000
    start_us = end_us - SPAN_DAYS * DAY_US
    print(f"  building the activity store ({n:,} records over {SPAN_DAYS} days) in {db} ...", flush=True)
    gen = Generator(STORE_SEED)  # the same tables as the records': the busiest user's id
    busiest = gen.users[max(range(USERS), key=gen.user_table.count)][0]
    coll, _ = start(wd, db, busiest)
    try:
        secs, acked = asyncio.run(send_all(coll.url, coll.agent_token,
                                           bodies(n, start_us, end_us, 10_000, STORE_SEED, with_rows=True)))
    finally:
        coll.stop()
    if acked != n:
        raise RuntimeError(f"{acked:,} of {n:,} records acknowledged")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT count(*) FROM m").fetchone()[0]
        user_records = con.execute("SELECT count(*) FROM activity WHERE user_id = ?", (busiest,)).fetchone()[0]
    finally:
        con.close()
    info = {"records": n, "rows": rows, "seconds": secs, "start_us": start_us, "end_us": end_us,
            "built_at": time.time(), "size_bytes": dir_size(db_files(db)), "user_id": busiest,
            "user_records": user_records}
    note.write_text(json.dumps(info))
    return db, info


# ---- part 3: latency through HTTP ---------------------------------------------------------


def iso_us(ts_us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_us // 1_000_000)) + f".{ts_us % 1_000_000:06d}Z"


def get(url: str, token: str) -> tuple[int, float, bytes]:
    # Webshare's own scheme, as its clients send it
    req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=QUERY_TIMEOUT_S) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except TimeoutError:
        return 0, time.perf_counter() - t0, f"no answer within {QUERY_TIMEOUT_S:.0f} s".encode()
    return status, time.perf_counter() - t0, body


def latency_cases(info: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(name, path, query) over the store's whole window."""
    window = {"timestamp__gte": iso_us(info["start_us"]), "timestamp__lte": iso_us(info["end_us"])}
    middle = iso_us((info["start_us"] + info["end_us"]) // 2)
    act = "/api/v2/proxy/activity/"
    return [
        ("activity first page", act, window),
        # what a Webshare client asks by default; the store's data ends at its build, so
        # this window holds less of it the older the store is
        ("activity first page, default window (6 days up to now)", act, {}),
        ("activity deep page (starting_after = middle)", act, {**window, "starting_after": middle}),
        # a hostname fragment that matches one popular registrable domain's three hosts
        ("activity search=site7.", act, {**window, "search": "site7."}),
        ("activity error_reason=*", act, {**window, "error_reason": "*"}),
        ("activity bytes__gte=10000000", act, {**window, "bytes__gte": "10000000"}),
        ("stats hourly", "/api/v2/stats/", window),
        ("stats aggregate", "/api/v2/stats/aggregate/", window),
    ]


def bench_latency(report: Report, sizes: Sizes, coll: Collector, tokens: Tokens, info: dict[str, Any]) -> None:
    who = (("admin", coll.admin_token), (f"user {tokens.user_id}", tokens.user_token))
    for name, path, query in latency_cases(info):
        for label, token in who:
            url = f"{coll.url}{path}?{urllib.parse.urlencode(query)}"
            times: list[float] = []
            error = ""
            count = None
            t_end = time.monotonic() + sizes.budget_s
            while len(times) < sizes.reps and (len(times) < 3 or time.monotonic() < t_end):
                status, secs, body = get(url, token)
                if status != 200:
                    error = f"HTTP {status}: {body[:160].decode(errors='replace')}" if status else "timeout"
                    break
                times.append(secs * 1000)
                if count is None and path.endswith("activity/"):
                    count = json.loads(body)["count"]
            case = f"{name}, {label}"
            if error:
                report.add(Result(BENCH, case, "error", note=error))
                continue
            what = f"count {count:,}; " if count is not None else ""
            report.add(Result(BENCH, case, f"p50 {percentile(times, 50):,.1f} ms, p99 {percentile(times, 99):,.1f} ms",
                              note=f"{what}{len(times)} requests"))


# ---- part 4: the CSV download and the collector's memory -----------------------------------


def _status_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith((b"VmRSS:", b"RssAnon:", b"VmHWM:")):
                key, value = line.split()[:2]
                out[key[:-1].decode()] = int(value)
    return out


class RssWatch:
    """VmRSS and RssAnon of a process every SAMPLE_S in a thread (not on the event loop
    reading the download, whose pauses would skip samples); the max of each."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = _status_kib(pid)
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            for k, v in _status_kib(self.pid).items():
                self.peak[k] = max(self.peak[k], v)

    def __enter__(self) -> "RssWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def growth_mib(self, key: str) -> float:
        return (self.peak[key] - self.base[key]) / 1024


@dataclass
class Download:
    seconds: float
    records: int  # CSV lines without the header
    size: int  # bytes
    complete: bool  # False: stopped at the time limit
    step: int  # records per stretch of `stretches`
    stretches: list[float]  # records/s within each of the first 10 stretches received
    rss_mib: float = 0.0
    anon_mib: float = 0.0


async def _download(url: str, expected: int, limit_s: float) -> Download:
    """Read the CSV as it streams, at most limit_s: a download whose chunks get slower
    the deeper it goes would otherwise hold the whole run."""
    lines = size = 0
    marks: list[float] = []
    # stretches of a tenth of the window, or of 100,000 records where a tenth is more
    # than a stopped download may reach: the rate per stretch shows whether it falls
    step = max(1, min(expected // 10, 100_000))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit_s + 600)) as session:
        t0 = time.perf_counter()
        async with session.get(url) as resp:
            if resp.status != 200:
                raise RuntimeError(f"download answered {resp.status}: {(await resp.text())[:300]}")
            async for chunk in resp.content.iter_chunked(1 << 16):
                lines += chunk.count(b"\n")
                size += len(chunk)
                now = time.perf_counter() - t0
                while len(marks) < 10 and lines - 1 >= step * (len(marks) + 1):
                    marks.append(now)
                if now > limit_s:
                    break  # leaving the block closes the connection: the collector stops streaming
        secs = time.perf_counter() - t0
    records = lines - 1
    edges = [0.0, *marks]
    stretches = [step / (b - a) if b > a else float("inf") for a, b in zip(edges, edges[1:])]
    return Download(secs, records, size, records == expected, step, stretches)


def bench_download(report: Report, quick: bool, coll: Collector, info: dict[str, Any]) -> None:
    req = urllib.request.Request(coll.url + "/api/v2/download_token/activity/", method="POST",
                                 headers={"Authorization": f"Token {coll.admin_token}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        key = json.loads(resp.read())["key"]
    end = info["end_us"]
    limit_s = 60.0 if quick else DOWNLOAD_LIMIT_S
    windows = (("last hour", end - HOUR_US), ("last day", end - DAY_US), (f"all {SPAN_DAYS} days", info["start_us"]))
    results: dict[str, list[Download]] = {w[0]: [] for w in windows}
    expected: dict[str, int] = {}
    for _ in range(3):
        for name, gte in windows:  # interleaved: small, medium, big, small, ...
            if results[name] and not results[name][-1].complete:
                continue  # a repeat of a download stopped at the limit adds only time
            window = {"timestamp__gte": iso_us(gte), "timestamp__lte": iso_us(end)}
            if name not in expected:
                query = urllib.parse.urlencode({**window, "page_size": 1})
                _, _, body = get(f"{coll.url}/api/v2/proxy/activity/?{query}", coll.admin_token)
                expected[name] = json.loads(body)["count"]
            query = urllib.parse.urlencode({**window, "download_token": key})
            url = f"{coll.url}/api/v2/proxy/activity/download/?{query}"
            with RssWatch(coll.proc.pid) as watch:
                d = asyncio.run(_download(url, expected[name], limit_s))
            if d.complete is False and d.seconds <= limit_s:
                raise RuntimeError(f"download of the {name} has {d.records:,} records, "
                                   f"the list counts {expected[name]:,}")
            d.rss_mib, d.anon_mib = watch.growth_mib("VmRSS"), watch.growth_mib("RssAnon")
            results[name].append(d)
            time.sleep(2)  # a stopped download's last chunk read finishes in the collector
    for name, _ in windows:
        runs = results[name]
        secs = median([r.seconds for r in runs])
        d = runs[0]
        rate = median([r.records / r.seconds for r in runs])
        stretches = ", ".join(f"{t / 1000:,.0f}k" for t in d.stretches)
        if d.complete:
            value = f"{rate:,.0f} records/s, {secs:,.2f} s"
            note = f"{d.records:,} records, {d.size / MIB:,.1f} MiB CSV; median of {len(runs)}"
        else:
            value = f"INCOMPLETE: {d.records:,} of {expected[name]:,} records in {d.seconds:,.0f} s"
            note = f"stopped at the {limit_s:.0f} s limit; {rate:,.0f} records/s on average"
        if d.step >= 10_000:  # shorter stretches measure the client's read chunks, not the stream
            note += f"; records/s per {d.step:,} records received (newest first, first run): {stretches}"
        report.add(Result(BENCH, f"CSV download, {name}, admin download token", value, note=note))
        report.add(Result(BENCH, f"collector memory growth during the {name} download",
                          f"RssAnon +{max(r.anon_mib for r in runs):,.1f} MiB, "
                          f"VmRSS +{max(r.rss_mib for r in runs):,.1f} MiB",
                          note=f"max over {len(runs)} run(s), sampled every {SAMPLE_S * 1000:.0f} ms; VmRSS includes "
                               "the database pages the readers' mmap touched"))


def run(report: Report, quick: bool) -> None:
    sizes = QUICK if quick else FULL
    wd = workdir("activity")
    bench_ingest(report, sizes, wd)
    db, info = ensure_store(sizes.store_records, wd)
    report.add(Result(BENCH, "query store",
                      f"{info['records']:,} activity records, {info['size_bytes'] / 2**30:,.2f} GiB",
                      note=f"{SPAN_DAYS} days, {USERS} users, {HOSTS:,} hostnames, plus {info['rows']:,} minute rows "
                           f"for the stats; the user token's user {info['user_id']} has {info['user_records']:,} "
                           f"records; built in {info['seconds']:,.0f} s "
                           f"({info['records'] / info['seconds']:,.0f} records/s) through the ingest endpoint, "
                           "generator included"))
    coll, tokens = start(wd, db, info["user_id"])
    try:
        bench_latency(report, sizes, coll, tokens, info)
        bench_download(report, quick, coll, info)
        hwm = _status_kib(coll.proc.pid)["VmHWM"] / 1024
        report.add(Result(BENCH, "collector peak RSS (VmHWM) after the queries and downloads", f"{hwm:,.0f} MiB",
                          note="since its start on the store, so including the latency queries"))
    finally:
        coll.stop()
