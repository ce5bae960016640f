"""Follow log files matching a glob: rotation, truncation, deletion, restarts - exactly once.

Strategy (sync I/O; the service calls `poll()` from its loop and decides the interval):
- One `_File` per file identity (dev, inode; see agent.fileid), each with an open fd, a
  fingerprint and a `LineSplitter` whose `offset` is the position after the last line
  returned. Paths are only where files were last seen: reading always goes through the
  fd, so a file renamed or deleted while open is still read to its end.
- Every poll first checks the open files (fstat): size below the read position, or a
  changed fingerprint, means truncated in place (copytruncate) -> restart at 0, and look
  next to it for a copy starting with the old fingerprint to read what was not read yet;
  st_nlink == 0 means deleted. Then the glob is expanded: a path holding an unknown
  identity is a new file (read from the beginning; `read_from` applies only to files
  present at the very first start, i.e. `saved is None`); a live file no longer at any
  matching path was rotated away (renamed or deleted) and is drained.
- Reading order: rotated-away files first, so an old file is drained before its
  successor is read; live files then take turns. At most ~`max_bytes` are read per poll.
  A rotated-away file is closed once it was at its end for `rotated_idle_polls` polls in
  a row (a writer that has not reopened yet may still append to it meanwhile).
- Siblings: files in a watched file's directory named like its rotations
  (`access.log.1`, `access.log-20240101`; not compressed ones). Those present at the
  very first start are old: remembered as "done" (kept in the checkpoint, verified by
  ctime or fingerprint against inode reuse). One that shows up later and is not a file
  being read is classified: starting with the same first line as a file being read or
  a done one, it is a copy (done; a truncation finds it if needed); starting with the
  fingerprint of content no file holds any more (truncated, or saved and not found), it
  is that content's copy, read from the old offset; otherwise it was created and
  rotated away between two looks (or while the agent was down): read from 0.
- `checkpoint()` is pure (no I/O): for every tracked file, the offset after the last line
  returned by poll(). Restoring finds each saved file at its path, else in the same
  directory by dev/inode (+ fingerprint), else by fingerprint alone (a copy); files found
  nowhere are dropped and logged. Beyond `max_open_files` a restored file at a watched
  path is parked like an idle one (reopened when it changes); a rotated-away one stays
  open until drained. Saved fingerprints keep their own length (see agent.fileid), so a
  changed `fingerprint_bytes` compares them over the bytes they cover, then refits them.
Known limits: copytruncate loses what the writer appends between the copy and the
truncation (inherent), and a truncation the fingerprint cannot see (the file held fewer
than `fingerprint_bytes` when last looked at and the new content starts the same) is
missed; when the glob itself matches copytruncate copies, a copy is read as a new file
(point the glob at the live file only); a file parked by the open-file limit and
rotated away before it is reopened is not drained (logged, counted in read_errors).
"""

from __future__ import annotations

import glob as globmod
import logging
import os
import stat
from dataclasses import asdict, dataclass
from typing import Any, Literal

from agent.fileid import DEFAULT_FINGERPRINT_BYTES, FileKey, Fingerprint, key_of, read_prefix
from agent.lines import LineSplitter, start_after_last_line
from agent.wire.logfmt import kv

log = logging.getLogger(__name__)

READ_BLOCK = 1 << 20
# Defaults of the per-source settings sources[].max_open_files and
# sources[].rotated_idle_polls (agent.config; README "Agent configuration").
DEFAULT_MAX_OPEN_FILES = 128
DEFAULT_ROTATED_IDLE_POLLS = 5
MAX_ORPHANS = 64
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".z", ".zip", ".br")
ROTATED_SEPARATORS = (".", "-", "_")


@dataclass
class Chunk:
    path: str
    lines: list[bytes]


@dataclass
class TailerStats:
    lines: int = 0
    bytes: int = 0
    too_long: int = 0
    truncations: int = 0
    rotations: int = 0
    deletions: int = 0
    files_opened: int = 0
    files_closed: int = 0
    open_limit_hits: int = 0
    copies_found: int = 0
    siblings_recovered: int = 0
    saved_dropped: int = 0
    partial_dropped: int = 0
    read_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _File:
    __slots__ = ("key", "path", "fd", "fp", "split", "live", "size", "checked", "idle", "gone")

    def __init__(self, key: FileKey, path: str, fd: int | None, fp: Fingerprint, split: LineSplitter, size: int) -> None:
        self.key = key
        self.path = path
        self.fd = fd
        self.fp = fp
        self.split = split
        self.live = False  # at a path matching the pattern
        self.size = size  # from the last (f)stat
        self.checked = size  # size at the last fingerprint check
        self.idle = 0  # consecutive polls that found nothing new
        self.gone = False  # unlinked


@dataclass(frozen=True, slots=True)
class _Done:
    """A file known to need no reading (a sibling seen while running, or drained and closed)."""

    path: str
    fp: Fingerprint
    size: int
    ctime_ns: int = -1  # when it last proved to be this file; -1: re-check on sight


def _is_sibling_name(name: str, base: str) -> bool:
    if len(name) <= len(base) or not name.startswith(base) or name[len(base)] not in ROTATED_SEPARATORS:
        return False
    return not name.lower().endswith(COMPRESSED)


class Tailer:
    def __init__(
        self,
        pattern: str,
        *,
        read_from: Literal["end", "beginning"],
        max_line_bytes: int,
        saved: list[dict] | None = None,
        fingerprint_bytes: int = DEFAULT_FINGERPRINT_BYTES,
        max_open_files: int = DEFAULT_MAX_OPEN_FILES,
        rotated_idle_polls: int = DEFAULT_ROTATED_IDLE_POLLS,
    ) -> None:
        if read_from not in ("end", "beginning"):
            raise ValueError(f"read_from must be 'end' or 'beginning', got {read_from!r}")
        for name, value in (
            ("max_line_bytes", max_line_bytes),
            ("fingerprint_bytes", fingerprint_bytes),
            ("max_open_files", max_open_files),
            ("rotated_idle_polls", rotated_idle_polls),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.pattern = pattern
        self.read_from = read_from
        self.max_line_bytes = max_line_bytes
        self.fingerprint_bytes = fingerprint_bytes
        self.max_open_files = max_open_files
        self.rotated_idle_polls = rotated_idle_polls
        self.stats = TailerStats()
        self.waiting = False  # the last poll left a file waiting for the open-file limit
        self._files: dict[FileKey, _File] = {}
        self._done: dict[FileKey, _Done] = {}
        self._turn = 0
        self._bases: dict[str, set[str]] = {}
        self._literal: tuple[str, str] | None = None  # (directory, name) of a pattern without magic
        if not globmod.has_magic(pattern):
            self._literal = (os.path.dirname(pattern) or ".", os.path.basename(pattern))
            self._bases[self._literal[0]] = {self._literal[1]}
        self._limit_logged: set[str] = set()
        self._watched: set[str] = set()  # paths the pattern matched when the checkpoint was restored
        self._start_at_end: set[str] = set()
        # (fingerprint, offset) of content no file holds any more (saved and not found, or
        # truncated): a copy of it showing up as a sibling is read from that offset.
        self._orphans: list[tuple[Fingerprint, int]] = []
        first_start = saved is None
        if saved:
            self._restore(saved)
        self._scan(start_at_end=first_start and read_from == "end", recover_siblings=not first_start)

    # ---- public -------------------------------------------------------------------

    def poll(self, max_bytes: int) -> list[Chunk]:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        hits = self.stats.open_limit_hits
        self._scan(start_at_end=False, recover_siblings=True)
        # A file that waits for the open-file limit gets in on a later poll (once an open
        # one was idle for a poll): a poll that reads nothing is then not "at the end".
        self.waiting = self.stats.open_limit_hits > hits
        rotated = [f for f in self._files.values() if f.fd is not None and not f.live]
        live = [f for f in self._files.values() if f.fd is not None and f.live]
        if live:
            self._turn = (self._turn + 1) % len(live)
            live = live[self._turn :] + live[: self._turn]
        out: list[Chunk] = []
        budget = max_bytes
        for f in rotated + live:
            if budget <= 0:
                break
            lines, n = self._read(f, budget)
            budget -= n
            if lines:
                out.append(Chunk(f.path, lines))
        self._close_drained()
        return out

    def checkpoint(self) -> list[dict]:
        entries: list[dict[str, Any]] = []
        for f in self._files.values():
            if f.gone:
                continue  # unlinked: nothing could find it again
            entries.append(self._entry(f.path, f.key, f.fp, f.split.offset, live=f.live, done=False))
        for key, d in self._done.items():
            entries.append(self._entry(d.path, key, d.fp, d.size, live=False, done=True))
        return entries

    def lag(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self._files.values():
            out[f.path] = out.get(f.path, 0) + max(0, f.size - f.split.offset)
        return out

    @property
    def open_files(self) -> int:
        return sum(1 for f in self._files.values() if f.fd is not None)

    def close(self) -> None:
        for f in self._files.values():
            self._close_fd(f)
        self._files.clear()

    # ---- checkpoint format ----------------------------------------------------------

    @staticmethod
    def _entry(path: str, key: FileKey, fp: Fingerprint, offset: int, *, live: bool, done: bool) -> dict[str, Any]:
        return {
            "path": path,
            "dev": key[0],
            "ino": key[1],
            "fp": fp.digest,
            "fp_len": fp.length,
            "offset": offset,
            "live": live,
            "done": done,
        }

    @staticmethod
    def _parse_entry(i: int, e: Any) -> tuple[str, FileKey, Fingerprint, int, bool]:
        if not isinstance(e, dict):
            raise ValueError(f"saved[{i}]: expected an object, got {type(e).__name__}")
        for name, typ in (("path", str), ("dev", int), ("ino", int), ("fp", str), ("fp_len", int), ("offset", int)):
            v = e.get(name)
            if not isinstance(v, typ) or isinstance(v, bool):
                raise ValueError(f"saved[{i}].{name}: expected {typ.__name__}, got {v!r}")
        for name in ("fp_len", "offset"):
            if e[name] < 0:
                raise ValueError(f"saved[{i}].{name}: must be >= 0, got {e[name]}")
        done = e.get("done", False)
        if not isinstance(done, bool):
            raise ValueError(f"saved[{i}].done: expected bool, got {done!r}")
        return e["path"], (e["dev"], e["ino"]), Fingerprint(e["fp_len"], e["fp"]), e["offset"], done

    # ---- restore ----------------------------------------------------------------------

    def _restore(self, saved: list[dict]) -> None:
        parsed = [self._parse_entry(i, e) for i, e in enumerate(saved)]
        # Files at a path the pattern matches wait for a slot like any other once
        # max_open_files are open (see _adopt).
        self._watched = {os.path.normpath(p) for p in globmod.glob(self.pattern)}
        # Pass 1 places every saved file found by identity, pass 2 looks for copies of the
        # ones that were not, so that a copy search never takes a file some entry owns.
        missing = []
        for path, key, fp, offset, done in parsed:
            if key in self._files or key in self._done or (done and fp.length == 0):
                continue
            found = self._find_by_key(path, key, fp, offset)
            if found is None and done:
                log.info("rotated file gone", extra=kv(path=path, ino=key[1]))
            elif found is None:
                missing.append((path, key, fp, offset, done))
            else:
                self._adopt(found, fp, offset, done)
        for path, key, fp, offset, done in missing:
            found = self._find_copy(os.path.dirname(path), fp, offset)
            if found is None:
                self._add_orphan(fp, offset)
            if found is not None:
                self.stats.copies_found += 1
                log.info("saved file found as a copy", extra=kv(path=path, copy=found[0], offset=offset))
                self._adopt(found, fp, offset, done)
            else:
                self.stats.saved_dropped += 1
                log.warning("saved file not found, dropped", extra=kv(path=path, ino=key[1], offset=offset))

    def _adopt(self, found: tuple[str, int, os.stat_result], fp: Fingerprint, offset: int, done: bool) -> None:
        path, fd, st = found
        key = key_of(st)
        self._done.pop(key, None)
        if done:
            # The file just matched its saved fingerprint (over the saved length), so it is
            # re-fingerprinted at the configured size: copy detection (_is_copy) compares
            # done fingerprints of exactly that size, and one saved under another
            # fingerprint_bytes would never match a copy of it, which would then be read.
            try:
                fp = Fingerprint.of(read_prefix(fd, self.fingerprint_bytes))
            except OSError:
                pass  # keep the saved one: still right for every check but copy detection
            os.close(fd)
            self._done[key] = _Done(path, fp, st.st_size, st.st_ctime_ns)
            return
        f = _File(key, path, fd, fp, LineSplitter(self.max_line_bytes, offset), st.st_size)
        f.checked = -1  # re-check (and upgrade) the fingerprint on the first poll
        self._files[key] = f
        if self.open_files > self.max_open_files and os.path.normpath(path) in self._watched:
            # Over the limit (a restart, or a reload that lowered it): a file at a watched
            # path is parked with its position and reopened by _scan once it changes and a
            # slot is free. A file rotated away stays open: nothing could reopen it, and it
            # is closed once drained (rotated_idle_polls), so the excess is temporary.
            os.close(fd)  # not counted in files_opened/files_closed: it never was in use
            f.fd = None
            self._limit_hit(path)
            return
        self.stats.files_opened += 1

    def _open_match(self, path: str, key: FileKey | None, fp: Fingerprint, min_size: int) -> tuple[str, int, os.stat_result] | None:
        """Open `path` if it is `key` (any key when None), at least `min_size` long and starts with `fp`."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if (
                stat.S_ISREG(st.st_mode)
                and (key is None or key_of(st) == key)
                and st.st_size >= min_size
                and fp.matches(read_prefix(fd, fp.length))
            ):
                return path, fd, st
        except OSError:
            pass
        os.close(fd)
        return None

    def _find_by_key(self, path: str, key: FileKey, fp: Fingerprint, offset: int) -> tuple[str, int, os.stat_result] | None:
        found = self._open_match(path, key, fp, offset)
        if found is not None:
            return found
        directory = os.path.dirname(path) or "."
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return None
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.inode() == key[1] and entry.path != path:
                found = self._open_match(entry.path, key, fp, offset)
                if found is not None:
                    return found
        return None

    def _find_copy(self, directory: str, fp: Fingerprint, offset: int) -> tuple[str, int, os.stat_result] | None:
        """A file in `directory`, not being read, starting with `fp` and longer than `offset` bytes.

        Siblings marked done are candidates: a copytruncate copy is seen (and marked) as
        soon as it appears, usually a poll before the truncation that makes it needed.
        """
        if fp.length == 0:
            return None
        try:
            entries = sorted(os.scandir(directory or "."), key=lambda e: e.name)
        except OSError:
            return None
        for entry in entries:
            try:
                st = entry.stat()
            except OSError:
                continue
            key = key_of(st)
            if not stat.S_ISREG(st.st_mode) or key in self._files or st.st_size <= offset:
                continue
            found = self._open_match(entry.path, key, fp, offset + 1)
            if found is not None:
                return found
        return None

    # ---- scanning ------------------------------------------------------------------

    def _scan(self, *, start_at_end: bool, recover_siblings: bool) -> None:
        for f in list(self._files.values()):
            if f.fd is not None:
                self._check(f)
        seen: set[FileKey] = set()
        matched = sorted(globmod.glob(self.pattern))
        for path in matched:
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            key = key_of(st)
            seen.add(key)
            f = self._files.get(key)
            if f is None:
                if self._still_done(key, path, st):  # a sibling renamed back under the pattern
                    if self._open_new(path, self._done[key].size):
                        del self._done[key]
                elif start_at_end or path in self._start_at_end:
                    # present at the very first start: a file kept waiting by the open-file
                    # limit must still start at its end once it gets its turn
                    self._start_at_end.add(path)
                    if self._open_new(path, -1):
                        self._start_at_end.discard(path)
                else:
                    self._open_new(path, 0)
                continue
            if f.path != path:
                self.stats.rotations += 1
                log.info("file renamed", extra=kv(path=f.path, to=path))
                f.path = path
            f.live = True
            f.size = st.st_size
            if f.fd is None and st.st_size != f.split.position:
                self._reopen(f)
        for f in list(self._files.values()):
            if f.live and f.key not in seen:
                f.live = False
                f.idle = 0  # the writer may not have reopened yet: give it the full grace
                if f.fd is None:  # parked (open-file limit) and rotated meanwhile: cannot drain
                    self.stats.read_errors += 1
                    log.warning("closed file rotated away, not drained", extra=kv(path=f.path, offset=f.split.offset))
                    del self._files[f.key]
                    self._done[f.key] = _Done(f.path, f.fp, f.split.position)
                elif not f.gone:
                    self.stats.rotations += 1
                    log.info("file rotated", extra=kv(path=f.path, offset=f.split.offset, size=f.size))
        self._scan_siblings(matched, recover_siblings)

    def _scan_siblings(self, matched: list[str], recover: bool) -> None:
        """Classify siblings never seen before: at the first start they are old (done);
        later, one starting like a known file is a copy (done: a truncation finds it if
        needed), any other was rotated between two looks (created and renamed away): read it.
        """
        # Every name the pattern matched while a file seen under it is still tracked (or
        # remembered as done), so siblings are still watched while the live file is missing
        # (deleted, or renamed and not yet recreated); see _forget_bases.
        bases = self._bases
        for path in matched:
            bases.setdefault(os.path.dirname(path) or ".", set()).add(os.path.basename(path))
        matched_set = set(matched)
        present: set[FileKey] = set()
        for directory, names in bases.items():
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.path in matched_set or not any(_is_sibling_name(entry.name, b) for b in names):
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                key = key_of(st)
                present.add(key)
                if not stat.S_ISREG(st.st_mode) or key in self._files or self._still_done(key, entry.path, st):
                    continue
                if not recover:
                    self._mark_done(entry.path, key, st)
                    continue
                orphan = self._orphan_of(entry.path, key)
                if orphan is not None:
                    if st.st_size > orphan[1]:
                        self.stats.copies_found += 1
                        log.info("copy of saved file found, draining it", extra=kv(path=entry.path, offset=orphan[1]))
                        if not self._open_new(entry.path, orphan[1], live=False):
                            self._orphans.append(orphan)  # retried next poll
                    else:
                        self._mark_done(entry.path, key, st)
                    continue
                if self._is_copy(entry.path, st):
                    self._mark_done(entry.path, key, st)
                    continue
                self.stats.siblings_recovered += 1
                log.info("rotated file never seen, reading it", extra=kv(path=entry.path))
                self._open_new(entry.path, 0, live=False)
        dirs = set(bases)
        for key in [k for k, d in self._done.items() if k not in present and (os.path.dirname(d.path) or ".") in dirs]:
            del self._done[key]
        self._forget_bases(matched)

    def _forget_bases(self, matched: list[str]) -> None:
        """Drop the names no path matches any more and no tracked or done file was last
        seen under: a glob over date-stamped logs would otherwise remember every name it
        ever matched (memory and per-poll work growing for as long as the agent runs)."""
        keep: dict[str, set[str]] = {}
        for path in matched:
            keep.setdefault(os.path.dirname(path) or ".", set()).add(os.path.basename(path))
        for f in self._files.values():
            keep.setdefault(os.path.dirname(f.path) or ".", set()).add(os.path.basename(f.path))
        for d in self._done.values():
            keep.setdefault(os.path.dirname(d.path) or ".", set()).add(os.path.basename(d.path))
        if self._literal is not None:
            keep.setdefault(self._literal[0], set()).add(self._literal[1])
        for directory in list(self._bases):
            names = self._bases[directory] & keep.get(directory, set())
            if names:
                self._bases[directory] = names
            else:
                del self._bases[directory]

    def _still_done(self, key: FileKey, path: str, st: os.stat_result) -> bool:
        """Is the file at `path` still the done file remembered under its inode?

        Inode numbers are reused: an unchanged ctime proves it cheaply; otherwise (renamed,
        or a new file) its first bytes must still match. A remembered empty file proves
        nothing and is forgotten (reading an empty file again costs nothing).
        """
        d = self._done.get(key)
        if d is None:
            return False
        if d.ctime_ns == st.st_ctime_ns:
            return True
        if d.fp.length and st.st_size >= d.size:
            found = self._open_match(path, key, d.fp, d.size)
            if found is not None:
                os.close(found[1])
                self._done[key] = _Done(d.path, d.fp, d.size, st.st_ctime_ns)
                return True
        del self._done[key]
        return False

    def _orphan_of(self, path: str, key: FileKey) -> tuple[Fingerprint, int] | None:
        for i, (fp, offset) in enumerate(self._orphans):
            found = self._open_match(path, key, fp, 0)
            if found is not None:
                os.close(found[1])
                return self._orphans.pop(i)
        return None

    def _is_copy(self, path: str, st: os.stat_result) -> bool:
        """Does `path` start with the same bytes as a file being read, or a done one?

        Compared over K = min(fingerprint_bytes, its size) bytes, which the other file
        must have too: a file being read that is still shorter than the candidate (e.g.
        a fresh log holding a few bytes) is not what the candidate was copied from. K
        must hold a whole line (or be the full fingerprint): two logs' first few bytes
        are often equal, their first lines are not.
        """
        k = min(self.fingerprint_bytes, st.st_size)
        if k == 0:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            head = read_prefix(fd, k)
        finally:
            os.close(fd)
        if len(head) < k or (k < self.fingerprint_bytes and b"\n" not in head):
            return False  # a lone unfinished line tells nothing; reading it again is harmless
        for f in self._files.values():
            if f.fd is not None and f.size >= k and read_prefix(f.fd, k) == head:
                return True
        return any(d.fp.length == k and d.fp.matches(head) for d in self._done.values())

    def _mark_done(self, path: str, key: FileKey, st: os.stat_result) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            self._done[key] = _Done(path, Fingerprint.of(read_prefix(fd, self.fingerprint_bytes)), st.st_size, st.st_ctime_ns)
        finally:
            os.close(fd)

    def _check(self, f: _File) -> None:
        assert f.fd is not None
        try:
            st = os.fstat(f.fd)
        except OSError as e:
            self.stats.read_errors += 1
            log.warning("fstat failed, closing", extra=kv(path=f.path, error=e))
            self._forget(f)
            return
        f.size = st.st_size
        if st.st_nlink == 0 and not f.gone:
            f.gone = True
            f.idle = 0
            self.stats.deletions += 1
            log.info("file deleted, draining it", extra=kv(path=f.path, offset=f.split.offset, size=f.size))
        if st.st_size == f.checked and f.fp.length == 0:
            return  # still empty: nothing to compare
        # The prefix is compared on every poll, even at an unchanged size: copytruncate
        # followed by writes can bring a file back to the very same size between polls.
        # A fingerprint restored from a checkpoint written with a larger fingerprint_bytes
        # is verified over its own (longer) length once, then cut to the configured size.
        prefix = read_prefix(f.fd, max(self.fingerprint_bytes, f.fp.length))
        up = f.fp.upgrade(prefix, self.fingerprint_bytes) if st.st_size >= f.split.position else None
        if up is None:
            self._truncated(f, prefix)
        else:
            f.fp = up
        f.checked = st.st_size

    def _truncated(self, f: _File, prefix: bytes) -> None:
        old_fp, old_offset = f.fp, f.split.offset
        self.stats.truncations += 1
        if f.split.pending:
            self.stats.partial_dropped += 1
        log.warning("file truncated, reading from its start", extra=kv(path=f.path, offset=old_offset, size=f.size))
        f.split = LineSplitter(self.max_line_bytes, 0)
        f.fp = Fingerprint.of(prefix[: self.fingerprint_bytes])
        # copytruncate: what was not read yet may still be in the copy just made.
        found = self._find_copy(os.path.dirname(f.path), old_fp, old_offset)
        if found is not None:
            self.stats.copies_found += 1
            log.info("copy of truncated file found, draining it", extra=kv(path=f.path, copy=found[0], offset=old_offset))
            self._adopt(found, old_fp, old_offset, done=False)
        else:
            self._add_orphan(old_fp, old_offset)

    def _add_orphan(self, fp: Fingerprint, offset: int) -> None:
        if fp.length:
            self._orphans.append((fp, offset))
            del self._orphans[:-MAX_ORPHANS]

    # ---- opening and closing --------------------------------------------------------------

    def _room(self) -> bool:
        if self.open_files < self.max_open_files:
            return True
        idle = [f for f in self._files.values() if f.fd is not None and f.live and f.idle > 0]
        if not idle:
            return False
        victim = max(idle, key=lambda f: f.idle)
        self._close_fd(victim)  # parked: position kept, reopened when it changes
        return True

    def _limit_hit(self, path: str) -> None:
        """A file found no slot under max_open_files: counted every time, logged once a file."""
        self.stats.open_limit_hits += 1
        if path not in self._limit_logged:
            self._limit_logged.add(path)
            log.warning("open file limit reached, file waits", extra=kv(path=path, max_open_files=self.max_open_files))

    def _open_new(self, path: str, start: int, *, live: bool = True) -> bool:
        """Track a new file; start -1 means "after its last complete line"."""
        if not self._room():
            self._limit_hit(path)
            return False
        self._limit_logged.discard(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.stats.read_errors += 1
            log.warning("cannot open file", extra=kv(path=path, error=e))
            return False
        st = os.fstat(fd)
        key = key_of(st)
        if key in self._files:  # replaced between stat and open; the next scan sorts it out
            os.close(fd)
            return False
        if start < 0:
            window = min(st.st_size, self.max_line_bytes + 1)
            tail_start = st.st_size - window
            start = start_after_last_line(os.pread(fd, window, tail_start), tail_start)
        fp = Fingerprint.of(read_prefix(fd, self.fingerprint_bytes))
        f = _File(key, path, fd, fp, LineSplitter(self.max_line_bytes, start), st.st_size)
        f.live = live
        self._files[key] = f
        self.stats.files_opened += 1
        log.info("file opened", extra=kv(path=path, ino=key[1], offset=start, size=st.st_size))
        return True

    def _reopen(self, f: _File) -> None:
        if not self._room():
            self.stats.open_limit_hits += 1
            return
        try:
            fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC)
            if key_of(os.fstat(fd)) != f.key:
                os.close(fd)
                return
        except OSError:
            return
        f.fd = fd
        self.stats.files_opened += 1
        self._check(f)

    def _read(self, f: _File, budget: int) -> tuple[list[bytes], int]:
        assert f.fd is not None
        lines: list[bytes] = []
        total = 0
        too_long = f.split.too_long
        while total < budget:
            want = min(budget - total, READ_BLOCK)
            try:
                data = os.pread(f.fd, want, f.split.position)
            except OSError as e:
                self.stats.read_errors += 1
                log.warning("read failed", extra=kv(path=f.path, error=e))
                break
            if not data:
                break
            total += len(data)
            lines.extend(f.split.feed(data))
            if len(data) < want:
                break
        f.idle = 0 if total else f.idle + 1
        f.size = max(f.size, f.split.position)
        if f.fp.length < self.fingerprint_bytes and f.split.position > f.fp.length:
            # Keep the rule fingerprint length >= min(fingerprint_bytes, offset) that
            # restore and copy detection rely on; a changed prefix is the next check's job.
            up = f.fp.upgrade(read_prefix(f.fd, self.fingerprint_bytes), self.fingerprint_bytes)
            if up is not None:
                f.fp = up
        if f.split.too_long != too_long:
            n = f.split.too_long - too_long
            self.stats.too_long += n
            log.warning("line too long, skipped", extra=kv(path=f.path, lines=n, max_line_bytes=self.max_line_bytes))
        self.stats.lines += len(lines)
        self.stats.bytes += total
        return lines, total

    def _close_drained(self) -> None:
        for f in list(self._files.values()):
            if f.live or f.fd is None or f.idle < self.rotated_idle_polls:
                continue
            if f.split.pending:
                self.stats.partial_dropped += 1
                log.warning("unfinished last line dropped", extra=kv(path=f.path, bytes=f.split.pending))
            log.info("rotated file drained, closing", extra=kv(path=f.path, offset=f.split.offset, ino=f.key[1]))
            if not f.gone:
                try:
                    ctime = os.fstat(f.fd).st_ctime_ns if f.fd is not None else -1
                except OSError:
                    ctime = -1
                self._done[f.key] = _Done(f.path, f.fp, f.split.position, ctime)
            self._forget(f)

    def _close_fd(self, f: _File) -> None:
        if f.fd is not None:
            try:
                os.close(f.fd)
            except OSError:
                pass
            f.fd = None
            self.stats.files_closed += 1

    def _forget(self, f: _File) -> None:
        self._close_fd(f)
        self._files.pop(f.key, None)
