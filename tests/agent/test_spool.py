import json
import os
import shutil
from pathlib import Path

import msgpack

from agent.spool import CHECKPOINT_FILE, Spool


def cp(n: int) -> dict:
    return {"/var/log/a.log": [{"dev": 1, "ino": 2, "offset": n}]}


def test_agent_id_is_created_once_and_kept(tmp_path: Path) -> None:
    a = Spool(tmp_path, 1 << 20).agent_id
    b = Spool(tmp_path, 1 << 20).agent_id
    assert a == b and len(a) == 16
    assert (tmp_path / "agent-id").read_text().strip() == a
    assert Spool(tmp_path / "other", 1 << 20).agent_id != a


def test_append_survives_restart_with_original_keys_in_order(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1 << 20)
    e1 = s.append(b"body-1", cp(10), rows=3, profiles=1)
    e2 = s.append(b"body-2", cp(20), rows=4, profiles=0)
    assert (e1.seq, e2.seq) == (1, 2)
    assert e1.key == f"{s.agent_id}:1" and e2.key == f"{s.agent_id}:2"

    again = Spool(tmp_path, 1 << 20)  # as after kill -9
    assert [(e.seq, e.key, e.rows, e.profiles) for e in again.pending] == [
        (1, e1.key, 3, 1),
        (2, e2.key, 4, 0),
    ]
    assert again.pending[0].read() == (b"body-1", cp(10))
    assert again.resume_checkpoints() == cp(20)  # newest spooled positions
    assert again.next_seq == 3
    assert again.bytes == sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.batch"))


def test_ack_persists_checkpoint_then_deletes(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1 << 20)
    e1 = s.append(b"b1", cp(10), 1, 0)
    s.append(b"b2", cp(20), 1, 0)
    s.ack(e1)
    assert json.loads((tmp_path / CHECKPOINT_FILE).read_text()) == {"seq": 1, "checkpoints": cp(10)}
    assert not e1.path.exists()
    s.ack(s.pending[0])
    assert s.pending == [] and s.bytes == 0

    again = Spool(tmp_path, 1 << 20)
    assert again.pending == []
    assert again.resume_checkpoints() == cp(20)
    assert again.next_seq == 3  # sequences are never reused


def test_crash_between_ack_and_delete_does_not_resend(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1 << 20)
    e1 = s.append(b"b1", cp(10), 1, 0)
    saved = tmp_path / "copy"
    shutil.copy(e1.path, saved)
    s.ack(e1)
    shutil.copy(saved, e1.path)  # the unlink "did not happen"
    again = Spool(tmp_path, 1 << 20)
    assert again.pending == [] and not e1.path.exists()
    assert again.next_seq == 2


def test_dead_letter_keeps_batch_and_reason_and_advances_checkpoint(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1 << 20)
    e1 = s.append(b"bad", cp(10), 2, 0, 3)
    target = s.dead_letter(e1, 400, "logs[0].ts: not a timestamp")
    assert target == tmp_path / "spool" / "dead-letter" / e1.path.name
    assert msgpack.unpackb(target.read_bytes())["body"] == b"bad"
    reason = json.loads(target.with_suffix(".reason").read_text())
    assert reason == {"key": e1.key, "status": 400, "reason": "logs[0].ts: not a timestamp", "rows": 2,
                      "activity": 3}
    assert json.loads((tmp_path / CHECKPOINT_FILE).read_text())["checkpoints"] == cp(10)
    again = Spool(tmp_path, 1 << 20)
    assert again.pending == [] and again.next_seq == 2


def test_crash_between_dead_letter_move_and_checkpoint_is_completed(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1 << 20)
    e1 = s.append(b"b1", cp(10), 1, 0)
    s.ack(e1)
    e2 = s.append(b"bad", cp(20), 1, 0)
    s.append(b"b3", cp(30), 1, 0)
    os.replace(e2.path, tmp_path / "spool" / "dead-letter" / e2.path.name)  # move done, checkpoint not
    again = Spool(tmp_path, 1 << 20)
    assert json.loads((tmp_path / CHECKPOINT_FILE).read_text())["seq"] == 2
    assert [e.seq for e in again.pending] == [3]
    assert again.next_seq == 4


def test_full_when_pending_bytes_reach_cap_and_frees_on_ack(tmp_path: Path) -> None:
    s = Spool(tmp_path, 400)
    assert not s.full
    e1 = s.append(b"x" * 200, cp(1), 1, 0)
    assert not s.full
    s.append(b"y" * 200, cp(2), 1, 0)
    assert s.full and s.bytes == sum(e.size for e in s.pending) >= 400
    s.ack(e1)
    assert not s.full


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    Spool(tmp_path, 100)
    stale = tmp_path / "spool" / ".tmp-0000000000000001.batch"
    stale.write_bytes(b"half")
    s = Spool(tmp_path, 100)
    assert not stale.exists() and s.pending == [] and s.next_seq == 1


class SyscallLog:
    """Records the file-system calls the spool makes (the real calls still happen)."""

    def __init__(self, monkeypatch, root: Path) -> None:  # type: ignore[no-untyped-def]
        self.root = root
        self.calls: list[tuple[str, str]] = []
        self.fds: dict[int, str] = {}
        real_open, real_fsync, real_replace, real_unlink = os.open, os.fsync, os.replace, os.unlink

        def rel(p: object) -> str:
            return os.path.relpath(os.fspath(p), root)  # type: ignore[arg-type]

        def open_(path, flags, *args, **kw):  # type: ignore[no-untyped-def]
            fd = real_open(path, flags, *args, **kw)
            self.fds[fd] = rel(path)
            if flags & os.O_CREAT:
                self.calls.append(("create", rel(path)))
            return fd

        def fsync(fd: int) -> None:
            real_fsync(fd)
            self.calls.append(("fsync", self.fds[fd]))

        def replace(src, dst) -> None:  # type: ignore[no-untyped-def]
            real_replace(src, dst)
            self.calls.append(("rename", f"{rel(src)} -> {rel(dst)}"))

        def unlink(path, *args, **kw) -> None:  # type: ignore[no-untyped-def]
            real_unlink(path, *args, **kw)
            self.calls.append(("unlink", rel(path)))

        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "unlink", unlink)


def test_append_ack_and_dead_letter_write_atomically_in_order(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    s = Spool(tmp_path, 1 << 20)
    sys_log = SyscallLog(monkeypatch, tmp_path)
    e1 = s.append(b"b1", cp(10), 1, 0)
    name = e1.path.name
    # temp file, fsync it, rename over the final name, fsync the directory
    assert sys_log.calls == [
        ("create", f"spool/.tmp-{name}"),
        ("fsync", f"spool/.tmp-{name}"),
        ("rename", f"spool/.tmp-{name} -> spool/{name}"),
        ("fsync", "spool"),
    ]
    sys_log.calls.clear()
    s.ack(e1)
    # the acknowledged positions are durable BEFORE the batch is deleted
    assert sys_log.calls == [
        ("create", ".tmp-checkpoint.json"),
        ("fsync", ".tmp-checkpoint.json"),
        ("rename", ".tmp-checkpoint.json -> checkpoint.json"),
        ("fsync", "."),
        ("unlink", f"spool/{name}"),
        ("fsync", "spool"),
    ]
    e2 = s.append(b"b2", cp(20), 1, 0)
    sys_log.calls.clear()
    s.dead_letter(e2, 400, "bad")
    n2 = e2.path.name
    reason = n2.replace(".batch", ".reason")
    assert sys_log.calls == [
        ("create", f"spool/dead-letter/.tmp-{reason}"),
        ("fsync", f"spool/dead-letter/.tmp-{reason}"),
        ("rename", f"spool/dead-letter/.tmp-{reason} -> spool/dead-letter/{reason}"),
        ("fsync", "spool/dead-letter"),
        ("rename", f"spool/{n2} -> spool/dead-letter/{n2}"),
        ("fsync", "spool/dead-letter"),
        ("fsync", "spool"),
        ("create", ".tmp-checkpoint.json"),
        ("fsync", ".tmp-checkpoint.json"),
        ("rename", ".tmp-checkpoint.json -> checkpoint.json"),
        ("fsync", "."),
    ]


def test_crash_before_the_rename_leaves_no_batch_and_the_old_positions(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    s = Spool(tmp_path, 1 << 20)
    s.ack(s.append(b"b1", cp(10), 1, 0))
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()

    def crash(src, dst) -> None:  # type: ignore[no-untyped-def]
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", crash)
    try:
        s.append(b"b2", cp(20), 1, 0)
    except OSError:
        pass
    else:
        raise AssertionError("the rename did not run")
    monkeypatch.undo()
    names = sorted(f.name for f in (tmp_path / "spool").iterdir() if f.is_file())
    assert names == [".tmp-0000000000000002.batch"]  # only the temp file exists
    again = Spool(tmp_path, 1 << 20)
    assert again.pending == [] and list((tmp_path / "spool").glob(".tmp-*")) == []
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
    assert again.resume_checkpoints() == cp(10)  # the lines of b2 are simply read again


def test_activity_count_survives_a_restart_and_an_activity_only_batch_is_not_empty(tmp_path: Path) -> None:
    """The spool file records how many activity records its body holds: after a restart
    an entry of activity records alone (no rows, no profiles) is still a batch to send."""
    s = Spool(tmp_path, 1 << 20)
    only_activity = s.append(b"a", cp(1), 0, 0, 5)
    positions = s.append(b"p", cp(2), 0, 0)
    assert (only_activity.empty, positions.empty) == (False, True)
    again = Spool(tmp_path, 1 << 20)
    assert [(e.rows, e.profiles, e.activity, e.empty) for e in again.pending] == [(0, 0, 5, False), (0, 0, 0, True)]


def test_spool_files_of_earlier_versions_have_no_activity(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1 << 20)
    e = s.append(b"old", cp(1), 4, 1)
    obj = msgpack.unpackb(e.path.read_bytes())
    del obj["activity"]  # written before activity records existed
    e.path.write_bytes(msgpack.packb(obj, use_bin_type=True))
    (entry,) = Spool(tmp_path, 1 << 20).pending
    assert (entry.rows, entry.profiles, entry.activity, entry.empty) == (4, 1, 0, False)
