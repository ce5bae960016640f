"""Seeded-random model test: a writer doing what proxies and logrotate do, against a plain list.

The model is the list of complete lines written (in order, each tagged with the file
"generation" it went to). The real Tailer follows real files in tmp_path through random
appends (with partial lines finished later), rename rotations (logrotate `create`; the
writer keeps writing to the old file until it reopens), copytruncate, deletion while
open, polls with small and large budgets, checkpoints, and kill -9 (a new Tailer from
the last checkpoint; lines delivered after that checkpoint were never acknowledged and
are forgotten). At the end every line must have been delivered exactly once, and the
lines of each generation in the order written.

Rules the writer follows (what the Tailer documents it needs):
- it reopens the log before the Tailer could have polled a rotated file `rotated_idle_polls`
  times (a real writer reopens within seconds; the Tailer waits that long);
- it finishes a partial line before copytruncate (a copy cannot split a line well), and
  when the Tailer last saw the file shorter than `fingerprint_bytes` it polls first: the
  Tailer recovers lines written since its last poll from the copy only when it can tell
  the new content from the old by fingerprint (the copytruncate race it narrows);
- it deletes only a file the Tailer has looked at (a file created and deleted between
  two polls is invisible to any reader);
- no kill while lines of a deleted file are not covered by the last checkpoint, or while
  the writer still writes to a deleted file (nothing could ever find them again).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from agent.tailer import Tailer

MAX_LINE = 64
IDLE_POLLS = 3


class World:
    def __init__(self, rng: random.Random, root: Path, read_from: str, fp_bytes: int) -> None:
        self.rng = rng
        self.root = root
        self.log = root / "access.log"
        self.read_from = read_from
        self.fp_bytes = fp_bytes
        self.seq = 0
        self.gen = 0
        self.expected: list[tuple[bytes, int]] = []  # (line, generation), complete lines only
        self.too_long_written = 0
        self.too_long_seen = 0  # summed over every Tailer (a restart may skip a line again)
        self.fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.fd_gen = self.gen
        self.fd_deleted = False
        self.partial: bytes | None = None  # rest of a line started but not finished
        self.partial_line: bytes = b""
        self.partial_expect = True
        self.reopen_pending = False
        self.polls_since_rotation = 0
        self.deleted_gens: set[int] = set()
        self.seen_size = 0  # size of the live file when the Tailer last looked at it
        self.path_file = 0  # which file is at the path (a new number each time one is created)
        self.looked_at: set[int] = set()  # path_file values the Tailer has seen
        self.rotations = 0
        # Lines present before the Tailer starts: expected only when reading from the beginning.
        for _ in range(rng.randrange(0, 5)):
            self.write_line(expect=read_from == "beginning")
        self.tailer = self.new_tailer(None)
        self.look()
        self.partial_expect = True  # "end" starts after the last COMPLETE line
        self.delivered: list[bytes] = []
        self.committed: list[bytes] = []
        self.saved: list[dict] = self.tailer.checkpoint()

    def new_tailer(self, saved: list[dict] | None) -> Tailer:
        return Tailer(
            str(self.root / "access.log"),
            read_from=self.read_from,  # type: ignore[arg-type]
            max_line_bytes=MAX_LINE,
            saved=saved,
            fingerprint_bytes=self.fp_bytes,
            rotated_idle_polls=IDLE_POLLS,
        )

    # ---- writer ----------------------------------------------------------------------

    def make_line(self) -> bytes:
        self.seq += 1
        r = self.rng.random()
        if r < 0.04:
            body = b"LONG%07d-" % self.seq + b"y" * self.rng.randrange(MAX_LINE, 4 * MAX_LINE)
        elif r < 0.08:
            body = b"B%07d-\xff\xfe\xc3(" % self.seq  # not UTF-8
        else:
            body = b"L%07d-" % self.seq + b"x" * self.rng.randrange(0, MAX_LINE - 9)
        if self.rng.random() < 0.1:
            body += b"\r"
        return body

    def account(self, line: bytes, expect: bool) -> None:
        if len(line) > MAX_LINE:
            self.too_long_written += expect
        elif expect:
            self.expected.append((line, self.fd_gen))

    def write_line(self, expect: bool = True) -> None:
        self.finish_partial()
        line = self.make_line()
        if self.rng.random() < 0.25:
            cut = self.rng.randrange(0, len(line) + 1)
            os.write(self.fd, line[:cut])
            self.partial, self.partial_line, self.partial_expect = line[cut:], line, expect
        else:
            os.write(self.fd, line + b"\n")
            self.account(line, expect)

    def finish_partial(self) -> None:
        if self.partial is not None:
            os.write(self.fd, self.partial + b"\n")
            self.account(self.partial_line, self.partial_expect)
            self.partial = None

    def reopen(self) -> None:
        self.finish_partial()
        os.close(self.fd)
        if not self.log.exists():
            self.path_file += 1
        self.fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self.fd_deleted or os.fstat(self.fd).st_size == 0:
            self.gen += 1
            self.seen_size = 0
        self.fd_gen = self.gen
        self.fd_deleted = False
        self.reopen_pending = False

    def shift_rotated(self) -> Path:
        """logrotate numbering: access.log.N -> .N+1 ... -> .1 is free."""
        n = 1
        while (self.root / f"access.log.{n}").exists():
            n += 1
        for i in range(n - 1, 0, -1):
            os.rename(self.root / f"access.log.{i}", self.root / f"access.log.{i + 1}")
        return self.root / "access.log.1"

    def rotate_rename(self) -> None:
        if self.reopen_pending:
            self.reopen()
        if not self.log.exists():
            return
        os.rename(self.log, self.shift_rotated())
        self.log.touch()  # logrotate `create`
        self.path_file += 1
        self.gen += 1
        self.seen_size = 0
        self.reopen_pending = True
        self.polls_since_rotation = 0
        self.rotations += 1

    def copytruncate(self) -> None:
        if self.reopen_pending:
            self.reopen()
        self.finish_partial()
        if not self.log.exists():
            return
        if self.seen_size < self.fp_bytes or self.rng.random() < 0.3:
            self.poll(1 << 30)
        shutil.copyfile(self.log, self.shift_rotated())
        os.truncate(self.log, 0)
        self.seen_size = 0
        self.gen += 1
        self.fd_gen = self.gen

    def delete(self) -> None:
        if self.reopen_pending or not self.log.exists() or self.path_file not in self.looked_at:
            return
        os.unlink(self.log)
        self.fd_deleted = True
        self.deleted_gens.add(self.fd_gen)
        self.reopen_pending = True
        self.polls_since_rotation = 0

    # ---- reader ----------------------------------------------------------------------

    def poll(self, max_bytes: int) -> None:
        if self.reopen_pending and self.polls_since_rotation >= IDLE_POLLS - 1:
            self.reopen()
        self.polls_since_rotation += 1
        self.look()
        for chunk in self.tailer.poll(max_bytes):
            self.delivered.extend(chunk.lines)

    def look(self) -> None:
        self.seen_size = 0
        if self.log.exists():
            self.seen_size = self.log.stat().st_size
            self.looked_at.add(self.path_file)

    def checkpoint(self) -> None:
        self.saved = json.loads(json.dumps(self.tailer.checkpoint()))
        self.committed = list(self.delivered)

    def kill(self) -> bool:
        committed = set(self.committed)
        if self.fd_deleted or any(g in self.deleted_gens and line not in committed for line, g in self.expected):
            return False
        self.look()
        self.too_long_seen += self.tailer.stats.too_long
        self.tailer.close()  # the process is gone: fds released, nothing saved
        self.delivered = list(self.committed)
        self.tailer = self.new_tailer(self.saved)
        return True

    def step(self) -> None:
        r = self.rng.random()
        if r < 0.40:
            for _ in range(self.rng.randrange(1, 6)):
                self.write_line()
        elif r < 0.65:
            self.poll(self.rng.choice([40, 150, 1000, 1 << 20]))
        elif r < 0.72:
            self.checkpoint()
        elif r < 0.78:
            self.rotate_rename()
        elif r < 0.82:
            self.rotate_rename()
            self.kill()  # kill -9 right after a rename
        elif r < 0.86:
            self.copytruncate()
        elif r < 0.89:
            self.delete()
        elif r < 0.95:
            self.kill()
        elif self.reopen_pending:
            self.reopen()

    def finish(self) -> None:
        if self.reopen_pending:
            self.reopen()
        self.finish_partial()
        quiet = 0
        for _ in range(500):
            before = len(self.delivered)
            self.poll(1 << 20)
            quiet = quiet + 1 if len(self.delivered) == before else 0
            if quiet > IDLE_POLLS + 1:
                break
        self.too_long_seen += self.tailer.stats.too_long
        self.tailer.close()
        os.close(self.fd)


def check(world: World) -> None:
    want = [line for line, _ in world.expected]
    got = world.delivered
    dup = [line for line, n in Counter(got).items() if n > 1]
    missing = [line for line in want if line not in set(got)]
    extra = [line for line in got if line not in set(want)]
    assert (dup, missing[:5], extra[:5]) == ([], [], [])
    assert Counter(got) == Counter(want)
    pos = {line: i for i, line in enumerate(got)}
    by_gen: dict[int, list[bytes]] = {}
    for line, gen in world.expected:
        by_gen.setdefault(gen, []).append(line)
    for gen, lines in by_gen.items():
        assert [pos[line] for line in lines] == sorted(pos[line] for line in lines), gen


@pytest.mark.parametrize("seed", range(40))
def test_random_model(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    world = World(rng, tmp_path, "beginning" if seed % 3 else "end", fp_bytes=[1024, 24][seed % 2])
    for _ in range(300):
        world.step()
    world.finish()
    check(world)
    assert world.rotations > 0
    assert world.too_long_seen >= world.too_long_written > 0
