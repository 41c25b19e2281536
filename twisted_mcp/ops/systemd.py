"""
systemd integration: C{sd_notify} without libsystemd.

When started by systemd with C{Type=notify}, the gateway says READY=1 once
every backend's first discovery has finished, and, when the unit sets
C{WatchdogSec=}, pings the watchdog at half that interval for as long as
the event loop turns (a stuck reactor stops the pings and systemd restarts
the service).  Outside systemd (no C{NOTIFY_SOCKET}) nothing happens.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify message; False when not under systemd (or it failed)."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
        return True
    except OSError as e:
        log.warn("could not notify systemd ({message}): {why}", message=message, why=e)
        return False


def start(gateway: Any, clock: Any, environ: Mapping[str, str] | None = None) -> Any:
    """READY=1 after discovery; a watchdog LoopingCall if WATCHDOG_USEC is set."""
    environ = os.environ if environ is None else environ
    if not environ.get("NOTIFY_SOCKET"):
        return None
    gateway.when_ready().addCallback(lambda _: notify("READY=1\nSTATUS=discovery finished", environ))
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None

    def ping() -> None:
        try:
            notify("WATCHDOG=1", environ)
        except Exception:  # a LoopingCall stops for good after one exception
            log.failure("watchdog ping failed")

    loop = LoopingCall(ping)
    loop.clock = clock
    loop.start(int(usec) / 2e6, now=True)
    return loop
