"""File identity: fingerprints over real files, growth upgrades, inode reuse."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from agent.fileid import Fingerprint, key_of, read_prefix


def sha1(b: bytes) -> str:
    return hashlib.sha1(b).hexdigest()


def test_fingerprint_of_and_match() -> None:
    fp = Fingerprint.of(b"hello world")
    assert (fp.length, fp.digest) == (11, sha1(b"hello world"))
    assert fp.matches(b"hello world and more")
    assert not fp.matches(b"hello")  # shorter than covered: cannot match
    assert not fp.matches(b"HELLO world and more")


def test_upgrade_grows_until_want_and_detects_rewrites() -> None:
    fp = Fingerprint.of(b"abc")
    up = fp.upgrade(b"abcdefgh", want=5)
    assert up == Fingerprint(5, sha1(b"abcde"))
    assert up.upgrade(b"abcdefghijkl", want=5) is up  # already full
    assert fp.upgrade(b"abc", want=5) is fp  # no growth
    assert fp.upgrade(b"xbcdefgh", want=5) is None  # covered bytes changed
    assert fp.upgrade(b"ab", want=5) is None  # truncated below the covered bytes


def test_empty_fingerprint_matches_any_content() -> None:
    empty = Fingerprint.of(b"")
    assert empty == Fingerprint(0, sha1(b""))
    assert empty.matches(b"") and empty.matches(b"anything")


def test_read_prefix_on_real_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    fd = os.open(p, os.O_RDONLY)
    try:
        assert read_prefix(fd, 4) == b"0123"
        assert read_prefix(fd, 100) == b"0123456789"
        assert read_prefix(fd, 0) == b""
    finally:
        os.close(fd)


def test_inode_reuse_is_told_apart_by_fingerprint(tmp_path: Path) -> None:
    # Delete + create often hands out the same inode again; the fingerprint must differ.
    p = tmp_path / "access.log"
    p.write_bytes(b"1700000000.000 first file line\n")
    st1 = p.stat()
    fp1 = Fingerprint.of(p.read_bytes()[:1024])
    p.unlink()
    p.write_bytes(b"1700000999.000 second file line\n")
    st2 = p.stat()
    same_key = key_of(st1) == key_of(st2)
    assert not fp1.matches(p.read_bytes()[:1024])
    # whether or not the kernel reused the inode, identity = key + fingerprint differs
    assert not (same_key and fp1.matches(p.read_bytes()))
