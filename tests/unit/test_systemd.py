"""sd_notify: READY=1 after discovery, watchdog pings on the clock."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.ops import systemd


class FakeGateway:
    def __init__(self) -> None:
        self.ready: Deferred[None] = Deferred()

    def when_ready(self) -> Deferred[None]:
        return self.ready


class NotifyTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="sdn", dir="/tmp")  # AF_UNIX paths are short
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.addCleanup(self.sock.close)

    def received(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def test_readyAfterDiscoveryAndWatchdog(self) -> None:
        clock = Clock()
        gateway = FakeGateway()
        env = {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
        loop = systemd.start(gateway, clock, env)
        self.assertEqual(self.received(), ["WATCHDOG=1"])
        gateway.ready.callback(None)
        self.assertEqual(self.received(), ["READY=1\nSTATUS=discovery finished"])
        clock.advance(5)
        self.assertEqual(self.received(), ["WATCHDOG=1"])
        loop.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_nothingOutsideSystemd(self) -> None:
        self.assertIsNone(systemd.start(FakeGateway(), Clock(), {}))
        self.assertFalse(systemd.notify("READY=1", {}))

    def test_watchdogForAnotherPidIsNotOurs(self) -> None:
        env = {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
        self.assertIsNone(systemd.start(FakeGateway(), Clock(), env))
