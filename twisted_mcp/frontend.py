"""
Client front-ends: how client bytes reach a L{ClientSession}.

L{SessionProtocol} frames newline-delimited JSON-RPC with L{LineFramer}
(the design card's LineReceiver) for one client connection.  On stdio it
is half-closeable: when the client closes stdin, calls in flight still get
their answers (within the grace period) before the gateway stops.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from twisted_mcp._writer import batch, writer_for
from twisted_mcp.framing import LineFramer
from twisted_mcp.gateway import ClientSession, Gateway
from twisted_mcp.policy.peers import peer_of, with_certificate

log = Logger()


@implementer(IHalfCloseableProtocol)
class SessionProtocol(LineFramer):
    """
    One client connection.

    @param on_input_closed: called once the client has closed its side and
        every call in flight was answered (or cancelled after the grace
        period).
    """

    def __init__(
        self,
        gateway: Gateway,
        clock: IReactorTime,
        max_length: int,
        grace: float,
        label: str,
        on_input_closed: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.MAX_LENGTH = max_length
        self.gateway = gateway
        self.clock = clock
        self.grace = grace
        self.label = label
        self.on_input_closed = on_input_closed
        self.session: ClientSession | None = None
        self.lost: Deferred[None] = Deferred()
        self._input_closed = False

    factory: Any = None

    def connectionMade(self) -> None:
        self.writer = writer_for(self.transport)
        write = self.writer.write
        if self.factory is not None and hasattr(self.writer, "queued"):
            # A socket client that does not read its answers must not make the
            # gateway buffer without bound (nor hold up anyone else).
            limit = max(4 * self.MAX_LENGTH, 1 << 20)
            writer = self.writer

            def write(data: bytes) -> None:
                writer.write(data)
                if writer.queued() > limit:
                    self._stuck_client(writer.queued())

        if self.factory is None and hasattr(self.transport, "registerProducer"):
            # stdio: when the client stops reading its answers, stop reading
            # its requests (so the gateway's buffer holds at most the answers
            # of the calls already in flight), and read again once it drains.
            self.transport.registerProducer(self, True)
        peer = None
        if self.factory is not None:
            peer = peer_of(self.transport, self.factory.listener)
            self._tls = peer.transport == "tls"
        self.session = ClientSession(self.gateway, write, self.label, peer)
        if self.factory is not None:
            self.factory.connections.add(self)
            log.info("client {client} connected ({peer})", client=self.label, peer=peer.describe() if peer else "")

    # IPushProducer, for stdio's back-pressure.
    def pauseProducing(self) -> None:
        if not self._input_closed:
            log.info("client {client} is not reading its answers: pausing its input", client=self.label)
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if not self._input_closed:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass

    def _stuck_client(self, queued: int) -> None:
        if self.transport is None or getattr(self.transport, "disconnecting", False):
            return
        log.warn(
            "client {client} is not reading its answers ({queued} bytes waiting); disconnecting it",
            client=self.label,
            queued=queued,
        )
        self.transport.abortConnection()

    dataReceived = batch(LineFramer.dataReceived)

    _tls = False

    def lineReceived(self, line: bytes) -> None:
        session = self.session
        assert session is not None
        if self._tls:
            # The handshake is over once a message arrives: read the client's certificate.
            self._tls = False
            session.peer = with_certificate(session.peer, self.transport)
            log.info("client {client}: {peer}", client=self.label, peer=session.peer.describe())
        session.lineReceived(line)

    def lineLengthExceeded(self, head: bytes, size: int) -> None:  # type: ignore[override]
        assert self.session is not None
        log.warn(
            "client {client}: discarded a message of more than {limit} bytes",
            client=self.label,
            limit=self.MAX_LENGTH,
        )
        self.session.lineTooLong(size, self.MAX_LENGTH)

    def readConnectionLost(self, grace: float | None = None) -> None:
        if self._input_closed:
            return
        self._input_closed = True
        log.info("client {client}: input closed", client=self.label)
        assert self.session is not None
        d = self.session.drain(self.grace if grace is None else grace, self.clock)
        d.addCallback(lambda _: self.on_input_closed and self.on_input_closed())
        d.addErrback(lambda f: log.failure("client {client}: closing failed", f, client=self.label))

    def writeConnectionLost(self) -> None:
        # The client no longer reads: nothing we could answer would arrive.
        log.info("client {client}: output closed", client=self.label)
        self.readConnectionLost(grace=0)

    def connectionLost(self, reason: Any = None) -> None:
        if self.factory is not None:
            # A socket client that is gone: its calls cannot be answered.
            self.factory.connections.discard(self)
            self.readConnectionLost(grace=0)
        else:
            self.readConnectionLost()
        if not self.lost.called:
            self.lost.callback(None)

    def stop(self, grace: float) -> Deferred[None]:
        """Drain the session, then close the connection (flushing output)."""
        assert self.session is not None
        d = self.session.drain(grace, self.clock)

        def close(_: Any) -> Deferred[None]:
            if self.lost.called or self.transport is None:
                return succeed(None)
            self.transport.loseConnection()
            bound = self.clock.callLater(2.0, lambda: self.lost.called or self.lost.callback(None))
            return self.lost.addCallback(lambda r: (bound.active() and bound.cancel(), r)[1])

        return d.addCallback(close)


class StdioFrontend(Service):
    """
    Serves one client on the gateway's stdin/stdout.

    @param connect: builds the stdio transport for a protocol
        (C{lambda p: StandardIO(p, stdout=fd)}); the only reactor-bound part.
    @param on_client_gone: called when the client closed stdin and every
        call was answered: the gateway stops then.
    """

    name = "stdio"

    def __init__(
        self,
        gateway: Gateway,
        clock: IReactorTime,
        max_length: int,
        grace: float,
        connect: Callable[[SessionProtocol], Any],
        on_client_gone: Callable[[], None],
    ) -> None:
        self.protocol = SessionProtocol(gateway, clock, max_length, grace, "stdio", on_client_gone)
        self._connect = connect
        self._grace = grace

    def startService(self) -> None:
        super().startService()
        self._connect(self.protocol)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self.protocol.session is None:
            return succeed(None)
        return self.protocol.stop(self._grace)


class SessionFactory(Factory):
    """
    Serves any number of clients on a listening socket: each connection is
    its own MCP session (its own negotiated version, calls in flight and
    principal) over the shared backends.  A client that disconnects has
    its calls in flight cancelled at the backends.
    """

    noisy = False

    def __init__(
        self, gateway: Gateway, clock: IReactorTime, max_length: int, grace: float, label: str, listener: str | None = None
    ) -> None:
        self.gateway = gateway
        #: The endpoint description clients connect to (for identity.listeners).
        self.listener = listener
        self.clock = clock
        self.max_length = max_length
        self.grace = grace
        self.label = label
        self.count = 0
        self.connections: set[SessionProtocol] = set()

    def buildProtocol(self, addr: Any) -> SessionProtocol:
        self.count += 1
        p = SessionProtocol(self.gateway, self.clock, self.max_length, self.grace, f"{self.label}#{self.count}")
        p.factory = self
        # The client closed its side and every call was answered: close ours.
        p.on_input_closed = lambda: p.transport.loseConnection()
        return p


class SocketFrontend(Service):
    """
    A listening endpoint (a Twisted endpoint string such as
    C{unix:/run/twisted-mcp.sock:mode=660} or C{tcp:8765:interface=127.0.0.1}).
    Stopping it stops listening, then drains every connected session.
    """

    def __init__(self, description: str, port: Any, factory: SessionFactory) -> None:
        self.description = description
        self.port = port
        self.factory = factory

    def startService(self) -> None:
        super().startService()
        log.info("listening on {endpoint}", endpoint=self.description)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
        # Every session stops taking requests now; they drain together.
        stops = [_logged(p.stop(self.factory.grace)) for p in list(self.factory.connections)]
        await DeferredList(stops, consumeErrors=True)


def _logged(d: Deferred[Any]) -> Deferred[Any]:
    return d.addErrback(lambda f: log.failure("closing a client connection failed", f))
