"""The agent's whole pipeline over one file, no network: `python -m bench.replay`.

Read with the real Tailer, parse, enrich, aggregate (rows, concurrency profiles,
latency histograms), drain as the agent's service does, in *log* time: at the aligned
instants of `--flush-s` (k * flush-s + grace, agent.flushclock) and whenever
`--max-batch-rows` rows and profiles are pending after a poll of 512 KiB (what a live
agent with those settings would see); encode each batch with encode_compact (body
version 2). Prints one JSON
object: lines, bytes, seconds of the pipeline (imports and the Public Suffix List load
are excluded and reported apart), rows, profiles, wire bytes. `--profile FILE` writes a
cProfile dump of the same run instead of timing it honestly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from datetime import timezone
from typing import Any


STAGES = ("read", "parse", "enrich", "aggregate", "encode")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replay")
    ap.add_argument("--format", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--flush-s", type=float, default=10.0)
    ap.add_argument("--max-batch-rows", type=int, default=10_000)
    ap.add_argument("--poll-bytes", type=int, default=512 << 10, help="the service's POLL_STEP")
    ap.add_argument("--profile", default="")
    ap.add_argument("--upto", choices=STAGES, default="encode",
                    help="stop the pipeline after this stage (to see what each stage costs)")
    ap.add_argument("--floor", action="store_true",
                    help="instead of the pipeline, the one library call every line of the format "
                         "needs at the least (squid: bytes.split(), jsonl: json.loads()): the "
                         "interpreter's floor for any Python parser of it")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    from agent.aggregate import Aggregator
    from agent.domains import DomainResolver
    from agent.enrich import Enricher
    from agent.parsers import make_parser
    from agent.record import ParseError
    from agent.tailer import Tailer
    from agent.users import UserMapper, UsersConfig
    from agent.wire import gcsettings
    from agent.flushclock import next_flush_at
    from agent.wire.compact import encode_compact

    enricher = Enricher(UserMapper(UsersConfig()), DomainResolver.load())
    parser = make_parser(args.format, timezone.utc)
    agg = Aggregator("bench-worker")
    tailer = Tailer(args.path, read_from="beginning", max_line_bytes=64 * 1024)
    gcsettings.settle()  # as the agent's service does once its start-up is done
    setup_s = time.perf_counter() - t0
    out = {"lines": 0, "bytes": 0, "parse_errors": 0, "records": 0, "rows": 0, "profiles": 0,
           "batches": 0, "wire_bytes": 0, "setup_s": setup_s}
    flush_s = args.flush_s
    max_rows = args.max_batch_rows
    upto = STAGES.index(args.upto)

    def chunks() -> Iterator[Any]:
        while True:
            got = tailer.poll(args.poll_bytes)
            if not got:
                return
            yield from got

    def floor() -> None:
        op = json.loads if args.format == "jsonl" else bytes.split
        lines = nbytes = 0
        for chunk in chunks():
            lines += len(chunk.lines)
            for line in chunk.lines:
                nbytes += len(line) + 1
                op(line)
        out.update(lines=lines, bytes=nbytes)

    def pipeline() -> None:
        parse = parser.parse
        enrich = enricher.enrich
        add = agg.add
        lines = nbytes = errors = records = 0
        next_flush = None
        for chunk in chunks():
            if upto >= 3 and agg.pending_rows + agg.pending_profiles >= max_rows:
                flush(0)  # the service checks after every poll
            lines += len(chunk.lines)
            if upto == 0:
                nbytes += sum(map(len, chunk.lines)) + len(chunk.lines)
                continue
            for line in chunk.lines:
                nbytes += len(line) + 1
                try:
                    rec = parse(line)
                except ParseError:
                    errors += 1
                    continue
                if rec is None:
                    continue
                records += 1
                if upto < 2:
                    continue
                enrich(rec)
                if upto < 3:
                    continue
                add(rec)
                # log time: squid stamps the end, so end_ms is the clock of the file
                now = (rec.start_ms + rec.duration_ms) / 1000
                if next_flush is None:
                    next_flush = next_flush_at(now + flush_s / 2, flush_s)
                elif now >= next_flush:
                    flush(int(now * 1000))
                    next_flush = next_flush_at(now + flush_s / 2, flush_s)
        flush(0)
        out.update(lines=lines, bytes=nbytes, parse_errors=errors, records=records)

    def flush(now_ms: int) -> None:
        if upto < 3:
            return
        batch = agg.drain(now_ms)
        if batch.rows or batch.profiles:
            out["batches"] += 1
            out["rows"] += len(batch.rows)
            out["profiles"] += len(batch.profiles)
            if upto >= 4:
                out["wire_bytes"] += len(encode_compact(batch))

    start = time.perf_counter()
    if args.floor:
        floor()
    elif args.profile:
        import cProfile

        cProfile.runctx("pipeline()", globals(), {"pipeline": pipeline}, args.profile)
    else:
        pipeline()
    out["seconds"] = time.perf_counter() - start
    out["unmatched_users"] = getattr(enricher, "unmatched_users", 0)
    tailer.close()
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
