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
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from twisted_mcp.config import GatewaySettings
from twisted_mcp.dispatch.caller import Caller
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.admission import Admission
from twisted_mcp.mcp import errors
from twisted_mcp.policy.peers import Peer, peer_of, with_certificate
from twisted_mcp.wire._writer import batch, writer_for
from twisted_mcp.wire.framing import LineFramer
from twisted_mcp.wire.jsonrpc import INVALID_REQUEST, MessageError, decode, encode, encode_or_explain

log = Logger()


def deliver(session: ClientSession, line: bytes) -> None:
    """Decode one line from the client and hand the message, or why it could not be decoded, to its session."""
    try:
        message = decode(line)
    except MessageError as e:
        session.undecodable(e)
        return
    session.message_received(message)


def line_caller(write: Callable[[bytes], None], label: str, peer: Any = None, progress: "ProgressHold | None" = None) -> Caller:
    """
    A caller whose messages are written as lines (NDJSON) by C{write};
    progress notifications go through C{progress}, which may coalesce them
    while the client does not read.
    """

    def send(message: dict[str, Any], related: Any = None, progress_of: Any = None) -> int:
        data, why = encode_or_explain(message)
        if why is not None:
            log.error("could not encode a message for the client: {why}", why=why)
        if data is None:
            return 0
        if progress_of is not None and progress is not None:
            progress.send(progress_of, data)
        else:
            write(data)
        return len(data)

    caller = Caller(label, send, peer)
    if progress is not None:
        caller.call_ended = progress.end
    return caller


class ProgressHold:
    """
    Progress notifications toward one client, coalesced while it does not
    read: while its transport is paused (more than a buffer's worth of
    output waiting), only the latest progress notification of each call is
    kept, and it is sent once the client catches up.  A call's answer makes
    its held progress stale, so it is dropped.  Answers are never held:
    they are bounded by the calls in flight (C{gateway.maxCallsInFlight}).
    """

    def __init__(self, write: Callable[[bytes], None], label: str) -> None:
        self._write = write
        self.label = label
        self.paused = False
        self.held: dict[Any, bytes] = {}
        #: Progress notifications dropped in this episode of not reading.
        self.dropped = 0

    def send(self, key: Any, data: bytes) -> None:
        if not self.paused:
            self._write(data)
            return
        if key in self.held:
            self._dropped_one()
        self.held[key] = data

    def end(self, key: Any) -> None:
        if self.held.pop(key, None) is not None:
            self._dropped_one()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        if self.dropped:
            log.info(
                "client {client} reads again; {n} progress notification(s) were dropped while it did not",
                client=self.label,
                n=self.dropped,
            )
            self.dropped = 0
        held, self.held = self.held, {}
        for key, data in held.items():
            self.send(key, data)  # held again if the client falls behind at once

    def _dropped_one(self) -> None:
        if not self.dropped:
            log.warn(
                "client {client} is not reading: keeping only the latest progress notification of each call "
                "until it reads again",
                client=self.label,
            )
        self.dropped += 1


@implementer(IHalfCloseableProtocol)
class SessionProtocol(LineFramer):
    """
    One client connection.

    Until the client says which era it speaks (its C{initialize}, or its
    first 2026-07-28 request), a message may be at most
    C{maxHandshakeBytes} long (C{maxMessageBytes} afterwards).  A socket
    client must also do so within C{handshakeTimeout}, and finish every
    message it begins within C{messageTimeout}.

    @param on_input_closed: called once the client has closed its side and
        every call in flight was answered (or cancelled after the grace
        period).
    """

    def __init__(
        self,
        gateway: Gateway,
        clock: IReactorTime,
        settings: GatewaySettings,
        label: str,
        on_input_closed: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.MAX_LENGTH = min(settings.maxHandshakeBytes, settings.maxMessageBytes)
        self.gateway = gateway
        self.clock = clock
        self.grace = settings.shutdownGrace
        self.label = label
        self.on_input_closed = on_input_closed
        self.session: ClientSession | None = None
        self.lost: Deferred[None] = Deferred()
        self._input_closed = False
        self._timer: IDelayedCall | None = None
        #: Messages received so far (tells a new unfinished message from an old one).
        self._messages = 0
        self._timed_messages = -1

    factory: Any = None
    #: The key this connection is counted under by the factory's L{Admission}.
    admitted: str | None = None

    def connectionMade(self) -> None:
        peer = None
        if self.factory is not None:
            peer = peer_of(self.transport, self.factory.listener)
            if not self._admit(peer):
                return
            self._tls = peer.transport == "tls"
        self.writer = writer_for(self.transport)
        write = self.writer.write
        if self.factory is not None and hasattr(self.writer, "queued"):
            # A socket client that does not read its answers must not make the
            # gateway buffer without bound (nor hold up anyone else).
            limit = max(4 * self.settings.maxMessageBytes, 1 << 20)
            writer = self.writer

            def write(data: bytes) -> None:
                writer.write(data)
                queued = writer.queued()
                if queued > limit:
                    self._stuck_client(queued)

        self.progress = ProgressHold(write, self.label)
        if hasattr(self.transport, "registerProducer"):
            # Told when the client stops reading (and when it reads again).
            self.transport.registerProducer(self, True)
        caller = line_caller(write, self.label, peer, self.progress)
        if self.factory is not None:
            caller.view = self.factory.view
        self.session = ClientSession(
            self.gateway,
            caller,
            self.settings.maxCallsInFlight,
            self.settings.maxListensPerSession,
        )
        if self.factory is not None:
            self.factory.connections.add(self)
            self._timer = self.clock.callLater(self.settings.handshakeTimeout, self._too_slow, "initialize (or a 2026-07-28 request)", "handshakeTimeout")
            log.info("client {client} connected ({peer})", client=self.label, peer=peer.describe() if peer else "")

    def _admit(self, peer: Peer) -> bool:
        """Count the connection against the limits, or refuse it with an error line."""
        key = peer_key(peer)
        refusal = self.factory.admission.enter(key)
        if refusal is None:
            self.admitted = key
            return True
        setting, value, why = refusal
        message = f"connection refused: {why}; try again later"
        self.transport.write(_error_line(errors.TOO_MANY_CONNECTIONS, message, {"limit": setting, "value": value}))
        self.transport.loseConnection()
        return False

    # IPushProducer: the transport's buffer toward the client is full, or drained.
    def pauseProducing(self) -> None:
        self.progress.pause()
        if self.factory is None and not self._input_closed:
            # stdio: stop reading the client's requests too (so the gateway
            # holds at most the answers of the calls already in flight),
            # and read again once it drains.  A socket client that falls
            # too far behind is disconnected instead (L{_stuck_client}).
            log.info("client {client} is not reading its answers: pausing its input", client=self.label)
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self.factory is None and not self._input_closed:
            self.transport.resumeProducing()
        self.progress.resume()

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

    def _too_slow(self, what: str, setting: str) -> None:
        self._timer = None
        seconds = getattr(self.settings, setting)
        log.warn(
            "client {client}: no {what} within {seconds:g} s ({setting}); disconnecting it",
            client=self.label,
            what=what,
            seconds=seconds,
            setting=setting,
        )
        why = f"Invalid Request: no {what} within {seconds:g} s (the gateway's {setting}); closing the connection"
        self.writer.write(_error_line(INVALID_REQUEST, why))
        # Not loseConnection: a client this slow may not read either.
        self.transport.abortConnection()

    @batch
    def dataReceived(self, data: bytes) -> None:
        if self.session is None:
            return  # a refused connection, closing
        LineFramer.dataReceived(self, data)
        if self.factory is not None and self.session.pinned:
            self._time_unfinished_message()

    def _time_unfinished_message(self) -> None:
        """A message begun must be finished within messageTimeout."""
        if not self.unfinished():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is None or self._timed_messages != self._messages:
            # A new unfinished message: its time starts now.
            if self._timer is not None:
                self._timer.cancel()
            self._timed_messages = self._messages
            self._timer = self.clock.callLater(
                self.settings.messageTimeout, self._too_slow, "end to the message it began", "messageTimeout"
            )

    _tls = False
    #: The session's era is said (its messages may be C{maxMessageBytes} long now).
    _pinned = False

    def lineReceived(self, line: bytes) -> None:
        session = self.session
        assert session is not None
        self._messages += 1
        if self._tls:
            # The handshake is over once a message arrives: read the client's certificate.
            self._tls = False
            session.peer = with_certificate(session.peer, self.transport)
            log.info("client {client}: {peer}", client=self.label, peer=session.peer.describe())
        if self._pinned:
            deliver(session, line)
            return
        deliver(session, line)
        if session.pinned:
            # Once: the era is said for good.
            self._pinned = True
            self.MAX_LENGTH = self.settings.maxMessageBytes
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def lineLengthExceeded(self, head: bytes, size: int) -> None:  # type: ignore[override]
        assert self.session is not None
        setting = "maxMessageBytes" if self.session.pinned else "maxHandshakeBytes"
        log.warn(
            "client {client}: discarded a message of more than {limit} bytes ({setting})",
            client=self.label,
            limit=self.MAX_LENGTH,
            setting=setting,
        )
        self.session.message_too_long(size, self.MAX_LENGTH, setting)

    def readConnectionLost(self, grace: float | None = None) -> None:
        if self._input_closed or self.session is None:
            return
        self._input_closed = True
        log.info("client {client}: input closed", client=self.label)
        d = self.session.drain(self.grace if grace is None else grace, self.clock)
        d.addCallback(lambda _: self.on_input_closed and self.on_input_closed())
        d.addErrback(lambda f: log.failure("client {client}: closing failed", f, client=self.label))

    def writeConnectionLost(self) -> None:
        # The client no longer reads: nothing we could answer would arrive.
        log.info("client {client}: output closed", client=self.label)
        self.readConnectionLost(grace=0)

    def connectionLost(self, reason: Any = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.factory is not None:
            # A socket client that is gone: its calls cannot be answered.
            self.factory.connections.discard(self)
            if self.admitted is not None:
                self.factory.admission.leave(self.admitted)
                self.admitted = None
            self.readConnectionLost(grace=0)
        else:
            self.readConnectionLost()
        if not self.lost.called:
            self.lost.callback(None)

    def close(self) -> None:
        """Close the connection once its output is flushed."""
        if self.transport is None:
            return
        if hasattr(self.transport, "unregisterProducer"):
            # A paused producer would keep the transport from ever closing.
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def stop(self, grace: float) -> Deferred[None]:
        """Drain the session, then close the connection (flushing output)."""
        assert self.session is not None
        d = self.session.drain(grace, self.clock)

        def close(_: Any) -> Deferred[None]:
            if self.lost.called or self.transport is None:
                return succeed(None)
            self.close()
            bound = self.clock.callLater(2.0, lambda: self.lost.called or self.lost.callback(None))
            return self.lost.addCallback(lambda r: (bound.active() and bound.cancel(), r)[1])

        return d.addCallback(close)


def _error_line(code: int, message: str, data: Any = None) -> bytes:
    """A JSON-RPC error about the connection itself (id null)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode({"jsonrpc": "2.0", "id": None, "error": error})


def peer_key(peer: Peer) -> str:
    """Whose connection this is, for maxClientsPerPeer: a uid, or an IP address."""
    if peer.uid is not None:
        return f"uid {peer.uid}"
    if peer.address:
        return peer.address.rpartition(":")[0]
    return f"{peer.transport} peer"


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
        settings: GatewaySettings,
        connect: Callable[[SessionProtocol], Any],
        on_client_gone: Callable[[], None],
    ) -> None:
        self.protocol = SessionProtocol(gateway, clock, settings, "stdio", on_client_gone)
        self._connect = connect
        self._grace = settings.shutdownGrace

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

    @param admission: counts the clients of every listener (connection limits).
    @param view: the profile every connection serves (C{--listen
        profile:<name>:...}); None: the default view.
    """

    noisy = False

    def __init__(
        self,
        gateway: Gateway,
        clock: IReactorTime,
        settings: GatewaySettings,
        admission: Admission,
        label: str,
        listener: str | None = None,
        view: str | None = None,
    ) -> None:
        self.gateway = gateway
        self.view = view
        #: The endpoint description clients connect to (for identity.listeners).
        self.listener = listener
        self.clock = clock
        self.settings = settings
        self.admission = admission
        self.grace = settings.shutdownGrace
        self.label = label
        self.count = 0
        self.connections: set[SessionProtocol] = set()

    def buildProtocol(self, addr: Any) -> SessionProtocol:
        self.count += 1
        p = SessionProtocol(self.gateway, self.clock, self.settings, f"{self.label}#{self.count}")
        p.factory = self
        # The client closed its side and every call was answered: close ours.
        p.on_input_closed = p.close
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
