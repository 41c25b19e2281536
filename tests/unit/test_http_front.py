"""
Tests for the Streamable HTTP front (L{twisted_mcp.frontends.http}): every
status it answers, how answers choose JSON or SSE, which stream carries what,
sessions (minting, ownership, expiry, limits), cancellation when a client
closes its POST, and slow streams cut; over a real L{McpSite} on a
L{StringTransport}, with a L{Clock} and fake backends.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import GatewaySettings
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.frontends.http import McpSite, http_site
from twisted_mcp.frontends.http_config import HttpSettings, parse_http
from twisted_mcp.frontends.http_sessions import SESSION_ID_RE, SessionTable, mint_session_id, owner_of
from twisted_mcp.policy.peers import Peer

from .fakes import FakeBackend

LOOPBACK = IPv4Address("TCP", "127.0.0.1", 8080)
JSON_AND_SSE = "application/json, text/event-stream"
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}}}


def call(rid: Any, text: str = "hi", token: Any = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "alpha__echo", "arguments": {"text": text}}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


class Response:
    """One HTTP response parsed from what the gateway wrote (chunked bodies decoded, possibly unfinished)."""

    def __init__(self, raw: bytes) -> None:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        self.finished = False
        if self.headers.get("transfer-encoding") == "chunked":
            body = b""
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    self.finished = True
                    break
                body += rest[:size]
                rest = rest[size + 2 :]
            self.body = body
        else:
            self.body = rest
            self.finished = True

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[Any]:
        """The SSE messages in the body."""
        out = []
        for block in self.body.decode().split("\n\n"):
            data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
            if data:
                out.append(json.loads("".join(data)))
        return out


class Connection:
    """One client connection to the site."""

    def __init__(self, site: McpSite, host: IPv4Address = LOOPBACK) -> None:
        self.transport = StringTransport(hostAddress=host, peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.channel = site.buildProtocol(None)
        self.channel.makeConnection(self.transport)

    def send(self, method: str = "POST", body: Any = None, headers: dict[str, str | None] | None = None, raw: bytes | None = None) -> None:
        h: dict[str, str | None] = {"host": "127.0.0.1:8080", "content-type": "application/json", "accept": JSON_AND_SSE}
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        lines = [f"{method} /mcp HTTP/1.1"] + [f"{k}: {v}" for k, v in h.items() if v is not None]
        if data or method == "POST":
            lines.append(f"content-length: {len(data)}")
        self.channel.dataReceived("\r\n".join(lines).encode() + b"\r\n\r\n" + data)

    def response(self) -> Response:
        return Response(self.transport.value())

    def close(self) -> None:
        self.channel.connectionLost(Failure(ConnectionError("the client went away")))


class FrontCase(SynchronousTestCase):
    """A site on fakes: a Clock, one fake backend (alpha, tool echo)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = FakeBackend("alpha", ["echo"])
        self.backend._first_discovery_done()
        self.gateway = Gateway([self.backend], "__", self.clock, 5.0)
        self.gateway.start()
        self.settings = HttpSettings(sessionIdleTimeout=60.0, maxSessions=3, maxSessionsPerPrincipal=2, maxBodyBytes=2048, maxStreamBufferBytes=4096)
        self.make_site(self.settings)

    def make_site(self, settings: HttpSettings, listener: str = "http:tcp:8080:interface=127.0.0.1") -> None:
        self.site = http_site(self.gateway, self.clock, GatewaySettings(), settings, listener)
        self.resource = self.site.resource_

    def exchange(self, method: str = "POST", body: Any = None, headers: dict[str, str | None] | None = None, raw: bytes | None = None) -> Response:
        c = Connection(self.site)
        c.send(method, body, headers, raw)
        return c.response()

    def initialize(self) -> str:
        r = self.exchange(body=INIT)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["content-type"], "application/json")
        self.assertEqual(r.json()["result"]["protocolVersion"], "2025-06-18")
        return r.headers["mcp-session-id"]


class FrontTests(FrontCase):
    # -- sessions --------------------------------------------------------------

    def test_initializeMintsAnUnguessableSessionId(self) -> None:
        """initialize answers with a new Mcp-Session-Id: 192 random bits, URL-safe, never twice the same."""
        first, second = self.initialize(), self.initialize()
        self.assertNotEqual(first, second)
        for sid in (first, second):
            self.assertEqual(len(sid), 32)  # 24 bytes in base64
            self.assertTrue(SESSION_ID_RE.match(sid))
        self.assertEqual(len(self.resource.table), 2)

    def test_requestsOfASessionAreAnsweredAsJson(self) -> None:
        sid = self.initialize()
        c = Connection(self.site)
        c.send(body=call(1, "x"), headers={"mcp-session-id": sid})
        (backend_call,) = self.backend.calls
        self.assertEqual(c.transport.value(), b"")  # nothing yet: the answer decides JSON or SSE
        backend_call.deferred.callback({"content": [{"type": "text", "text": "x"}]})
        r = c.response()
        self.assertEqual((r.status, r.headers["content-type"]), (200, "application/json"))
        self.assertEqual(r.json(), {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "x"}]}})
        self.assertTrue(r.finished)

    def test_noSessionIdIs400(self) -> None:
        self.initialize()
        r = self.exchange(body=call(1))
        self.assertEqual(r.status, 400)
        self.assertIn("no Mcp-Session-Id", r.json()["error"]["message"])
        self.assertEqual(self.backend.calls, [])

    def test_malformedSessionIdIs400(self) -> None:
        r = self.exchange(body=call(1), headers={"mcp-session-id": "has spaces and !"})
        self.assertEqual(r.status, 400)
        self.assertIn("malformed Mcp-Session-Id", r.json()["error"]["message"])

    def test_unknownSessionIdIs404(self) -> None:
        self.initialize()
        r = self.exchange(body=call(1), headers={"mcp-session-id": mint_session_id()})
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["error"]["code"], -32001)

    def test_initializeWithASessionIdIs400(self) -> None:
        sid = self.initialize()
        r = self.exchange(body=INIT, headers={"mcp-session-id": sid})
        self.assertEqual(r.status, 400)
        self.assertEqual(len(self.resource.table), 1)

    def test_deleteEndsTheSessionAndCancelsItsCalls(self) -> None:
        """DELETE: 204; the calls in flight are cancelled at the backend and their POSTs closed; the id is unknown after."""
        sid = self.initialize()
        c = Connection(self.site)
        c.send(body=call(1), headers={"mcp-session-id": sid})
        self.assertEqual(self.exchange("DELETE", headers={"mcp-session-id": sid, "content-type": None}).status, 204)
        self.assertTrue(self.backend.calls[0].cancelled)
        self.assertTrue(c.response().finished)
        self.assertNotIn(b'"result"', c.transport.value())
        self.assertEqual(self.exchange(body=call(2), headers={"mcp-session-id": sid}).status, 404)
        self.assertEqual(self.exchange("DELETE", headers={"mcp-session-id": sid}).status, 404)
        self.assertEqual(len(self.resource.table), 0)
        self.assertEqual(self.gateway.sessions, set())

    def test_idleSessionExpires(self) -> None:
        """A session unused for sessionIdleTimeout ends: 404 after, and its core session is gone."""
        sid = self.initialize()
        self.clock.advance(59)
        self.assertEqual(self.exchange(body={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"mcp-session-id": sid}).status, 200)
        self.clock.advance(59)  # each request starts the idle time again
        self.assertEqual(len(self.resource.table), 1)
        with capturedLogs() as events:
            self.clock.advance(2)
        self.assertEqual(len(self.resource.table), 0)
        self.assertEqual(self.gateway.sessions, set())
        self.assertTrue(any("expired after 60 s unused" in formatEvent(e) for e in events))
        self.assertEqual(self.exchange(body=call(1), headers={"mcp-session-id": sid}).status, 404)

    def test_aSessionWithAnOpenStreamOrCallDoesNotExpire(self) -> None:
        sid = self.initialize()
        stream = Connection(self.site)
        stream.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        c = Connection(self.site)
        c.send(body=call(1), headers={"mcp-session-id": sid})
        self.clock.advance(600)
        self.assertEqual(len(self.resource.table), 1)
        stream.close()
        self.clock.advance(600)
        self.assertEqual(len(self.resource.table), 1)  # the call is still open
        self.backend.calls[0].deferred.callback({"content": []})
        self.clock.advance(61)
        self.assertEqual(len(self.resource.table), 0)

    def test_sessionLimits(self) -> None:
        """Beyond maxSessionsPerPrincipal: 429; beyond maxSessions: 503; each names its setting."""
        self.initialize()
        self.initialize()
        r = self.exchange(body=INIT)
        self.assertEqual(r.status, 429)
        self.assertIn("http.maxSessionsPerPrincipal", r.json()["error"]["message"])
        other = HttpSettings(maxSessions=1)
        self.make_site(other)
        self.initialize()
        r = self.exchange(body=INIT)
        self.assertEqual(r.status, 503)
        self.assertIn("http.maxSessions", r.json()["error"]["message"])

    # -- headers and bodies ------------------------------------------------------

    def test_bodyOverTheLimitIs413(self) -> None:
        sid = self.initialize()
        big = json.dumps(call(1, "x" * 4000)).encode()
        r = self.exchange(raw=big, headers={"mcp-session-id": sid})
        self.assertEqual(r.status, 413)
        self.assertIn("http.maxBodyBytes", r.json()["error"]["message"])
        self.assertEqual(self.backend.calls, [])

    def test_chunkedBodyOverTheLimitIs413(self) -> None:
        sid = self.initialize()
        c = Connection(self.site)
        head = (
            "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-type: application/json\r\n"
            f"accept: {JSON_AND_SSE}\r\nmcp-session-id: {sid}\r\ntransfer-encoding: chunked\r\n\r\n"
        ).encode()
        chunk = b"x" * 1500
        c.channel.dataReceived(head + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 3 + b"0\r\n\r\n")
        self.assertEqual(c.response().status, 413)

    def test_wrongContentTypeIs415(self) -> None:
        sid = self.initialize()
        self.assertEqual(self.exchange(body=call(1), headers={"mcp-session-id": sid, "content-type": "text/plain"}).status, 415)

    def test_notAcceptingJsonIs406(self) -> None:
        sid = self.initialize()
        self.assertEqual(self.exchange(body=call(1), headers={"mcp-session-id": sid, "accept": "text/html"}).status, 406)
        r = self.exchange("GET", headers={"mcp-session-id": sid, "accept": "application/json", "content-type": None})
        self.assertEqual(r.status, 406)

    def test_unsupportedProtocolVersionIs400(self) -> None:
        sid = self.initialize()
        r = self.exchange(body=call(1), headers={"mcp-session-id": sid, "mcp-protocol-version": "2099-01-01"})
        self.assertEqual(r.status, 400)
        self.assertIn("unsupported MCP-Protocol-Version", r.json()["error"]["message"])
        ok = self.exchange(body={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers={"mcp-session-id": sid, "mcp-protocol-version": "2025-03-26"})
        self.assertEqual(ok.status, 200)

    def test_badJsonAndBatchesAre400(self) -> None:
        sid = self.initialize()
        r = self.exchange(raw=b"{not json", headers={"mcp-session-id": sid})
        self.assertEqual((r.status, r.json()["error"]["code"]), (400, -32700))
        r = self.exchange(body=[call(1)], headers={"mcp-session-id": sid})
        self.assertEqual(r.status, 400)
        self.assertIn("batches are not supported", r.json()["error"]["message"])
        r = self.exchange(body={"jsonrpc": "2.0", "id": [1], "method": "ping"}, headers={"mcp-session-id": sid})
        self.assertEqual(r.status, 400)

    def test_duplicateIdInFlightIs400AndTheFirstKeepsItsAnswer(self) -> None:
        sid = self.initialize()
        first = Connection(self.site)
        first.send(body=call(1, "a"), headers={"mcp-session-id": sid})
        r = self.exchange(body=call(1, "b"), headers={"mcp-session-id": sid})
        self.assertEqual(r.status, 400)
        self.assertEqual(len(self.backend.calls), 1)
        self.backend.calls[0].deferred.callback({"content": [{"type": "text", "text": "a"}]})
        self.assertEqual(first.response().json()["result"]["content"][0]["text"], "a")

    def test_otherMethodsAndPaths(self) -> None:
        r = self.exchange("PUT", body=call(1))
        self.assertEqual((r.status, r.headers["allow"]), (405, "GET, POST, DELETE"))
        c = Connection(self.site)
        c.channel.dataReceived(b"GET /other HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n")
        self.assertEqual(c.response().status, 404)

    def test_hostOtherThanLoopbackIs421OnALoopbackListener(self) -> None:
        """DNS rebinding: a page whose name resolves to 127.0.0.1 sends its own name."""
        r = self.exchange(body=INIT, headers={"host": "evil.example:8080"})
        self.assertEqual(r.status, 421)
        self.assertEqual(len(self.resource.table), 0)
        self.make_site(HttpSettings())
        for host in ("localhost:8080", "[::1]:8080", "127.0.0.1:8080"):
            self.assertEqual(self.exchange(body=INIT, headers={"host": host}).status, 200)
        self.assertEqual(self.exchange(body=INIT, headers={"host": "localhost:9999"}).status, 421)  # another port

    def test_allowedHostsAndNonLoopbackListeners(self) -> None:
        self.make_site(HttpSettings(allowedHosts=("mcp.internal:8080",)))
        self.assertEqual(self.exchange(body=INIT, headers={"host": "mcp.internal:8080"}).status, 200)
        c = Connection(self.site, host=IPv4Address("TCP", "10.0.0.5", 8080))
        c.send(body=INIT, headers={"host": "anything.example"})
        self.assertEqual(c.response().status, 200)  # Host is checked on loopback listeners only

    def test_originNotAllowedIs403(self) -> None:
        r = self.exchange(body=INIT, headers={"origin": "https://evil.example"})
        self.assertEqual(r.status, 403)
        self.assertIn("http.allowedOrigins", r.json()["error"]["message"])
        with capturedLogs() as events:
            for _ in range(3):
                self.exchange(body=INIT, headers={"origin": "https://evil.example"})
        self.assertEqual(sum("evil.example" in formatEvent(e) for e in events), 0)  # logged the first time only
        self.make_site(HttpSettings(allowedOrigins=("https://app.example",)))
        self.assertEqual(self.exchange(body=INIT, headers={"origin": "https://APP.example/"}).status, 200)

    # -- notifications, responses, streams ----------------------------------------

    def test_notificationsAndResponsesAre202(self) -> None:
        sid = self.initialize()
        r = self.exchange(body={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={"mcp-session-id": sid})
        self.assertEqual((r.status, r.body), (202, b""))
        r = self.exchange(body={"jsonrpc": "2.0", "id": "s1", "result": {}}, headers={"mcp-session-id": sid})
        self.assertEqual((r.status, r.body), (202, b""))

    def test_progressTurnsTheAnswerIntoAnSseStream(self) -> None:
        """Progress before the answer: the POST becomes an SSE stream, progress first, the answer last, then it ends."""
        sid = self.initialize()
        c = Connection(self.site)
        c.send(body=call(1, token="t"), headers={"mcp-session-id": sid})
        (backend_call,) = self.backend.calls
        backend_call.on_progress({"progress": 1, "total": 2})
        r = c.response()
        self.assertEqual((r.status, r.headers["content-type"]), (200, "text/event-stream"))
        self.assertFalse(r.finished)
        backend_call.deferred.callback({"content": []})
        r = c.response()
        self.assertTrue(r.finished)
        self.assertEqual(
            r.events(),
            [
                {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1, "total": 2, "progressToken": "t"}},
                {"jsonrpc": "2.0", "id": 1, "result": {"content": []}},
            ],
        )

    def test_aClientAcceptingOnlyJsonGetsItsProgressOnTheGetStream(self) -> None:
        sid = self.initialize()
        stream = Connection(self.site)
        stream.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        c = Connection(self.site)
        c.send(body=call(1, token="t"), headers={"mcp-session-id": sid, "accept": "application/json"})
        self.backend.calls[0].on_progress({"progress": 1})
        self.backend.calls[0].deferred.callback({"content": []})
        self.assertEqual(c.response().headers["content-type"], "application/json")
        self.assertEqual([m.get("method") for m in stream.response().events()], ["notifications/progress"])

    def test_answersNeverGoToAnotherPost(self) -> None:
        """Two sessions, interleaved answers: each POST gets its own call's answer."""
        a, b = self.initialize(), self.initialize()
        ca, cb = Connection(self.site), Connection(self.site)
        ca.send(body=call(1, "for a"), headers={"mcp-session-id": a})
        cb.send(body=call(1, "for b"), headers={"mcp-session-id": b})
        first, second = self.backend.calls
        second.deferred.callback({"content": [{"type": "text", "text": second.params["arguments"]["text"]}]})
        first.deferred.callback({"content": [{"type": "text", "text": first.params["arguments"]["text"]}]})
        self.assertEqual(ca.response().json()["result"]["content"][0]["text"], "for a")
        self.assertEqual(cb.response().json()["result"]["content"][0]["text"], "for b")

    def test_closingAPostCancelsTheCallAtTheBackend(self) -> None:
        sid = self.initialize()
        c = Connection(self.site)
        c.send(body=call(1), headers={"mcp-session-id": sid})
        c.close()
        self.assertTrue(self.backend.calls[0].cancelled)
        session = next(iter(self.resource.table.sessions.values()))
        self.assertEqual(session.posts, {})
        self.assertEqual(session.core.in_flight, {})

    def test_cancelledNotificationClosesTheCallsPost(self) -> None:
        sid = self.initialize()
        c = Connection(self.site)
        c.send(body=call(1), headers={"mcp-session-id": sid})
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
        self.assertEqual(self.exchange(body=cancel, headers={"mcp-session-id": sid}).status, 202)
        self.assertTrue(self.backend.calls[0].cancelled)
        r = c.response()
        self.assertEqual((r.status, r.finished), (202, True))

    def test_getStreamCarriesListChangedAndOnlyOneIsOpen(self) -> None:
        sid = self.initialize()
        stream = Connection(self.site)
        stream.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        r = stream.response()
        self.assertEqual((r.status, r.headers["content-type"]), (200, "text/event-stream"))
        second = self.exchange("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        self.assertEqual(second.status, 409)
        core = next(iter(self.resource.table.sessions.values())).core
        core.list_changed("tools")  # related to no call
        self.assertEqual([m["method"] for m in stream.response().events()], ["notifications/tools/list_changed"])
        self.assertEqual(self.resource.open_streams(), 1)
        stream.close()
        self.assertEqual(self.resource.open_streams(), 0)
        again = Connection(self.site)
        again.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        self.assertEqual(again.response().status, 200)

    def test_aServerRequestTiedToNoCallGoesToTheOnlyOpenCall(self) -> None:
        """
        A server request the backend's transport could not tie to a call
        (a stdio backend's) goes to the session's only open call's stream;
        with two calls open, to the GET stream; a list_changed always to the GET stream.
        """
        sid = self.initialize()
        core = next(iter(self.resource.table.sessions.values())).core
        stream = Connection(self.site)
        stream.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        first = Connection(self.site)
        first.send(body=call(1), headers={"mcp-session-id": sid})
        request = {"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}}
        core.send(request, None)
        core.list_changed("tools")
        self.assertEqual(first.response().events(), [request])
        second = Connection(self.site)
        second.send(body=call(2), headers={"mcp-session-id": sid})
        core.send({**request, "id": "s2"}, None)
        self.assertEqual([m.get("id") for m in first.response().events()], ["s1"])
        self.assertEqual(second.transport.value(), b"")
        self.assertEqual(
            [m.get("method") for m in stream.response().events()], ["notifications/tools/list_changed", "sampling/createMessage"]
        )

    def test_aStreamNotReadIsCutBeyondItsBuffer(self) -> None:
        """While the client does not read, at most maxStreamBufferBytes are written; then the connection is aborted."""
        sid = self.initialize()
        c = Connection(self.site)
        c.send(body=call(1, token="t"), headers={"mcp-session-id": sid})
        (backend_call,) = self.backend.calls
        backend_call.on_progress({"progress": 0})
        c.transport.producer.pauseProducing()  # the transport's buffer is full: it pauses its producer
        before = len(c.transport.value())
        with capturedLogs() as events:
            for i in range(200):
                backend_call.on_progress({"progress": i + 1, "message": "x" * 100})
        self.assertTrue(c.transport.disconnecting)
        self.assertLessEqual(len(c.transport.value()) - before, 4096)
        self.assertTrue(any("does not read its stream" in formatEvent(e) for e in events))
        c.close()  # the abort completes
        self.assertFalse(backend_call.cancelled)  # the client may resume the stream for http.resumeWindow
        self.clock.advance(self.settings.resumeWindow)
        self.assertTrue(backend_call.cancelled)

    def test_connectionsCountAgainstTheSharedCaps(self) -> None:
        """HTTP connections count against gateway.maxClientsPerPeer like socket ones: over it, 503 and closed."""
        from twisted_mcp.frontends.admission import Admission

        admission = Admission(10, 1, 0, 1000, lambda: 10)
        self.site = http_site(self.gateway, self.clock, GatewaySettings(), self.settings, "http:tcp:8080", admission)
        first = Connection(self.site)
        second = Connection(self.site)
        r = second.response()
        self.assertEqual(r.status, 503)
        self.assertIn("maxClientsPerPeer", r.body.decode())
        self.assertTrue(second.transport.disconnecting)
        first.close()
        self.assertEqual(admission.total, 0)
        third = Connection(self.site)
        third.send(body=INIT)
        self.assertEqual(third.response().status, 200)

    def test_aRequestTrickledByteByByteIsClosedAfterTheMessageTimeout(self) -> None:
        """The idle timeout restarts with every byte; a whole request must still arrive within gateway.messageTimeout."""
        c = Connection(self.site)
        c.channel.dataReceived(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-length: 100\r\n\r\n")
        for _ in range(59):
            self.clock.advance(1)
            c.channel.dataReceived(b"x")
        self.assertFalse(c.transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(1.5)
        self.assertTrue(c.transport.disconnecting)
        self.assertTrue(any("did not arrive whole" in formatEvent(e) for e in events))

    def test_anOpenStreamIsNotCutByTheRequestDeadline(self) -> None:
        sid = self.initialize()
        stream = Connection(self.site)
        stream.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        self.clock.advance(600)
        self.assertFalse(stream.transport.disconnecting)

    def test_whatACutStreamsCallSendsIsDroppedNotSentElsewhere(self) -> None:
        sid = self.initialize()
        stream = Connection(self.site)
        stream.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        c = Connection(self.site)
        c.send(body=call(1, token="t"), headers={"mcp-session-id": sid})
        (backend_call,) = self.backend.calls
        backend_call.on_progress({"progress": 0})
        c.transport.producer.pauseProducing()
        for i in range(100):
            backend_call.on_progress({"progress": i + 1, "message": "x" * 100})
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(stream.response().events(), [])

    def test_stopLetsCallsFinishThenEndsSessions(self) -> None:
        sid = self.initialize()
        c = Connection(self.site)
        c.send(body=call(1), headers={"mcp-session-id": sid})
        done = self.resource.stop(5.0)
        self.assertNoResult(done)
        self.assertEqual(self.exchange(body=INIT).status, 503)  # no new session while stopping
        self.backend.calls[0].deferred.callback({"content": []})
        self.successResultOf(done)
        self.assertEqual(c.response().json()["id"], 1)
        self.assertEqual(len(self.resource.table), 0)


class SessionTableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.expired: list[Any] = []
        self.table = SessionTable(self.clock, HttpSettings(sessionIdleTimeout=10.0, maxSessions=3, maxSessionsPerPrincipal=2), self.expired.append)

    def test_anotherIdentityPresentingAnIdFindsNothing(self) -> None:
        alice = owner_of(Peer(transport="unix", listener="http:unix:/s", uid=1000, gid=1000, pid=5))
        bob = owner_of(Peer(transport="unix", listener="http:unix:/s", uid=1001, gid=1001, pid=6))
        s = self.table.open(alice, "http")
        with capturedLogs() as events:
            self.assertIsNone(self.table.find(s.id, bob))
            self.assertIsNone(self.table.find(s.id, bob))
        self.assertEqual(sum("another client identity" in formatEvent(e) for e in events), 1)
        self.assertIs(self.table.find(s.id, alice), s)
        # Another process or port of the same user is the same identity.
        same = owner_of(Peer(transport="unix", listener="http:unix:/s", uid=1000, gid=1000, pid=99))
        self.assertIs(self.table.find(s.id, same), s)

    def test_limitsAndCounts(self) -> None:
        a, b = ("a",), ("b",)
        self.table.open(a, "h")
        self.table.open(a, "h")
        self.assertEqual(self.table.refusal(a), ("http.maxSessionsPerPrincipal", 2))
        self.table.open(b, "h")
        self.assertEqual(self.table.refusal(("c",)), ("http.maxSessions", 3))
        for s in list(self.table.sessions.values()):
            self.table.remove(s)
        self.assertEqual((len(self.table), self.table.by_owner), (0, {}))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_expiryOnlyWhenIdle(self) -> None:
        s = self.table.open(("a",), "h")
        self.table.hold(s)
        self.clock.advance(100)
        self.assertEqual(self.expired, [])
        self.table.release(s)
        self.clock.advance(9)
        self.assertEqual(self.expired, [])
        self.clock.advance(1)
        self.assertEqual(self.expired, [s])
        self.assertEqual(len(self.table), 0)
        self.assertIsNone(self.table.find(s.id, ("a",)))


class HttpConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        problems: list[str] = []
        self.assertEqual(parse_http({}, "http", problems), HttpSettings())
        self.assertEqual(problems, [])
        self.assertEqual(HttpSettings().path, "/mcp")

    def test_values(self) -> None:
        problems: list[str] = []
        got = parse_http(
            {"path": "/gw/mcp", "sessionIdleTimeout": 30, "allowedOrigins": ["https://App.example/"], "allowedHosts": ["MCP.internal:8080"]},
            "http",
            problems,
        )
        self.assertEqual(problems, [])
        self.assertEqual((got.path, got.sessionIdleTimeout), ("/gw/mcp", 30.0))
        self.assertEqual((got.allowedOrigins, got.allowedHosts), (("https://app.example",), ("mcp.internal:8080",)))

    def test_problemsNamedWithTheirKeys(self) -> None:
        problems: list[str] = []
        parse_http({"path": "mcp/", "maxBodyBytes": 10, "allowedOrigins": ["*"], "allowedHosts": ["a/b"], "bogus": 1}, "http", problems)
        text = "\n".join(problems)
        for key in ("http.path", "http.maxBodyBytes", "http.allowedOrigins[0]", "http.allowedHosts[0]", "http.bogus"):
            self.assertIn(key, text)

    def test_loaderReadsTheSection(self) -> None:
        from twisted_mcp.config import loader

        config = loader.build({"mcpServers": {}, "http": {"maxSessions": 5}}, "gw.yaml")
        self.assertEqual(config.http.maxSessions, 5)
        self.assertEqual(loader.build({"mcpServers": {}}, "gw.yaml").http, HttpSettings())


def event_ids(raw: bytes) -> list[tuple[str, bool]]:
    """(id, carries a message) of each SSE event with an id in a body."""
    out = []
    for block in raw.decode().split("\n\n"):
        lines = block.split("\n")
        ids = [line[4:] for line in lines if line.startswith("id: ")]
        if ids:
            out.append((ids[0], any(line.startswith("data: ") for line in lines)))
    return out


class ResumeTests(FrontCase):
    """Resumable streams: event ids, priming, Last-Event-ID replay, the resume window, the replay buffer."""

    def streaming_call(self, sid: str, version: str = "2025-06-18") -> tuple[Connection, Any]:
        c = Connection(self.site)
        c.send(body=call(1, token="t"), headers={"mcp-session-id": sid, "mcp-protocol-version": version})
        (backend_call,) = self.backend.calls
        backend_call.on_progress({"progress": 1})
        return c, backend_call

    def resume(self, sid: str, last_id: str) -> Connection:
        c = Connection(self.site)
        c.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None, "last-event-id": last_id})
        return c

    def test_aClientOf20251125GetsAPrimingEventFirst(self) -> None:
        sid = self.initialize()
        c, _ = self.streaming_call(sid, "2025-11-25")
        body = c.response().body
        self.assertTrue(body.startswith(b"id: p1.0\nretry: 1000\ndata:\n\n"), body)
        self.assertEqual(event_ids(body), [("p1.0", False), ("p1.1", True)])

    def test_olderClientsGetIdsButNoPrimingEvent(self) -> None:
        sid = self.initialize()
        c, _ = self.streaming_call(sid)
        self.assertEqual(event_ids(c.response().body), [("p1.1", True)])

    def test_aDroppedPostStreamResumesWithWhatItMissedAndTheCallGoesOn(self) -> None:
        sid = self.initialize()
        c, backend_call = self.streaming_call(sid)
        c.close()
        backend_call.on_progress({"progress": 2})
        backend_call.deferred.callback({"content": [{"type": "text", "text": "done"}]})
        self.assertFalse(backend_call.cancelled)
        self.clock.advance(self.settings.resumeWindow - 1)
        again = self.resume(sid, "p1.1")
        r = again.response()
        self.assertEqual((r.status, r.headers["content-type"], r.finished), (200, "text/event-stream", True))
        self.assertEqual(
            r.events(),
            [
                {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 2, "progressToken": "t"}},
                {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "done"}]}},
            ],
        )
        self.assertEqual([i for i, _ in event_ids(r.body)], ["p1.2", "p1.3"])
        # Delivered: the stream is forgotten, and cannot be replayed twice.
        self.assertEqual(self.resume(sid, "p1.1").response().status, 400)

    def test_aResumedStreamCarriesWhatComesNextUntilTheAnswer(self) -> None:
        sid = self.initialize()
        c, backend_call = self.streaming_call(sid)
        c.close()
        again = self.resume(sid, "p1.1")
        r = again.response()
        self.assertEqual((r.status, r.events(), r.finished), (200, [], False))
        self.assertEqual(self.resource.open_streams(), 1)
        backend_call.deferred.callback({"content": []})
        r = again.response()
        self.assertTrue(r.finished)
        self.assertEqual(r.events(), [{"jsonrpc": "2.0", "id": 1, "result": {"content": []}}])
        self.assertEqual(self.resource.open_streams(), 0)

    def test_aStreamNotResumedWithinTheWindowCancelsItsCall(self) -> None:
        sid = self.initialize()
        c, backend_call = self.streaming_call(sid)
        c.close()
        self.clock.advance(self.settings.resumeWindow)
        self.assertTrue(backend_call.cancelled)
        r = self.resume(sid, "p1.1").response()
        self.assertEqual(r.status, 400)
        self.assertIn("http.resumeWindow", r.json()["error"]["message"])
        session = next(iter(self.resource.table.sessions.values()))
        self.assertEqual((session.posts, session.sse), ({}, {}))

    def test_aStreamWhoseReplayBufferOverflowedSaysSoAndItsCallIsCancelled(self) -> None:
        self.make_site(attrs.evolve(self.settings, replayBufferBytes=1024))
        sid = self.initialize()
        c, backend_call = self.streaming_call(sid)
        c.close()
        for i in range(20):
            backend_call.on_progress({"progress": i + 2, "message": "x" * 100})
        r = self.resume(sid, "p1.1").response()
        self.assertEqual(r.status, 200)
        (error,) = r.events()
        self.assertEqual(error["id"], 1)
        self.assertEqual(error["error"]["code"], -31012)
        self.assertIn("http.replayBufferBytes", error["error"]["message"])
        self.assertTrue(r.finished)
        self.assertTrue(backend_call.cancelled)

    def test_theGetStreamResumesWithTheNotificationsItMissed(self) -> None:
        sid = self.initialize()
        stream = Connection(self.site)
        stream.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        core = next(iter(self.resource.table.sessions.values())).core
        core.list_changed("tools")
        ((seen, _),) = event_ids(stream.response().body)
        stream.close()
        core.list_changed("prompts")
        again = self.resume(sid, seen)
        self.assertEqual([m["method"] for m in again.response().events()], ["notifications/prompts/list_changed"])
        core.list_changed("resources")
        self.assertEqual(
            [m["method"] for m in again.response().events()],
            ["notifications/prompts/list_changed", "notifications/resources/list_changed"],
        )

    def test_aNewGetWithoutLastEventIdStartsAFreshStream(self) -> None:
        sid = self.initialize()
        stream = Connection(self.site)
        stream.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        stream.close()
        core = next(iter(self.resource.table.sessions.values())).core
        core.list_changed("tools")  # kept for a resume of the first stream
        fresh = Connection(self.site)
        fresh.send("GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        self.assertEqual(fresh.response().events(), [])  # nothing replayed without Last-Event-ID
        self.assertEqual(self.resume(sid, "g1.0").response().status, 400)  # the old stream is gone

    def test_aResumeTakesOverAConnectionThatLooksOpen(self) -> None:
        sid = self.initialize()
        c, backend_call = self.streaming_call(sid)
        again = self.resume(sid, "p1.1")
        self.assertTrue(c.response().finished)
        backend_call.deferred.callback({"content": []})
        self.assertEqual(again.response().events(), [{"jsonrpc": "2.0", "id": 1, "result": {"content": []}}])

    def test_lastEventIdsThatNameNothingResumableAre400(self) -> None:
        sid = self.initialize()
        self.streaming_call(sid)
        for bad in ("nonsense", "p1", "g1.0", "p9.0", "p1.7"):
            r = self.resume(sid, bad).response()
            self.assertEqual(r.status, 400, bad)
        self.assertFalse(self.backend.calls[0].cancelled)

    def test_withoutAResumeWindowADroppedStreamCancelsAtOnce(self) -> None:
        self.make_site(attrs.evolve(self.settings, resumeWindow=0))
        sid = self.initialize()
        c, backend_call = self.streaming_call(sid, "2025-11-25")
        self.assertNotIn(b"retry:", c.response().body)  # not resumable: no priming event
        c.close()
        self.assertTrue(backend_call.cancelled)

    def test_keepAliveWritesACommentOnEveryOpenStream(self) -> None:
        sid = self.initialize()
        c, _ = self.streaming_call(sid)
        before = c.transport.value()
        self.resource.keep_alive()
        self.assertEqual(c.transport.value()[len(before) :].split(b"\r\n")[1], b": keep-alive\n\n")


MODERN = "2026-07-28"


def modern_call(rid: Any, name: str = "alpha__echo", token: Any = None, **meta: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}, **meta}
    if token is not None:
        envelope["progressToken"] = token
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": {"text": "hi"}, "_meta": envelope}}


def modern_headers(method: str = "tools/call", name: str | None = "alpha__echo", **more: str | None) -> dict[str, str | None]:
    h: dict[str, str | None] = {"mcp-protocol-version": MODERN, "mcp-method": method, "mcp-name": name}
    h.update(more)
    return h


class StatelessHttpTests(FrontCase):
    """2026-07-28 requests on the HTTP front: no session, headers checked, statuses, ids, cancellation."""

    def post(self, body: Any, headers: dict[str, str | None]) -> Connection:
        c = Connection(self.site)
        c.send(body=body, headers=headers)
        return c

    def test_aStatelessRequestIsAnsweredOnItsPostWithTheClientsIdAndNoSession(self) -> None:
        c = self.post(modern_call("a"), modern_headers())
        (backend_call,) = self.backend.calls
        self.assertEqual(backend_call.params, {"name": "echo", "arguments": {"text": "hi"}})  # no envelope to the backend
        backend_call.deferred.callback({"content": [{"type": "text", "text": "hi"}]})
        r = c.response()
        self.assertEqual((r.status, r.headers["content-type"]), (200, "application/json"))
        self.assertNotIn("mcp-session-id", r.headers)
        self.assertEqual(r.json()["id"], "a")
        self.assertEqual(r.json()["result"]["resultType"], "complete")

    def test_twoClientsOfOnePrincipalMayUseTheSameIdAtOnce(self) -> None:
        first, second = self.post(modern_call(1), modern_headers()), self.post(modern_call(1), modern_headers())
        a, b = self.backend.calls
        b.deferred.callback({"content": [{"type": "text", "text": "second"}]})
        a.deferred.callback({"content": [{"type": "text", "text": "first"}]})
        for connection, text in ((first, "first"), (second, "second")):
            answer = connection.response().json()
            self.assertEqual((answer["id"], answer["result"]["content"][0]["text"]), (1, text))
        self.assertEqual(len(self.resource.table), 1)  # one core session for the principal

    def test_theLadderWithItsStatuses(self) -> None:
        bad_meta = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "alpha__echo", "_meta": {"io.modelcontextprotocol/protocolVersion": "v999.0.0"}}}
        cases = [
            (bad_meta, modern_headers(**{"mcp-protocol-version": MODERN}), 400, -32602),  # envelope before headers
            (modern_call(2, **{"io.modelcontextprotocol/protocolVersion": "v999.0.0"}), modern_headers(), 400, -32020),  # headers before version
            (modern_call(3, **{"io.modelcontextprotocol/protocolVersion": "v999.0.0"}), modern_headers(**{"mcp-protocol-version": "v999.0.0"}), 400, -32022),
            (modern_call(4), modern_headers(**{"mcp-method": None}), 400, -32020),
            (modern_call(5), modern_headers(name="alpha__other"), 400, -32020),
            (modern_call(6), modern_headers(**{"mcp-session-id": "A" * 32}), 400, -32600),
        ]
        for body, headers, status, code in cases:
            r = self.post(body, headers).response()
            self.assertEqual((r.status, r.json()["error"]["code"]), (status, code), (body["id"], r.body))
            self.assertEqual(r.json()["id"], body["id"])
        ping = {"jsonrpc": "2.0", "id": 7, "method": "ping", "params": {"_meta": modern_call(0)["params"]["_meta"]}}
        r = self.post(ping, modern_headers("ping", None)).response()
        self.assertEqual((r.status, r.json()["error"]["code"]), (404, -32601))
        self.assertEqual(self.backend.calls, [])

    def test_aBase64EncodedNameHeaderIsDecodedBeforeComparing(self) -> None:
        import base64

        encoded = "=?base64?" + base64.b64encode(b"alpha__echo").decode() + "?="
        self.post(modern_call(1), modern_headers(name=encoded))
        self.assertEqual(len(self.backend.calls), 1)

    def test_closingThePostCancelsTheCallAtOnce(self) -> None:
        c = self.post(modern_call(1, token="t"), modern_headers())
        (backend_call,) = self.backend.calls
        backend_call.on_progress({"progress": 1})
        r = c.response()
        self.assertEqual(r.headers["content-type"], "text/event-stream")
        self.assertNotIn(b"id:", r.body)  # 2026-07-28 has no resumption: no event ids
        self.assertEqual(r.events()[0]["params"]["progressToken"], "t")
        c.close()
        self.assertTrue(backend_call.cancelled)  # no resume window for this era

    def test_theStatelessSessionExpiresWhenIdle(self) -> None:
        c = self.post(modern_call(1), modern_headers())
        self.backend.calls[0].deferred.callback({"content": []})
        self.assertEqual(c.response().status, 200)
        self.clock.advance(self.settings.sessionIdleTimeout)
        self.assertEqual(len(self.resource.table), 0)
        self.post(modern_call(2), modern_headers())
        self.assertEqual(len(self.resource.table), 1)

    def test_aModernVersionHeaderWithoutTheEnvelopeIsInvalidParams(self) -> None:
        r = self.exchange(body=call(1), headers={"mcp-protocol-version": MODERN})
        self.assertEqual((r.status, r.json()["error"]["code"]), (400, -32602))



class StatelessCapabilityTests(FrontCase):
    def test_aMissingClientCapabilityIsHttp400WhenTheAnswerIsPlainJson(self) -> None:
        c = Connection(self.site)
        c.send(body=modern_call(1), headers=modern_headers())
        (backend_call,) = self.backend.calls
        from twisted_mcp.wire.jsonrpc import JsonRpcError

        with self.assertRaises(JsonRpcError):
            self.gateway.reverse.server_request(self.backend, "sampling/createMessage", {"messages": [], "maxTokens": 1}, backend_call.context)
        r = c.response()
        self.assertEqual((r.status, r.json()["error"]["code"]), (400, -32021))
        self.assertEqual(r.json()["id"], 1)
