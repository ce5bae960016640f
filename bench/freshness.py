"""Benchmark 5: from a line written to the log to the line visible in the API.

A real collector and a real agent (flush interval 10 s, set explicitly: the agent's
default of 60 s makes data about a minute old by design) run as processes; a
writer appends background squid traffic (500 lines/s over 1,000 keys: few enough rows
that the agent's "flush sooner when max_batch_rows are pending" never fires, so the
interval is what is measured). Every ~1.07 s (so probes fall
at every phase of the flush cycle) the bench appends one probe line for its own order
and domain; a poller asks /analytics/websites?orderId=<probe order> every 50 ms and
records, per probe domain, when it first appears. Freshness = appearance - write time
(wall clock, the moment the response arrived: a slight overestimate).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse

from bench.corpus import user_name
from bench.measure import median, percentile, stop, workdir
from bench.queries import get, iso
from bench.report import Report, Result
from bench.services import agent_config, start_agent, start_collector

PROBE_ORDER = 999_999
FLUSH_S = 10.0


def probe_line(i: int, end_ms: int) -> str:
    return (f"{end_ms // 1000}.{end_ms % 1000:03d}      5 10.9.9.9 TCP_MISS/200 512 GET "
            f"http://www.probe{i}-fresh.com/ {user_name(4242, PROBE_ORDER)} HIER_DIRECT/93.184.216.34 text/html")


def run(report: Report, quick: bool) -> None:
    probes = 12 if quick else 30
    wd = workdir("freshness")
    for old in wd.glob("*"):
        if old.is_file():
            old.unlink()
    log = wd / "access.log"
    log.touch()
    db = wd / "fresh.db"
    coll = start_collector(wd, db)
    agent = writer = None
    written: dict[str, float] = {}
    seen: dict[str, float] = {}
    try:
        agent = start_agent(wd, agent_config(wd, log, "squid", coll.url, coll.agent_token, flush_s=FLUSH_S))
        time.sleep(2.0)
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited {agent.returncode}; see {wd / 'agent.log'}")
        span = probes * 1.07 + FLUSH_S + 8
        writer = subprocess.Popen([sys.executable, "-m", "bench.writer", "--path", str(log), "--rate", "500",
                                   "--keys", "1000", "--seconds", str(span)], stdout=subprocess.DEVNULL)
        now = int(time.time())
        q = urllib.parse.urlencode({"from": iso(now - 3600), "to": iso(now + 3600), "orderId": str(PROBE_ORDER),
                                    "limit": "100"})
        url = f"{coll.url}/analytics/websites?{q}"
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        next_probe = time.time()
        deadline = next_probe + span
        try:
            while time.time() < deadline and (len(seen) < probes or len(written) < probes):
                t = time.time()
                if len(written) < probes and t >= next_probe:
                    i = len(written)
                    os.write(fd, (probe_line(i, int(t * 1000)) + "\n").encode())
                    written[f"probe{i}-fresh.com"] = time.time()
                    next_probe += 1.07
                status, _, body = get(url, coll.admin_token)
                arrived = time.time()
                if status == 200:
                    for item in json.loads(body).get("data", []):
                        d = item.get("domain")
                        if d in written and d not in seen:
                            seen[d] = arrived
                time.sleep(0.05)
        finally:
            os.close(fd)
    finally:
        if writer is not None:
            stop(writer)
        if agent is not None:
            stop(agent)
        coll.stop()
    lags = [seen[d] - written[d] for d in seen]
    missing = len(written) - len(seen)
    target = FLUSH_S + 1
    if not lags:
        report.add(Result("5 freshness", "line written -> visible in the API", "no probe became visible",
                          f"p99 <= {target:.0f} s", False, note=f"see {wd}"))
        return
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    report.add(Result("5 freshness", f"line written -> visible in the API ({len(lags)} probes)",
                      f"p50 {p50:.2f} s, p99 {p99:.2f} s", f"p99 <= {target:.0f} s", p99 <= target and not missing,
                      note=f"flush interval {FLUSH_S:.0f} s; min {min(lags):.2f} s, "
                           f"median {median(lags):.2f} s; {missing} probes never seen"))
