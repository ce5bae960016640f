"""Fixtures for the real-proxy tests: the local origin, a work directory the proxies'
unprivileged users can write to, and the proxy binaries (installed by `make test`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxies.origin import Origin
from tests.proxies.stack import Stack


@pytest.fixture
def origin() -> Iterator[Origin]:
    # squid and glibc (dante) ask port 53; the responder takes it when it is free.
    o = Origin(dns_port=53)
    try:
        yield o
    finally:
        o.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh directory under the system temp dir, open to the users squid and dante
    drop to (pytest's tmp_path lives under a root-only 0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="proxymeter-proxies-"))
    os.chmod(d, 0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def stack_factory(workdir: Path) -> Iterator[list[Stack]]:
    """Holds the stacks a test starts, so teardown stops every child by pid."""
    stacks: list[Stack] = []
    try:
        yield stacks
    finally:
        for s in stacks:
            s.stop()
