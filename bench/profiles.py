"""cProfile helpers for missed targets: top functions by own time, with percentages.

`profile_agent` runs `agent.cli.main` (argv after the known options) under cProfile with
a CPU clock. `profile_ingest` runs in a child (`python -m bench.profiles ingest ...`): it decodes
msgpack bodies with the collector's decoder and applies them with the SQLite store's writer *synchronously on the
main thread*, because cProfile sees only the thread it runs in and the collector does
its writes on a worker thread. Its bodies are generated rows (bench.ingest), or with
`--spool DIR` the bodies an agent left in its spool (`DIR` = the agent's state_dir, e.g.
after `run --once` against a closed port): rows, profiles and activity records exactly
as the agent ships them.
"""

from __future__ import annotations

import argparse
import io
import pstats
import sys
from pathlib import Path


def top_functions(dump: Path, limit: int = 18) -> str:
    st = pstats.Stats(str(dump))
    total = st.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{_short(file)}:{line}({func})"))
    rows.sort(reverse=True)
    out = io.StringIO()
    out.write(f"total {total:.2f} s of own time (cProfile slows Python code down, roughly 1.5-2x)\n")
    out.write(f"{'self %':>7} {'self s':>7} {'cum s':>7} {'calls':>10}  function\n")
    for tt, ct, nc, name in rows[:limit]:
        out.write(f"{100 * tt / total:6.1f}% {tt:7.2f} {ct:7.2f} {nc:10d}  {name}\n")
    return out.getvalue()


def _short(file: str) -> str:
    for marker in ("/agent/", "/collector/", "/bench/", "/aiohttp/", "/asyncio/"):
        if marker in file:
            return file[file.index(marker) + 1:]
    return file.rsplit("/", 2)[-1] if "/" in file else file


def profile_ingest(db: str, bodies: list[bytes], dump: str, enabled: bool = True) -> None:
    import asyncio
    import cProfile
    import time

    from collector.fastdecode import decode
    from collector.storage.sqlite import SQLiteStore

    store = SQLiteStore(db, fold_interval=0)  # no fold timer: open and close run in separate loops
    asyncio.run(store.open())
    prof = cProfile.Profile()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if enabled:
        prof.enable()
    rows = records = 0
    for i, body in enumerate(bodies):
        batch = decode(body, "application/msgpack")  # the collector's own decoder
        rows += len(batch.rows)
        records += len(batch.activity)
        store._ingest(batch, f"profile:{i}", 0)  # noqa: SLF001 - see the module docstring
        if store._staged >= store.fold_rows:  # noqa: SLF001
            store._fold()  # noqa: SLF001 - in line here: the profile sees one thread
    store._fold()  # noqa: SLF001 - what the first query would fold
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if enabled:
        prof.disable()
        prof.dump_stats(dump)
    else:
        print(f"ingest+fold of {len(bodies):,} bodies, {rows:,} rows, {records:,} activity records: "
              f"{cpu:.3f} s CPU ({cpu / max(1, rows) * 1e6:.2f} us/row), {wall:.3f} s wall, "
              f"{rows / cpu:,.0f} rows/CPU-s, {records / cpu:,.0f} records/CPU-s")
    asyncio.run(store.close())


def spooled_bodies(state_dir: str) -> list[bytes]:
    """The bodies pending in an agent's spool, oldest first (read-only: the spool is left as it is)."""
    from agent.spool import SUFFIX, Entry

    files = sorted(Path(state_dir, "spool").glob(f"*{SUFFIX}"), key=lambda p: int(p.name[: -len(SUFFIX)]))
    bodies = [Entry(0, "", f, 0, 0, 0).read()[0] for f in files]
    if not bodies:
        raise SystemExit(f"no spooled batch in {state_dir}/spool")
    return bodies


def fold_costs(db: str, bodies: list[bytes], rounds: int) -> str:
    """CPU per staged row of each statement of the fold (deltas, then apply), by target
    table, summed over `rounds` folds of the given bodies: what each rollup costs."""
    import asyncio
    import re
    import time
    from collections import defaultdict

    from collector.fastdecode import decode
    from collector.storage import sqlite as s

    store = s.SQLiteStore(db, fold_interval=0, fold_rows=10**12)
    asyncio.run(store.open())
    cost: dict[str, float] = defaultdict(float)
    rows = 0
    clock = time.process_time
    try:
        for rnd in range(rounds):
            for i, body in enumerate(bodies):
                batch = decode(body, "application/msgpack")
                rows += len(batch.rows)
                store._ingest(batch, f"fold:{rnd}:{i}", 0)  # noqa: SLF001
            con = store._f  # noqa: SLF001 - the fold of SQLiteStore._fold, statement by statement
            assert con is not None
            con.execute("BEGIN")
            bound = {"top": con.execute("SELECT max(rowid) FROM stage").fetchone()[0]}
            for t in s._TEMPS:  # noqa: SLF001
                con.execute(f"DELETE FROM temp.{t.name}")
            for phase, stmts in (("delta", s.FOLD_DELTAS), ("apply", s.FOLD_APPLY)):
                if phase == "apply":
                    con.execute("COMMIT")
                    store._write_lock.acquire()  # noqa: SLF001
                    con.execute("BEGIN IMMEDIATE")
                for sql in stmts:
                    target = re.match(r"(?:INSERT INTO|UPDATE) (\w+)", sql)
                    t0 = clock()
                    con.execute(sql, bound)
                    cost[f"{phase} {target.group(1) if target else sql[:20]}"] += clock() - t0
            t0 = clock()
            con.execute(f"DELETE FROM stage WHERE {s._STAGED}", bound)  # noqa: SLF001
            con.execute("COMMIT")
            cost["apply delete stage + commit"] += clock() - t0
            store._write_lock.release()  # noqa: SLF001
            store._staged = 0  # noqa: SLF001
    finally:
        asyncio.run(store.close())
    total = sum(cost.values())
    out = [f"fold of {rows:,} staged rows: {total:.2f} s CPU, {total / rows * 1e6:.2f} us/row", f"{'us/row':>7}  statement"]
    for name, secs in sorted(cost.items(), key=lambda kv: -kv[1]):
        out.append(f"{secs / rows * 1e6:7.2f}  {name}")
    return "\n".join(out)


def profile_agent(dump: str, agent_argv: list[str]) -> int:
    """The agent's main() under cProfile with a CPU clock, so idle waits cost nothing."""
    import cProfile
    import time

    from agent.cli import main as agent_main

    prof = cProfile.Profile(time.process_time)
    prof.enable()
    try:
        return agent_main(agent_argv)
    finally:
        prof.disable()
        prof.dump_stats(dump)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profiles")
    ap.add_argument("what", choices=("ingest", "agent", "fold"))
    ap.add_argument("--db", default="")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--body", choices=("v1", "v2"), default="v2",
                    help="ingest: version 1 msgpack row maps, or version 2 columns (what agents send)")
    ap.add_argument("--spool", default="", metavar="STATE_DIR",
                    help="ingest: the bodies pending in this agent state_dir's spool instead of generated rows")
    ap.add_argument("--no-profile", action="store_true",
                    help="ingest: run without cProfile (for timing the same work from outside)")
    args, rest = ap.parse_known_args(argv)
    if args.what == "agent":
        return profile_agent(args.dump, rest)
    from bench.ingest import bodies, make_rows

    encoding = "v2" if args.body == "v2" else "msgpack"
    if args.what == "fold":  # 100,000 rows per fold (storage.fold_rows' default), --rows in all
        print(fold_costs(args.db, bodies(make_rows(min(args.rows, 100_000), seed=3), 10_000, encoding),
                         max(1, args.rows // 100_000)))
        return 0
    sent = spooled_bodies(args.spool) if args.spool else bodies(make_rows(args.rows, seed=3), 10_000, encoding)
    profile_ingest(args.db, sent, args.dump, enabled=not args.no_profile)
    if not args.no_profile:
        print(top_functions(Path(args.dump)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
