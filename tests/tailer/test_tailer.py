"""The Tailer on real files: globs, read_from, limits, rotation, truncation, deletion, restarts."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

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
