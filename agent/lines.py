"""Split a byte stream into lines, sans-I/O: `feed(bytes) -> complete lines`.

Strategy and rules:
- A line is the bytes before a b"\\n". The "\\n" is dropped; a "\\r" before it is KEPT
  (bytes pass through untouched; parsers strip it). Empty lines are emitted as b"".
  Bytes need not be UTF-8: nothing is decoded here.
- The bytes after the last "\\n" are an unfinished line: held (at most `max_line_bytes`
  of them) until their "\\n" arrives. They are never emitted early and never dropped.
- A line longer than `max_line_bytes` (not counting its "\\n") is skipped whole and
  counted in `too_long`, however many feeds it spans: once the held part would exceed the
  limit the splitter forgets it and drops bytes until the next "\\n". Memory per splitter
  is therefore bounded by `max_line_bytes`, whatever the input.
- `offset` is the stream position just after the last "\\n" consumed (emitted or skipped
  line). Everything before it has been fully handled, everything after it not: this is
  the position a checkpoint stores. `position` = `offset` + bytes held or being skipped =
  where the next read continues.
"""

from __future__ import annotations

NL = b"\n"


class LineSplitter:
    __slots__ = ("max_line_bytes", "offset", "too_long", "_partial", "_skipping", "_held")

    def __init__(self, max_line_bytes: int, offset: int = 0) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.max_line_bytes = max_line_bytes
        self.offset = offset
        self.too_long = 0
        self._partial = bytearray()  # the unfinished line, <= max_line_bytes
        self._skipping = False  # inside a too-long line: drop bytes until "\n"
        self._held = 0  # bytes fed after `offset` (partial line or skipped bytes)

    @property
    def position(self) -> int:
        return self.offset + self._held

    @property
    def pending(self) -> int:
        """Bytes fed but not yet part of a complete line."""
        return self._held

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        n = len(data)
        if not n:
            return out
        limit = self.max_line_bytes
        start = 0
        if self._held:
            nl = data.find(NL)
            if nl < 0:
                if not self._skipping:
                    if len(self._partial) + n > limit:
                        self._skipping = True
                        self._partial.clear()
                    else:
                        self._partial += data
                self._held += n
                return out
            if self._skipping or len(self._partial) + nl > limit:
                self.too_long += 1
            else:
                self._partial += data[:nl]
                out.append(bytes(self._partial))
            self._partial.clear()
            self._skipping = False
            self.offset += self._held + nl + 1
            self._held = 0
            start = nl + 1
        last = data.rfind(NL, start)
        if last >= 0:
            lines = data[start:last].split(NL)
            if last - start > limit:  # some line may be too long: filter (rarely needed)
                kept = [line for line in lines if len(line) <= limit]
                self.too_long += len(lines) - len(kept)
                lines = kept
            out.extend(lines)
            self.offset += last + 1 - start
            start = last + 1
        rest = n - start
        if rest:
            if rest > limit:
                self._skipping = True
            else:
                self._partial += data[start:]
            self._held = rest
        return out


def start_after_last_line(tail: bytes, tail_start: int) -> int:
    """Where to start reading a file "from its end": just after the last complete line.

    `tail` is the file's last bytes, read from `tail_start`; callers pass at least
    `max_line_bytes + 1` bytes (or the whole file) so that, when no "\\n" is found, the
    unfinished line is either the whole file (start at 0) or already too long (starting
    mid-line then makes the splitter skip and count it, which is right).
    """
    nl = tail.rfind(NL)
    return tail_start + nl + 1 if nl >= 0 else tail_start
