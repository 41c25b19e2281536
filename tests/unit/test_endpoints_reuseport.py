"""
Tests for C{reusePort=yes} on C{tcp:} and C{tcp6:} listeners
(L{twisted_mcp.frontends.endpoints.ReusePortEndpoint}): the parameters
checked, the socket options set, two listeners sharing one port, and no
descriptor left behind.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from typing import Any

import pytest
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.pollreactor import PollReactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.frontends.endpoints import ReusePortEndpoint, _reuse_port, reuse_port_supported, server_endpoint

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT load-balances only on Linux")


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _close(reactor: Any) -> None:
    """A reactor that never ran: its waker's pipe closed."""
    reactor.removeReader(reactor.waker)
    reactor.waker.connectionLost(None)


class _Adopting(MemoryReactor):
    """A MemoryReactor that also inspects the socket it is handed, as the real reactor would adopt it."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[tuple[int, int, Any, bool]] = []

    def adoptStreamPort(self, fileno: int, addressFamily: Any, factory: Any) -> Any:
        probe = socket.socket(fileno=os.dup(fileno))
        try:
            self.options.append(
                (
                    probe.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR),
                    probe.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
                    probe.getsockname(),
                    bool(fcntl.fcntl(fileno, fcntl.F_GETFL) & os.O_NONBLOCK),
                )
            )
        finally:
            probe.close()
        return super().adoptStreamPort(fileno, addressFamily, factory)


class ParseTests(SynchronousTestCase):
    def test_yes(self) -> None:
        endpoint = server_endpoint(MemoryReactor(), "tcp:8080:interface=127.0.0.1:backlog=7:reusePort=yes")
        assert isinstance(endpoint, ReusePortEndpoint)
        assert (endpoint.port, endpoint.backlog, endpoint.interface, endpoint.family) == (8080, 7, "127.0.0.1", socket.AF_INET)

    def test_portKeyword_and_tcp6(self) -> None:
        endpoint = server_endpoint(MemoryReactor(), "tcp6:port=8081:reusePort=true")
        assert (endpoint.port, endpoint.interface, endpoint.family) == (8081, "::", socket.AF_INET6)
        escaped = server_endpoint(MemoryReactor(), r"tcp6:8082:interface=\:\:1:reusePort=yes")
        assert escaped.interface == "::1"

    def test_no_isTwistedsOwnEndpoint(self) -> None:
        endpoint = server_endpoint(MemoryReactor(), "tcp:8080:interface=127.0.0.1:reusePort=no")
        assert isinstance(endpoint, TCP4ServerEndpoint)
        assert endpoint._port == 8080 and endpoint._interface == "127.0.0.1"

    def test_withoutIt_nothingChanges(self) -> None:
        assert isinstance(server_endpoint(MemoryReactor(), "tcp:8080"), TCP4ServerEndpoint)

    def test_badValues(self) -> None:
        for description, expected in (
            ("tcp:8080:reusePort=maybe", "reusePort must be yes or no, not 'maybe'"),
            ("tcp:8080:reusePort=", "reusePort must be yes or no, not ''"),
            ("unix:/tmp/x.sock:reusePort=yes", "reusePort is a parameter of tcp: and tcp6: endpoints only, not of unix:"),
            ("ssl:8443:reusePort=yes", "reusePort is a parameter of tcp: and tcp6: endpoints only, not of ssl:"),
            ("tcp:8080:reusePort=yes:mode=600", "unknown tcp: parameter(s) with reusePort: mode"),
            ("tcp:http:reusePort=yes", "tcp: needs a port number, got 'http'"),
            ("tcp:reusePort=yes", "tcp: needs a port number, got ''"),
            ("tcp:70000:reusePort=yes", "tcp: port 70000 is out of range (0 to 65535)"),
            ("tcp:8080:8081:reusePort=yes", "tcp: takes one port"),
            ("tcp:8080:backlog=many:reusePort=yes", "backlog must be a number, not 'many'"),
            ("tcp:8080:backlog=0:reusePort=yes", "backlog must be at least 1, not 0"),
        ):
            with pytest.raises(ValueError) as e:
                server_endpoint(MemoryReactor(), description)
            assert str(e.value).startswith(expected), (description, str(e.value))

    def test_notLinux(self) -> None:
        with pytest.raises(ValueError) as e:
            _reuse_port(MemoryReactor(), "tcp:8080:reusePort=yes", platform="darwin")
        assert str(e.value).startswith("reusePort=yes needs Linux")
        assert "this system is darwin" in str(e.value)
        assert reuse_port_supported("freebsd13") is not None
        # "no" needs nothing of the system.
        assert isinstance(_reuse_port(MemoryReactor(), "tcp:8080:reusePort=no", platform="darwin"), TCP4ServerEndpoint)


@linux_only
class ListenTests(SynchronousTestCase):
    def test_socketOptions_andTheDescriptorClosed(self) -> None:
        reactor = _Adopting()
        before = _open_fds()
        d = ReusePortEndpoint(reactor, 0, 5, "127.0.0.1").listen(Factory.forProtocol(Protocol))
        port = self.successResultOf(d)
        assert _open_fds() == before  # the reactor's copy is its own (MemoryReactor keeps none)
        [(reuse_addr, reuse_port, (host, number), nonblocking)] = reactor.options
        assert (reuse_addr != 0, reuse_port != 0, host, nonblocking) == (True, True, "127.0.0.1", True)
        assert number > 0
        assert len(reactor.adoptedPorts) == 1 and reactor.adoptedPorts[0][1] == socket.AF_INET
        assert port.getHost().type == "TCP"

    def test_twoListenersShareAPort(self) -> None:
        reactor = PollReactor()
        first = self.successResultOf(ReusePortEndpoint(reactor, 0, 5, "127.0.0.1").listen(Factory.forProtocol(Protocol)))
        try:
            number = first.getHost().port
            second = self.successResultOf(
                ReusePortEndpoint(reactor, number, 5, "127.0.0.1").listen(Factory.forProtocol(Protocol))
            )
            assert second.getHost().port == number
            second.stopListening()
        finally:
            first.stopListening()
            reactor.runUntilCurrent()
            _close(reactor)

    def test_aPortHeldWithoutReusePortIsRefused(self) -> None:
        plain = socket.socket()
        try:
            plain.bind(("127.0.0.1", 0))
            plain.listen(1)
            before = _open_fds()
            d = ReusePortEndpoint(MemoryReactor(), plain.getsockname()[1], 5, "127.0.0.1").listen(Factory.forProtocol(Protocol))
            failure = self.failureResultOf(d, CannotListenError)
            assert "Address already in use" in str(failure.value)
            assert _open_fds() == before
        finally:
            plain.close()

    def test_stopListeningClosesTheReactorsCopy(self) -> None:
        reactor = PollReactor()
        try:
            for round in range(2):  # the first opens Twisted's reserve descriptor (/dev/null, for EMFILE), once
                before = _open_fds()
                port = self.successResultOf(ReusePortEndpoint(reactor, 0, 5, "127.0.0.1").listen(Factory.forProtocol(Protocol)))
                if round:
                    assert len(_open_fds() - before) == 1  # the reactor's own copy, nothing more
                stopped = port.stopListening()
                reactor.runUntilCurrent()
                self.successResultOf(stopped)
            assert _open_fds() == before
        finally:
            _close(reactor)
