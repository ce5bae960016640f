"""The Tailer on real files: globs, read_from, limits, rotation, truncation, deletion, restarts."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.tailer import Chunk, Tailer

MAX = 100


def lines_of(chunks: list[Chunk]) -> list[bytes]:
    return [line for c in chunks for line in c.lines]


def drain(t: Tailer, polls: int = 12, max_bytes: int = 1 << 20) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(polls):
        out += lines_of(t.poll(max_bytes))
    return out


def append(p: Path, data: bytes) -> None:
    with open(p, "ab") as f:
        f.write(data)


def test_read_from_end_and_beginning(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"old1\nold2\nunfini")
    end = Tailer(str(log), read_from="end", max_line_bytes=MAX)
    beg = Tailer(str(log), read_from="beginning", max_line_bytes=MAX)
    append(log, b"shed\nnew\n")
    # "end" starts after the last complete line: the unfinished one completes after start
    assert drain(end) == [b"unfinished", b"new"]
    assert drain(beg) == [b"old1", b"old2", b"unfinished", b"new"]
    end.close()
    beg.close()


def test_glob_picks_up_files_created_later_from_their_beginning(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"a-old\n")
    t = Tailer(str(tmp_path / "*.log"), read_from="end", max_line_bytes=MAX)
    assert drain(t, 2) == []
    (tmp_path / "b.log").write_bytes(b"b1\nb2\n")
    (tmp_path / "c.txt").write_bytes(b"not matched\n")
    append(tmp_path / "a.log", b"a-new\n")
    got = t.poll(1 << 20)
    assert sorted((Path(c.path).name, c.lines) for c in got) == [("a.log", [b"a-new"]), ("b.log", [b"b1", b"b2"])]
    assert t.stats.files_opened == 2
    t.close()


def test_too_long_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=10)
    append(log, b"ok1\n" + b"x" * 25)
    assert drain(t, 2, max_bytes=8) == [b"ok1"]
    append(log, b"x" * 30 + b"\nok2\r\n\xff\xfe\n")
    assert drain(t, 10, max_bytes=8) == [b"ok2\r", b"\xff\xfe"]  # CR kept, bytes untouched
    assert t.stats.too_long == 1
    assert t.stats.lines == 3
    assert t.stats.bytes == log.stat().st_size
    t.close()


def test_poll_reads_at_most_max_bytes(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    want = [b"line-%04d" % i for i in range(500)]
    log.write_bytes(b"".join(w + b"\n" for w in want))
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX)
    got: list[bytes] = []
    for _ in range(100):
        chunk = lines_of(t.poll(200))
        assert sum(len(x) + 1 for x in chunk) <= 200 + MAX
        got += chunk
    assert got == want
    assert t.lag() == {str(log): 0}
    t.close()


def test_lag_is_bytes_behind_the_end(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"a" * 50 + b"\n" + b"b" * 49 + b"\n")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX)
    t.poll(60)
    assert t.lag() == {str(log): 50}
    t.close()


def test_rename_rotation_drains_the_old_file_first_and_closes_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX, rotated_idle_polls=2)
    with open(log, "ab", buffering=0) as writer:
        writer.write(b"a1\na2\n")
        assert lines_of(t.poll(1 << 20)) == [b"a1", b"a2"]
        writer.write(b"a3\npart")
        os.rename(log, tmp_path / "access.log.1")
        log.write_bytes(b"b1\n")
        writer.write(b"ial\na4\n")  # the proxy has not reopened yet
    with caplog.at_level(logging.INFO, logger="agent.tailer"):
        got = t.poll(1 << 20)
    assert [(Path(c.path).name, c.lines) for c in got] == [
        ("access.log", [b"a3", b"partial", b"a4"]),  # the old file, drained first
        ("access.log", [b"b1"]),
    ]
    assert t.stats.rotations == 1
    assert any(r.getMessage() == "file rotated" and r.kv["path"] == str(log) for r in caplog.records)  # type: ignore[attr-defined]
    assert drain(t, 3) == []
    assert t.open_files == 1 and t.stats.files_closed == 1
    t.close()


def test_restart_right_after_rename_drains_the_rotated_file_from_its_offset(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"a1\na2\n")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX)
    assert drain(t, 1) == [b"a1", b"a2"]
    saved = json.loads(json.dumps(t.checkpoint()))
    t.close()  # kill -9: nothing else survives
    append(log, b"a3\n")
    os.rename(log, tmp_path / "access.log.1")
    log.write_bytes(b"b1\n")
    append(tmp_path / "access.log.1", b"a4\n")
    t2 = Tailer(str(log), read_from="end", max_line_bytes=MAX, saved=saved)
    assert sorted(drain(t2)) == [b"a3", b"a4", b"b1"]
    t2.close()


def test_restart_after_two_rotations_reads_the_file_it_never_saw(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"a1\n")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX)
    assert drain(t, 1) == [b"a1"]
    saved = t.checkpoint()
    t.close()
    append(log, b"a2\n")
    os.rename(log, tmp_path / "access.log.1")
    log.write_bytes(b"b1\nb2\n")  # created and rotated away while the agent was down
    os.rename(tmp_path / "access.log.1", tmp_path / "access.log.2")
    os.rename(log, tmp_path / "access.log.1")
    log.write_bytes(b"c1\n")
    (tmp_path / "access.log.3.gz").write_bytes(b"\x1f\x8bcompressed\n")  # never read
    t2 = Tailer(str(log), read_from="end", max_line_bytes=MAX, saved=saved)
    assert sorted(drain(t2)) == [b"a2", b"b1", b"b2", b"c1"]
    assert t2.stats.siblings_recovered == 1
    t2.close()


def test_old_rotated_files_present_at_first_start_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "access.log.1").write_bytes(b"ancient\n")
    log = tmp_path / "access.log"
    log.write_bytes(b"x\n")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX)
    assert drain(t, 2) == [b"x"]
    saved = t.checkpoint()
    assert [(Path(e["path"]).name, e["done"]) for e in saved] == [("access.log", False), ("access.log.1", True)]
    t.close()
    t2 = Tailer(str(log), read_from="beginning", max_line_bytes=MAX, saved=saved)
    assert drain(t2, 2) == []
    t2.close()


def test_copytruncate_recovers_lines_written_after_the_last_poll_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX)
    append(log, b"line-one-with-some-length\n")
    assert drain(t, 1) == [b"line-one-with-some-length"]
    append(log, b"written-after-the-poll\n")
    shutil.copyfile(log, tmp_path / "access.log.1")
    os.truncate(log, 0)
    append(log, b"after-truncation-1\nafter-truncation-2\n")  # already past the old offset
    assert sorted(drain(t)) == [b"after-truncation-1", b"after-truncation-2", b"written-after-the-poll"]
    assert (t.stats.truncations, t.stats.copies_found) == (1, 1)
    t.close()


def test_truncation_without_copy_restarts_at_zero(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"first\nsecond\n")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX)
    assert drain(t, 1) == [b"first", b"second"]
    os.truncate(log, 0)
    append(log, b"x\n")
    assert drain(t, 2) == [b"x"]
    assert t.stats.truncations == 1
    t.close()


def test_deleted_file_is_drained_through_its_fd_then_closed(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX, rotated_idle_polls=2)
    with open(log, "ab", buffering=0) as writer:
        writer.write(b"d1\n")
        os.unlink(log)
        writer.write(b"d2\n")
        assert drain(t, 1) == [b"d1", b"d2"]
        writer.write(b"d3\n")
        assert drain(t, 1) == [b"d3"]
    assert t.stats.deletions == 1
    assert drain(t, 3) == []
    assert t.open_files == 0
    assert t.checkpoint() == []
    t.close()


def test_saved_file_gone_everywhere_is_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"a\n")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX)
    drain(t, 1)
    saved = t.checkpoint()
    t.close()
    log.unlink()
    log.write_bytes(b"fresh-content-that-differs\n")
    with caplog.at_level(logging.WARNING, logger="agent.tailer"):
        t2 = Tailer(str(log), read_from="end", max_line_bytes=MAX, saved=saved)
    assert drain(t2, 1) == [b"fresh-content-that-differs"]  # not at first start: from the beginning
    assert t2.stats.saved_dropped == 1
    assert any(r.getMessage() == "saved file not found, dropped" for r in caplog.records)
    t2.close()


def test_checkpoint_format_round_trips_and_bad_entries_name_the_field(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"abc\nde")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX, fingerprint_bytes=4)
    drain(t, 1)
    [entry] = t.checkpoint()
    st = log.stat()
    assert entry == {
        "path": str(log),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "fp": __import__("hashlib").sha1(b"abc\n").hexdigest(),
        "fp_len": 4,
        "offset": 4,
        "live": True,
        "done": False,
    }
    t.close()
    with pytest.raises(ValueError, match=r"saved\[0\]\.offset"):
        Tailer(str(log), read_from="end", max_line_bytes=MAX, saved=[dict(entry, offset="4")])
    with pytest.raises(ValueError, match=r"saved\[0\]\.ino"):
        Tailer(str(log), read_from="end", max_line_bytes=MAX, saved=[{k: v for k, v in entry.items() if k != "ino"}])
    with pytest.raises(ValueError, match="read_from"):
        Tailer(str(log), read_from="middle", max_line_bytes=MAX)  # type: ignore[arg-type]


def test_open_file_limit_parks_idle_files_and_loses_nothing(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / f"{name}.log").write_bytes(f"{name}0\n".encode())
    t = Tailer(str(tmp_path / "*.log"), read_from="beginning", max_line_bytes=MAX, max_open_files=2)
    got = drain(t, 4)
    for i in range(1, 4):
        for name in "abc":
            append(tmp_path / f"{name}.log", f"{name}{i}\n".encode())
        got += drain(t, 4)
        assert t.open_files <= 2
    assert sorted(got) == sorted(f"{n}{i}".encode() for n in "abc" for i in range(4))
    assert t.stats.open_limit_hits == 0 or t.stats.files_closed > 0
    assert t.stats.files_closed > 0  # parked to make room
    t.close()


def test_glob_matching_rotated_names_follows_the_inode_not_the_name(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"a1\n")
    t = Tailer(str(tmp_path / "access.log*"), read_from="beginning", max_line_bytes=MAX)
    assert drain(t, 1) == [b"a1"]
    os.rename(log, tmp_path / "access.log.1")
    append(tmp_path / "access.log.1", b"a2\n")
    log.write_bytes(b"b1\n")
    assert sorted(drain(t, 2)) == [b"a2", b"b1"]  # a1 not read again under its new name
    assert t.stats.rotations == 1
    t.close()


def test_open_file_limit_keeps_read_from_end_for_files_that_wait(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / f"{name}.log").write_bytes(f"{name}-old\n".encode())
    t = Tailer(str(tmp_path / "*.log"), read_from="end", max_line_bytes=MAX, max_open_files=1)
    got: list[bytes] = []
    for _ in range(4):
        got += drain(t, 2)
    for name in "abc":
        append(tmp_path / f"{name}.log", f"{name}-new\n".encode())
    for _ in range(6):
        got += drain(t, 2)
    assert sorted(got) == [b"a-new", b"b-new", b"c-new"]
    t.close()


def test_glob_over_date_stamped_logs_forgets_names_it_no_longer_needs(tmp_path: Path) -> None:
    # one new file a day, the old one deleted: what the tailer remembers about names
    # (to watch their rotated siblings) must not grow with the days
    t = Tailer(str(tmp_path / "proxy-*.log"), read_from="beginning", max_line_bytes=MAX, rotated_idle_polls=1)
    got: list[bytes] = []
    for day in range(200):
        (tmp_path / f"proxy-{day:04d}.log").write_bytes(b"day-%04d\n" % day)
        got += drain(t, 2)
        if day:
            (tmp_path / f"proxy-{day - 1:04d}.log").unlink()
    got += drain(t, 3)
    assert got == [b"day-%04d" % day for day in range(200)]
    assert sum(len(names) for names in t._bases.values()) == 1  # white-box: the bound itself
    t.close()


def test_name_of_a_rotated_away_file_is_still_watched_for_siblings(tmp_path: Path) -> None:
    t = Tailer(str(tmp_path / "*.log"), read_from="beginning", max_line_bytes=MAX, rotated_idle_polls=1)
    log = tmp_path / "a.log"
    log.write_bytes(b"a1\n")
    assert drain(t, 1) == [b"a1"]
    os.rename(log, tmp_path / "a.log.1")
    assert drain(t, 3) == [] and t.open_files == 0  # drained and closed; a.log missing
    # between two polls a new a.log is written and rotated away, as logrotate would
    log.write_bytes(b"b1\n")
    os.rename(tmp_path / "a.log.1", tmp_path / "a.log.2")
    os.rename(log, tmp_path / "a.log.1")
    assert drain(t, 3) == [b"b1"]
    assert t.stats.siblings_recovered == 1
    t.close()


def _numbered(prefix: str, first: int, n: int) -> bytes:
    """n distinct lines of about 40 bytes; each file's first line is unique to it."""
    return b"".join(b"%s line %06d .............................\n" % (prefix.encode(), i)
                    for i in range(first, first + n))


@pytest.mark.parametrize("new_size", [64, 4096])
def test_changed_fingerprint_bytes_neither_rereads_nor_skips(tmp_path: Path, new_size: int) -> None:
    """Positions saved under fingerprint_bytes=1024, restored under a smaller and a larger
    size: the live file goes on after its last line, the rotated (done) one is not read
    again, a copy of it is still recognised as one, and a truncation is still seen. The
    saved fingerprints then have the new size (or the file's, when it is shorter)."""
    log, old = tmp_path / "access.log", tmp_path / "access.log.1"
    log.write_bytes(_numbered("a", 0, 200))  # ~8 KB: longer than every size used here
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX, fingerprint_bytes=1024, rotated_idle_polls=1)
    assert drain(t, 2) == _numbered("a", 0, 200).splitlines()
    os.rename(log, old)
    log.write_bytes(_numbered("b", 0, 100))
    assert drain(t, 4) == _numbered("b", 0, 100).splitlines()
    saved = json.loads(json.dumps(t.checkpoint()))
    t.close()

    def by_file(entries: list[dict[str, Any]]) -> list[tuple[str, int, bool]]:
        names = {p.stat().st_ino: p.name for p in tmp_path.iterdir()}
        return sorted((names[e["ino"]], e["fp_len"], e["done"]) for e in entries)

    assert by_file(saved) == [("access.log", 1024, False), ("access.log.1", 1024, True)]

    append(log, _numbered("b", 100, 5))
    t2 = Tailer(str(log), read_from="beginning", max_line_bytes=MAX, saved=saved, fingerprint_bytes=new_size,
                rotated_idle_polls=1)
    assert drain(t2, 3) == _numbered("b", 100, 5).splitlines()  # exactly the new lines
    shutil.copyfile(old, tmp_path / "access.log.2")  # a copy of the done file shows up
    assert drain(t2, 3) == []
    assert (t2.stats.truncations, t2.stats.siblings_recovered, t2.stats.copies_found, t2.stats.saved_dropped) == (
        0, 0, 0, 0)
    assert by_file(t2.checkpoint()) == [
        ("access.log", new_size, False), ("access.log.1", new_size, True), ("access.log.2", new_size, True)]
    # The fingerprint still sees a rewrite in place (copytruncate) at the new size.
    log.write_bytes(b"c fresh\n")
    assert drain(t2, 2) == [b"c fresh"]
    assert t2.stats.truncations == 1
    t2.close()


def test_configured_limits_are_the_ones_applied(tmp_path: Path) -> None:
    """max_open_files, rotated_idle_polls and fingerprint_bytes as given, each counted."""
    for name in "abcde":
        (tmp_path / f"{name}.log").write_bytes(_numbered(name, 0, 30))
    t = Tailer(str(tmp_path / "*.log"), read_from="beginning", max_line_bytes=MAX, max_open_files=2,
               rotated_idle_polls=3, fingerprint_bytes=100)
    got: list[bytes] = []
    for _ in range(12):
        got += lines_of(t.poll(1 << 20))
        assert t.open_files <= 2
    assert sorted(got) == sorted(line for n in "abcde" for line in _numbered(n, 0, 30).splitlines())
    # Files c, d, e could not be opened at the first scan (2 slots, none idle yet).
    assert t.stats.open_limit_hits >= 3 and t.stats.files_closed >= 3
    assert {e["fp_len"] for e in t.checkpoint()} == {100}
    t.close()
    # rotated_idle_polls: a rotated file stays open for exactly that many idle polls.
    log = tmp_path / "r.log"
    log.write_bytes(b"r1\n")
    t = Tailer(str(log), read_from="beginning", max_line_bytes=MAX, rotated_idle_polls=3)
    assert drain(t, 1) == [b"r1"]
    os.rename(log, tmp_path / "r.log.1")
    open_after = []
    for _ in range(4):
        t.poll(1 << 20)
        open_after.append(t.open_files)
    assert open_after == [1, 1, 0, 0]  # idle polls 1, 2 keep it; the 3rd closes it
    t.close()


def test_restore_under_a_lower_open_file_limit_parks_the_extra_files(tmp_path: Path) -> None:
    """Positions saved with five files open, restored with max_open_files = 2 (a restart
    or reload that lowered it): at most 2 open from the start, the others wait (counted)
    and every line written after the checkpoint is read exactly once."""
    for name in "abcde":
        (tmp_path / f"{name}.log").write_bytes(_numbered(name, 0, 10))
    t = Tailer(str(tmp_path / "*.log"), read_from="beginning", max_line_bytes=MAX)
    assert len(drain(t, 2)) == 50 and t.open_files == 5
    saved = t.checkpoint()
    t.close()
    for name in "abcde":
        append(tmp_path / f"{name}.log", _numbered(name, 10, 5))
    t2 = Tailer(str(tmp_path / "*.log"), read_from="beginning", max_line_bytes=MAX, saved=saved, max_open_files=2)
    assert t2.open_files == 2 and t2.stats.open_limit_hits >= 3
    got: list[bytes] = []
    for _ in range(12):
        got += lines_of(t2.poll(1 << 20))
        assert t2.open_files <= 2
    assert sorted(got) == sorted(line for n in "abcde" for line in _numbered(n, 10, 5).splitlines())
    assert t2.stats.saved_dropped == 0
    t2.close()
