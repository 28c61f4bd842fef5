"""systemd's notify protocol without a dependency: READY=1, WATCHDOG=1, STOPPING=1.

Under `Type=notify` systemd passes a datagram socket in `$NOTIFY_SOCKET`; the service says
READY=1 once it listens and, when the unit sets `WatchdogSec=`, WATCHDOG=1 at least every
half of `$WATCHDOG_USEC`, so a wedged event loop gets the process restarted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `message` to systemd if it is listening; whether it was sent."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc.strerror)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half the unit's WatchdogSec), or None if none is due."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def keep_watchdog_fed(interval: float) -> None:
    """Ping the watchdog every `interval` seconds while the event loop runs (until cancelled)."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
