"""A proxy stand-in: append squid lines to a file at a fixed rate (`python -m bench.writer`).

Lines are stamped with the wall clock when written (squid stamps the end of a request)
and their aggregation keys cycle over exactly --keys combinations. Every 10 ms it writes
the lines that are due, in one write() on an O_APPEND file; it prints one JSON object
with the lines written and the achieved rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench.corpus import KeyedLines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.writer")
    ap.add_argument("--path", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    args = ap.parse_args(argv)

    gen = KeyedLines(args.keys)
    fd = os.open(args.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    written = 0
    start = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            elapsed = now - start
            if elapsed >= args.seconds:
                break
            due = int(args.rate * elapsed) - written
            if due > 0:
                end_ms = int(time.time() * 1000)
                os.write(fd, "".join([gen.line(end_ms) + "\n" for _ in range(due)]).encode())
                written += due
            time.sleep(max(0.0, 0.01 - (time.monotonic() - now)))
    finally:
        os.close(fd)
    json.dump({"lines": written, "seconds": time.monotonic() - start}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
