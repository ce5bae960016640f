"""File identity: (st_dev, st_ino) plus a fingerprint of the file's first bytes.

Why both: dev/inode follows a file across renames (logrotate's `mv access.log
access.log.1`), but an inode number is reused as soon as a file is deleted, so a new
file can show up with the old number. The fingerprint - sha1 of the first bytes - tells
the two apart, and also detects a file truncated and rewritten in place (copytruncate).

Rules:
- The fingerprint covers the first `length` bytes, up to `want` (the source's
  `fingerprint_bytes`, default 1024). A file shorter than `want` is fingerprinted over
  the bytes it has, and the fingerprint is upgraded (re-hashed over more bytes) as the
  file grows, but only after the bytes it already covers were checked unchanged. An empty file has length 0: it is identified by
  dev/inode alone, which is harmless because a reader of an empty file is at offset 0.
- A tailer fingerprints a file before reading it, so `length >= min(want, offset)`:
  any rewrite of the bytes before the read offset within the first `want` bytes is seen.
- A file "matches" a fingerprint when it has at least `length` bytes and its first
  `length` bytes hash to `digest`. The length is part of the fingerprint (and of every
  saved checkpoint entry, `fp_len`), so a fingerprint saved under another `want` is still
  compared over exactly the bytes it covers; `upgrade` then refits it to the new `want`
  (grown as the file has the bytes, or cut), so changing fingerprint_bytes neither
  re-reads nor skips a file. Two different files with identical first bytes are
  indistinguishable by fingerprint (for a log with timestamps that means a copy).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

DEFAULT_FINGERPRINT_BYTES = 1024

FileKey = tuple[int, int]  # (st_dev, st_ino)


def key_of(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    length: int  # bytes covered
    digest: str  # sha1 hex of those bytes

    @classmethod
    def of(cls, prefix: bytes) -> Fingerprint:
        return cls(len(prefix), hashlib.sha1(prefix).hexdigest())

    def matches(self, prefix: bytes) -> bool:
        """`prefix`: the file's first bytes (at least `length` of them if the file has them)."""
        if len(prefix) < self.length:
            return False
        return hashlib.sha1(prefix[: self.length]).hexdigest() == self.digest

    def upgrade(self, prefix: bytes, want: int) -> Fingerprint | None:
        """The fingerprint over `min(want, len(prefix))` bytes, or None if the bytes it covered changed.

        `prefix` must hold at least `max(want, length)` bytes when the file has them: a
        fingerprint longer than `want` (saved under a larger fingerprint_bytes) is checked
        over all its bytes before it is cut to `want`.
        """
        if not self.matches(prefix):
            return None
        if self.length > want or (len(prefix) > self.length and self.length < want):
            return Fingerprint.of(prefix[:want])
        return self


def read_prefix(fd: int, n: int) -> bytes:
    """The first n bytes of an open file (fewer if it is shorter)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        b = os.pread(fd, n - got, got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)
