"""cProfile helpers for missed targets: top functions by own time, with percentages.

`profile_agent` runs `agent.cli.main` (argv after the known options) under cProfile with
a CPU clock. `profile_ingest` runs in a child (`python -m bench.profiles ingest ...`): it decodes
msgpack bodies with the collector's decoder and applies them with the SQLite store's writer *synchronously on the
main thread*, because cProfile sees only the thread it runs in and the collector does
its writes on a worker thread.
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

    from collector.fastdecode import decode
    from collector.storage.sqlite import SQLiteStore

    store = SQLiteStore(db, fold_interval=0)  # no fold timer: open and close run in separate loops
    asyncio.run(store.open())
    prof = cProfile.Profile()
    if enabled:
        prof.enable()
    for i, body in enumerate(bodies):
        batch = decode(body, "application/msgpack")  # the collector's own decoder
        store._ingest(batch, f"profile:{i}", 0)  # noqa: SLF001 - see the module docstring
        if store._staged >= store.fold_rows:  # noqa: SLF001
            store._fold()  # noqa: SLF001 - in line here: the profile sees one thread
    store._fold()  # noqa: SLF001 - what the first query would fold
    if enabled:
        prof.disable()
        prof.dump_stats(dump)
    asyncio.run(store.close())


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
    ap.add_argument("what", choices=("ingest", "agent"))
    ap.add_argument("--db", default="")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--body", choices=("v1", "v2"), default="v2",
                    help="ingest: version 1 msgpack row maps, or version 2 columns (what agents send)")
    ap.add_argument("--no-profile", action="store_true",
                    help="ingest: run without cProfile (for timing the same work from outside)")
    args, rest = ap.parse_known_args(argv)
    if args.what == "agent":
        return profile_agent(args.dump, rest)
    from bench.ingest import bodies, make_rows

    encoding = "v2" if args.body == "v2" else "msgpack"
    profile_ingest(args.db, bodies(make_rows(args.rows, seed=3), 10_000, encoding), args.dump,
                   enabled=not args.no_profile)
    if not args.no_profile:
        print(top_functions(Path(args.dump)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
