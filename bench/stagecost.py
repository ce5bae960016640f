"""The agent's per-line path cut after one stage, for instruction counts:
`python -m bench.stagecost FORMAT FILE STAGE` (STAGE 0..5).

Run it under `valgrind --tool=callgrind` once per stage on the same file: a stage's
instructions per line are (count after it - count before it) / lines. Instruction counts
do not depend on how loaded the machine is, where wall-clock timings on a shared machine
do. Stages: 0 set-up only (imports, Public Suffix List, the lines read into memory, and
the memos warmed), 1 parse, 2 enrich, 3 aggregate, 4 activity records, 5 drain and
encode one batch. The parser's and the enricher's memos are warmed first by one pass
over the file (in stage 0's count): a long log runs with them full, so that is the
steady state a benchmark of millions of lines measures. The cyclic GC is paused
around the loop as the service's _consume does.
"""

from __future__ import annotations

import gc
import sys
from datetime import timezone


def main(argv: list[str]) -> int:
    fmt, path, upto = argv[0], argv[1], int(argv[2])
    from agent.activity import ActivityLog
    from agent.aggregate import Aggregator
    from agent.domains import DomainResolver
    from agent.enrich import Enricher
    from agent.parsers import make_parser
    from agent.record import ParseError
    from agent.users import UserMapper, UsersConfig
    from agent.wire import gcsettings
    from agent.wire.compact import encode_compact

    enricher = Enricher(UserMapper(UsersConfig()), DomainResolver.load())
    parser = make_parser(fmt, timezone.utc)
    agg = Aggregator("bench-worker")
    act = ActivityLog("bench-worker")
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    for line in lines:  # warm the memos (see the module docstring)
        try:
            rec = parser.parse(line)
        except ParseError:
            continue
        if rec is not None:
            enricher.enrich(rec)
    gcsettings.settle()
    if upto == 0:
        return 0
    parse, enrich, add, keep = parser.parse, enricher.enrich, agg.add, act.add
    gc.disable()
    for line in lines:
        try:
            rec = parse(line)
        except ParseError:
            continue
        if rec is None or upto < 2:
            continue
        enrich(rec)
        if upto < 3:
            continue
        add(rec)
        if upto < 4:
            continue
        keep(rec)
    gc.enable()
    if upto >= 5:
        batch = agg.drain(0)
        batch.activity = act.drain()
        encode_compact(batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
