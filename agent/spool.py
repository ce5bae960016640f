"""The on-disk spool: what makes delivery exactly-once.

Strategy
- A batch is never sent from memory. Before the first attempt, one spool file holding
  the msgpack body, its Idempotency-Key `<agent id>:<sequence>` and the tailer read
  positions ("checkpoints") that the batch covers is written in ONE atomic step (temp
  file, fsync, rename, fsync the directory). Either the whole batch with its positions
  exists on disk, or neither does and the lines are simply read again.
- The collector applies each key at most once, so resending a spooled batch after a crash
  or a lost ack never doubles anything; resending it with its ORIGINAL key is the rule.
- Batches are delivered strictly in sequence order, one at a time. On ack: the batch's
  checkpoints are written atomically to `checkpoint.json` (with its sequence), THEN the
  spool file is deleted. A spool file whose sequence is <= the acknowledged one is a
  leftover of a crash between the two steps and is deleted at start.
- On start, reading resumes from the newest spooled batch's checkpoints (those lines are
  already in a batch), or from `checkpoint.json` when the spool is empty.
- A batch the collector rejects for good (4xx other than 408/429) is moved to
  `spool/dead-letter/` with a `.reason` file (never dropped) and its checkpoints still
  become the acknowledged position. A dead-letter file newer than `checkpoint.json`
  (crash between the move and the checkpoint write) completes that step at start.
- Sequences only grow: the next one is 1 + the highest ever seen (acked, pending or
  dead-lettered). The agent id is random, persisted once (atomically) per state dir.
- The spool is capped in bytes (pending files only); `full` tells the service to stop
  reading. It can exceed the cap by at most the batch being written.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from agent.wire.logfmt import kv

log = logging.getLogger(__name__)

Checkpoints = dict[str, list[dict[str, Any]]]  # source path (glob) -> Tailer.checkpoint()

SPOOL_DIR = "spool"
DEAD_LETTER_DIR = "dead-letter"
SUFFIX = ".batch"
CHECKPOINT_FILE = "checkpoint.json"
AGENT_ID_FILE = "agent-id"
FORMAT_VERSION = 1


class SpoolError(RuntimeError):
    """A state directory we cannot use (not writable, corrupt files we refuse to guess about)."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over `path`, fsync the directory."""
    tmp = path.with_name(f".tmp-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def load_agent_id(state_dir: Path) -> str:
    """The agent's random id, created and persisted on first start."""
    path = state_dir / AGENT_ID_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    agent_id = secrets.token_hex(8)
    write_atomic(path, (agent_id + "\n").encode())
    log.info("new agent id", extra=kv(agent_id=agent_id, state_dir=state_dir))
    return agent_id


@dataclass(slots=True)
class Entry:
    """One pending batch on disk."""

    seq: int
    key: str
    path: Path
    size: int
    rows: int
    profiles: int
    activity: int = 0  # activity records in the body (files of earlier versions have none)

    @property
    def empty(self) -> bool:
        """Only read positions: nothing for the collector."""
        return self.rows == 0 and self.profiles == 0 and self.activity == 0

    def read(self) -> tuple[bytes, Checkpoints]:
        obj = msgpack.unpackb(self.path.read_bytes(), raw=False)
        return obj["body"], obj["checkpoints"]


class Spool:
    def __init__(self, state_dir: str | Path, max_bytes: int) -> None:
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / SPOOL_DIR
        self.dead_dir = self.dir / DEAD_LETTER_DIR
        self.max_bytes = max_bytes
        self.dead_dir.mkdir(parents=True, exist_ok=True)
        self.agent_id = load_agent_id(self.state_dir)
        self.pending: list[Entry] = []
        self.bytes = 0
        self.acked_seq = 0
        self.acked_checkpoints: Checkpoints = {}
        self.dead_lettered = 0
        self._open()

    # -- start-up -----------------------------------------------------------------
    def _open(self) -> None:
        for stale in list(self.dir.glob(".tmp-*")) + list(self.dead_dir.glob(".tmp-*")):
            stale.unlink()
        ack = self._read_ack()
        if ack is not None:
            self.acked_seq, self.acked_checkpoints = ack
        top_seq = self.acked_seq
        # Finish a dead-letter move whose checkpoint write was interrupted.
        for path in sorted(self.dead_dir.glob("*" + SUFFIX)):
            seq = _seq_of(path)
            top_seq = max(top_seq, seq)
            if seq > self.acked_seq:
                obj = msgpack.unpackb(path.read_bytes(), raw=False)
                self._write_ack(seq, obj["checkpoints"])
        for path in sorted(self.dir.glob("*" + SUFFIX)):
            seq = _seq_of(path)
            top_seq = max(top_seq, seq)
            if seq <= self.acked_seq:
                path.unlink()  # acked, deletion interrupted
                continue
            try:
                obj = msgpack.unpackb(path.read_bytes(), raw=False)
                entry = Entry(seq, obj["key"], path, path.stat().st_size, obj["rows"], obj["profiles"],
                              obj.get("activity", 0))
            except Exception as exc:  # written atomically, so this is disk damage: keep it aside
                log.error("unreadable spool file moved to dead-letter", extra=kv(path=path, error=exc))
                os.replace(path, self.dead_dir / path.name)
                continue
            self.pending.append(entry)
            self.bytes += entry.size
        fsync_dir(self.dir)
        self.next_seq = top_seq + 1
        if self.pending:
            log.info(
                "unacknowledged batches will be resent",
                extra=kv(batches=len(self.pending), bytes=self.bytes, first_seq=self.pending[0].seq),
            )

    def _read_ack(self) -> tuple[int, Checkpoints] | None:
        path = self.state_dir / CHECKPOINT_FILE
        try:
            obj = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise SpoolError(f"{path}: not valid JSON ({exc}); move it aside to start over") from None
        return int(obj["seq"]), obj["checkpoints"]

    def _write_ack(self, seq: int, checkpoints: Checkpoints) -> None:
        data = json.dumps({"seq": seq, "checkpoints": checkpoints}, separators=(",", ":")).encode()
        write_atomic(self.state_dir / CHECKPOINT_FILE, data)
        self.acked_seq = seq
        self.acked_checkpoints = checkpoints

    # -- queries ------------------------------------------------------------------
    def resume_checkpoints(self) -> Checkpoints:
        """Where reading starts: the newest spooled batch's positions, else the acked ones."""
        if self.pending:
            return self.pending[-1].read()[1]
        return self.acked_checkpoints

    @property
    def full(self) -> bool:
        return self.bytes >= self.max_bytes

    def first(self) -> Entry | None:
        return self.pending[0] if self.pending else None

    # -- state changes ------------------------------------------------------------
    def append(self, body: bytes, checkpoints: Checkpoints, rows: int, profiles: int, activity: int = 0) -> Entry:
        seq = self.next_seq
        key = f"{self.agent_id}:{seq}"
        obj = {
            "v": FORMAT_VERSION,
            "seq": seq,
            "key": key,
            "rows": rows,
            "profiles": profiles,
            "activity": activity,
            "checkpoints": checkpoints,
            "body": body,
        }
        data = msgpack.packb(obj, use_bin_type=True)
        path = self.dir / f"{seq:016d}{SUFFIX}"
        write_atomic(path, data)
        self.next_seq = seq + 1
        entry = Entry(seq, key, path, len(data), rows, profiles, activity)
        self.pending.append(entry)
        self.bytes += entry.size
        return entry

    def ack(self, entry: Entry) -> None:
        assert self.pending and self.pending[0] is entry, "batches are acknowledged in order"
        _, checkpoints = entry.read()
        self._write_ack(entry.seq, checkpoints)
        self._drop(entry)
        entry.path.unlink()
        fsync_dir(self.dir)

    def dead_letter(self, entry: Entry, status: int, reason: str) -> Path:
        assert self.pending and self.pending[0] is entry, "batches are settled in order"
        _, checkpoints = entry.read()
        target = self.dead_dir / entry.path.name
        info = {"key": entry.key, "status": status, "reason": reason, "rows": entry.rows,
                "activity": entry.activity}
        write_atomic(target.with_suffix(".reason"), json.dumps(info).encode())
        os.replace(entry.path, target)
        fsync_dir(self.dead_dir)
        fsync_dir(self.dir)
        self._write_ack(entry.seq, checkpoints)
        self._drop(entry)
        self.dead_lettered += 1
        return target

    def _drop(self, entry: Entry) -> None:
        self.pending.pop(0)
        self.bytes -= entry.size


def _seq_of(path: Path) -> int:
    try:
        return int(path.name[: -len(SUFFIX)])
    except ValueError:
        raise SpoolError(f"{path}: unexpected file name in the spool") from None
