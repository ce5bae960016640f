"""The line splitter against an independent oracle: bytes.split on the whole input."""

from __future__ import annotations

import random

import pytest

from agent.lines import LineSplitter, start_after_last_line


def oracle(data: bytes, limit: int) -> tuple[list[bytes], int, int]:
    """(lines kept, lines too long, offset after the last newline) for the whole input at once."""
    *complete, _partial = data.split(b"\n")
    kept = [line for line in complete if len(line) <= limit]
    return kept, len(complete) - len(kept), data.rfind(b"\n") + 1


def run(chunks: list[bytes], limit: int) -> tuple[list[bytes], LineSplitter]:
    s = LineSplitter(limit)
    out: list[bytes] = []
    for c in chunks:
        out.extend(s.feed(c))
    return out, s


SAMPLES = [
    b"alpha\nbeta\n\ngamma\r\ndelta",  # empty line, CRLF, unfinished last line
    b"\xff\xfe\x00bin\n\xc3(\n\x80\r\n",  # not UTF-8, NUL, lone continuation bytes
    b"short\nthis-line-is-way-too-long-for-the-limit\nok\nanother-far-too-long-line-here\nend\n",
    b"\n\n\n",
    b"exactly-12ch\n13-characters\nx\n",  # at the limit and one over (limit=12)
    b"no newline at all",
]


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("limit", [12, 1000])
def test_every_single_split_point(sample: bytes, limit: int) -> None:
    want_lines, want_long, want_offset = oracle(sample, limit)
    for i in range(len(sample) + 1):
        got, s = run([sample[:i], sample[i:]], limit)
        assert got == want_lines, i
        assert s.too_long == want_long, i
        assert s.offset == want_offset, i
        assert s.position == len(sample)


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_pair_of_split_points(sample: bytes) -> None:
    want_lines, want_long, want_offset = oracle(sample, 12)
    for i in range(len(sample) + 1):
        for j in range(i, len(sample) + 1):
            got, s = run([sample[:i], sample[i:j], sample[j:]], 12)
            assert (got, s.too_long, s.offset) == (want_lines, want_long, want_offset), (i, j)


def test_byte_at_a_time() -> None:
    sample = b"".join(SAMPLES)
    got, s = run([bytes([b]) for b in sample], 12)
    assert (got, s.too_long, s.offset) == oracle(sample, 12)


def test_random_chunkings_of_random_bytes() -> None:
    rng = random.Random(7)
    for _ in range(200):
        data = bytes(rng.choice(b"ab\n\r\xff") for _ in range(rng.randrange(0, 300)))
        limit = rng.randrange(1, 20)
        cuts = sorted(rng.randrange(0, len(data) + 1) for _ in range(rng.randrange(0, 8)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        got, s = run(chunks, limit)
        assert (got, s.too_long, s.offset) == oracle(data, limit)


def test_too_long_line_over_many_chunks_is_not_buffered() -> None:
    s = LineSplitter(10)
    assert s.feed(b"ok\n" + b"x" * 8) == [b"ok"]
    for _ in range(1000):
        assert s.feed(b"y" * 100) == []
        assert len(s._partial) <= 10  # bounded memory while skipping
    assert s.pending == 8 + 100_000
    assert s.offset == 3
    assert s.feed(b"zz\nnext\n") == [b"next"]
    assert s.too_long == 1
    assert s.offset == 3 + 8 + 100_000 + 3 + 5


def test_limit_counts_the_cr_but_not_the_newline() -> None:
    got, s = run([b"12345\r\n", b"1234\r\n"], 5)
    assert got == [b"1234\r"]
    assert s.too_long == 1


def test_partial_line_is_held_until_its_newline() -> None:
    s = LineSplitter(100, offset=50)
    assert s.feed(b"par") == []
    assert (s.offset, s.position, s.pending) == (50, 53, 3)
    assert s.feed(b"tial") == []
    assert s.feed(b"\n") == [b"partial"]
    assert (s.offset, s.position, s.pending) == (58, 58, 0)


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_line_bytes"):
        LineSplitter(0)
    with pytest.raises(ValueError, match="offset"):
        LineSplitter(5, offset=-1)


@pytest.mark.parametrize(
    ("tail", "tail_start", "want"),
    [
        (b"a\nb\nunfinished", 100, 104),
        (b"a\nb\n", 0, 4),
        (b"no newline", 0, 0),
        (b"no newline in window", 500, 500),
        (b"", 0, 0),
    ],
)
def test_start_after_last_line(tail: bytes, tail_start: int, want: int) -> None:
    assert start_after_last_line(tail, tail_start) == want
