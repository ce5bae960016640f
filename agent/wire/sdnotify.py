"""systemd's notification protocol (sd_notify), with the standard library only.

`notify("READY=1")` sends one datagram to $NOTIFY_SOCKET (a path, or an abstract socket
when it starts with "@") and is a no-op returning False when the variable is unset, i.e.
outside a Type=notify unit. `watchdog_interval()` reads $WATCHDOG_USEC (honouring
$WATCHDOG_PID) and returns how often to send WATCHDOG=1: half the timeout, as
sd_watchdog_enabled(3) recommends.
"""

from __future__ import annotations

import asyncio
import os
import socket

READY = "READY=1"
STOPPING = "STOPPING=1"
RELOADING = "RELOADING=1"
WATCHDOG = "WATCHDOG=1"


def notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


async def watchdog_loop(interval: float) -> None:
    """Ping the watchdog forever from the event loop: a stuck loop stops the pings."""
    while True:
        notify(WATCHDOG)
        await asyncio.sleep(interval)
