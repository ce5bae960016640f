"""The event loop both services run on: uvloop when it is installed, asyncio's own
otherwise (uvloop is optional; everything works on either)."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """For `asyncio.Runner(loop_factory=...)`: uvloop's loop, or None (the stdlib's)."""
    try:
        import uvloop
    except ImportError:
        return None
    return typing.cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)


def loop_name() -> str:
    """`uvloop` or `asyncio`: which loop runs (both services log it at start)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
