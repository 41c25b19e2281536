"""
The listen stream of a stateless-era (2026-07-28) stdio backend
(L{twisted_mcp.backends.listen}), with a fake spawner and a Clock: what it
asks for, its acknowledgment, the tagged notifications it routes, the
replacement of a listen when the URI set changes, a drop and its backoff,
and a stop that leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.listen import OVERLAP, BackendListen
from twisted_mcp.backends.stdio import StdioBackend
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.wire.jsonrpc import JsonRpcError, encode

from .fakes import RecordingEvents, Spawn
from .test_modern_backends import DISCOVERED, ProbeTestCase
from .test_stdio_backend import TOOLS_1, TOOLS_2

TAG = "io.modelcontextprotocol/subscriptionId"
CAPABILITIES = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": False},
}
LISTED = {"resultType": "complete", "ttlMs": 0, "cacheScope": "public"}


class _Subscriber:
    """A legacy client session, as L{Subscriptions} sees it."""

    closing = False
    peer = None

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any] | None]] = []

    def notify(self, method: str, params: dict[str, Any] | None = None, related: Any = None) -> None:
        self.got.append((method, params))


class ListenTestCase(ProbeTestCase):
    def up(self, capabilities: dict[str, Any] = CAPABILITIES) -> tuple[StdioBackend, Spawn]:
        """A modern backend up: discovered, every listing answered."""
        backend = self.make(protocol="modern", restartMaxDelay=4.0)
        backend.startService()
        spawn = self.last
        self.reply(spawn, "server/discover", {**DISCOVERED, "capabilities": capabilities})
        self.reply(spawn, "tools/list", {"tools": TOOLS_1, **LISTED})
        if "prompts" in capabilities:
            self.reply(spawn, "prompts/list", {"prompts": [], **LISTED})
        if "resources" in capabilities:
            self.reply(spawn, "resources/list", {"resources": [{"uri": "dual://a", "name": "a"}], **LISTED})
            self.reply(spawn, "resources/templates/list", {"resourceTemplates": [], **LISTED})
        return backend, spawn

    def gateway(self, backend: StdioBackend) -> Gateway:
        gateway = Gateway([backend], "__", self.clock, 5.0)
        gateway.start()
        return gateway

    def listens(self, spawn: Spawn) -> list[dict[str, Any]]:
        return [m for m in spawn.transport.messages() if m.get("method") == "subscriptions/listen"]

    def cancels(self, spawn: Spawn) -> list[Any]:
        return [m["params"]["requestId"] for m in spawn.transport.messages() if m.get("method") == "notifications/cancelled"]

    def send(self, spawn: Spawn, method: str, params: dict[str, Any]) -> None:
        spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "method": method, "params": params}))

    def ack(self, spawn: Spawn, listen: dict[str, Any], honoured: dict[str, Any] | None = None) -> None:
        """The acknowledgment of C{listen}: what it asked for, unless told otherwise."""
        notifications = listen["params"]["notifications"] if honoured is None else honoured
        self.send(spawn, "notifications/subscriptions/acknowledged", {"notifications": notifications, "_meta": {TAG: listen["id"]}})

    def tagged(self, spawn: Spawn, listen: dict[str, Any], method: str, **params: Any) -> None:
        self.send(spawn, method, {**params, "_meta": {TAG: listen["id"]}})

    def relists(self, spawn: Spawn) -> list[str]:
        return [m["method"] for m in spawn.transport.messages() if m.get("method", "").endswith("/list")]


class OpeningTests(ListenTestCase):
    def test_openedWithWhatItAdvertises(self) -> None:
        """Once up, one listen, stamped as the gateway's own request, asking
        for the list changes the server advertises (listChanged) and no URI."""
        backend, spawn = self.up()
        [listen] = self.listens(spawn)
        self.assertEqual(listen["params"]["notifications"], {"toolsListChanged": True, "promptsListChanged": True})
        meta = listen["params"]["_meta"]
        self.assertEqual(meta["io.modelcontextprotocol/protocolVersion"], "2026-07-28")
        self.assertEqual(meta["io.modelcontextprotocol/clientCapabilities"], {})
        self.assertFalse(backend.listen.is_open)
        self.ack(spawn, listen)
        self.assertTrue(backend.listen.is_open)
        self.assertEqual(backend.in_flight(), 0, "the listen is no call in flight")
        self.assertEqual(self.clock.getDelayedCalls(), [], "a listen never times out")
        self.stop(backend)

    def test_nothingToListenFor(self) -> None:
        """A server that advertises no list change and has no subscription is sent no listen."""
        backend, spawn = self.up({"tools": {}})
        self.assertEqual(self.listens(spawn), [])
        self.stop(backend)

    def test_legacyBackendHasNoListen(self) -> None:
        backend = self.make(protocol="legacy")
        backend.startService()
        spawn = self.last
        self.reply(spawn, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {"tools": {"listChanged": True}}, "serverInfo": {}})
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(self.listens(spawn), [])
        self.stop(backend)

    def test_unhonouredLoggedOnce(self) -> None:
        """An acknowledgment without a kind asked for: a warning naming it, once."""
        backend, spawn = self.up()
        with capturedLogs() as logged:
            self.ack(spawn, self.listens(spawn)[0], {"toolsListChanged": True})
        warnings = [e["log_format"].format(**e) for e in logged if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("promptsListChanged", warnings[0])
        self.assertTrue(backend.listen.is_open)
        # The next listen (a URI change) leaves it out too: not logged again.
        backend.listen.add("dual://a")
        with capturedLogs() as logged:
            self.ack(spawn, self.listens(spawn)[1], {"toolsListChanged": True, "resourceSubscriptions": ["dual://a"]})
        self.assertEqual([e for e in logged if e["log_level"] is LogLevel.warn], [])
        self.stop(backend)


class RoutingTests(ListenTestCase):
    def test_listChangedRelists(self) -> None:
        """A tagged tools/list_changed lists the tools again, as a legacy server's would."""
        backend, spawn = self.up()
        listen = self.listens(spawn)[0]
        self.ack(spawn, listen)
        self.tagged(spawn, listen, "notifications/tools/list_changed")
        self.assertEqual(self.relists(spawn).count("tools/list"), 2)
        self.reply(spawn, "tools/list", {"tools": TOOLS_2, **LISTED})
        self.assertEqual(backend.tools, TOOLS_2)
        self.stop(backend)

    def test_untaggedOrForeignIgnored(self) -> None:
        """A notification of no listen of the gateway's, or one before the acknowledgment, is dropped."""
        backend, spawn = self.up()
        listen = self.listens(spawn)[0]
        self.tagged(spawn, listen, "notifications/tools/list_changed")  # before the ack
        self.ack(spawn, listen)
        self.send(spawn, "notifications/tools/list_changed", {"_meta": {TAG: 999}})
        self.assertEqual(self.relists(spawn).count("tools/list"), 1)
        self.stop(backend)

    def test_resourceUpdatedHandedOnWithoutTheTag(self) -> None:
        """A tagged resources/updated reaches the backend's events, without the backend's subscription id."""
        backend, spawn = self.up()
        events = backend.events = RecordingEvents()
        listen = self.listens(spawn)[0]
        self.ack(spawn, listen)
        self.tagged(spawn, listen, "notifications/resources/updated", uri="dual://a")
        self.assertEqual([(m, p) for _, m, p, _ in events.notifications], [("notifications/resources/updated", {"uri": "dual://a"})])
        self.stop(backend)


class SubscriptionTests(ListenTestCase):
    def test_subscribeReplacesTheListen(self) -> None:
        """A client's subscription: a new listen with the URI, then the old
        one cancelled once the new one is acknowledged; the subscription
        succeeds then, and the update reaches the client, once though both
        listens carry it."""
        backend, spawn = self.up()
        gateway = self.gateway(backend)
        old = self.listens(spawn)[0]
        self.ack(spawn, old)
        client = _Subscriber()
        d = gateway.subscriptions.subscribe(client, backend, "dual://a", {"uri": "dual://a"}, None)
        new = self.listens(spawn)[1]
        self.assertEqual(new["params"]["notifications"]["resourceSubscriptions"], ["dual://a"])
        self.assertNoResult(d)
        self.assertEqual(self.cancels(spawn), [], "the old listen stays until the new one is acknowledged")
        self.ack(spawn, new)
        self.assertEqual(self.successResultOf(d), {})
        self.assertEqual(self.cancels(spawn), [old["id"]])
        # Both streams carry the same change during the overlap: one re-listing.
        self.tagged(spawn, new, "notifications/tools/list_changed")
        self.tagged(spawn, old, "notifications/tools/list_changed")
        self.assertEqual(self.relists(spawn).count("tools/list"), 2)
        self.tagged(spawn, new, "notifications/resources/updated", uri="dual://a")
        self.tagged(spawn, old, "notifications/resources/updated", uri="dual://a")
        self.assertEqual(client.got, [("notifications/resources/updated", {"uri": "dual://a"})])
        # After the overlap the old listen's events are not taken; the new one's each count.
        self.clock.advance(OVERLAP)
        self.tagged(spawn, old, "notifications/resources/updated", uri="dual://a")
        self.tagged(spawn, new, "notifications/resources/updated", uri="dual://a")
        self.assertEqual(len(client.got), 2)
        gateway.subscriptions.unsubscribe(client, "dual://a")
        last = self.listens(spawn)[2]
        self.assertNotIn("resourceSubscriptions", last["params"]["notifications"])
        self.ack(spawn, last)
        self.assertEqual(self.cancels(spawn), [old["id"], new["id"]])
        self.stop(backend)

    def test_refusedUriFailsTheSubscription(self) -> None:
        """A URI the acknowledgment leaves out: the subscription fails, naming the backend."""
        backend, spawn = self.up()
        gateway = self.gateway(backend)
        self.ack(spawn, self.listens(spawn)[0])
        d = gateway.subscriptions.subscribe(_Subscriber(), backend, "dual://nope", {"uri": "dual://nope"}, None)
        self.ack(spawn, self.listens(spawn)[1], {"toolsListChanged": True, "promptsListChanged": True})
        error = self.failureResultOf(d, JsonRpcError).value
        self.assertIn("does not take subscriptions to dual://nope", error.message)
        self.assertEqual(backend.listen.uris, set())
        self.stop(backend)

    def test_changesWhileOpeningCoalesce(self) -> None:
        """URIs added while a listen is being opened: one more listen with all of them, not one each."""
        backend, spawn = self.up()
        gateway = self.gateway(backend)
        self.ack(spawn, self.listens(spawn)[0])
        ds = [gateway.subscriptions.subscribe(_Subscriber(), backend, uri, {"uri": uri}, None) for uri in ("dual://a", "dual://b", "dual://c")]
        self.assertEqual(len(self.listens(spawn)), 2)
        self.ack(spawn, self.listens(spawn)[1])
        listens = self.listens(spawn)
        self.assertEqual(len(listens), 3)
        self.assertEqual(listens[2]["params"]["notifications"]["resourceSubscriptions"], ["dual://a", "dual://b", "dual://c"])
        self.ack(spawn, listens[2])
        self.assertEqual([self.successResultOf(d) for d in ds], [{}, {}, {}])
        self.assertEqual(len(self.cancels(spawn)), 2)
        self.stop(backend)


class DropTests(ListenTestCase):
    def test_dropReopensWithBackoffAndRelists(self) -> None:
        """A listen answered with an error is a drop: no new listen before
        the backoff (1 s, then 2 s: no spinning); once one is acknowledged,
        every listing again."""
        backend, spawn = self.up()
        first = self.listens(spawn)[0]
        self.ack(spawn, first)
        self.reply(spawn, "subscriptions/listen", error={"code": -32603, "message": "gone"})
        self.assertFalse(backend.listen.is_open)
        self.assertEqual(len(self.listens(spawn)), 1)
        self.clock.advance(0.9)
        self.assertEqual(len(self.listens(spawn)), 1)
        self.clock.advance(0.1)
        second = self.listens(spawn)[1]
        self.reply(spawn, "subscriptions/listen", {"resultType": "complete", "_meta": {TAG: second["id"]}})
        self.clock.advance(1.0)
        self.assertEqual(len(self.listens(spawn)), 2, "the second wait is longer")
        self.clock.advance(1.0)
        third = self.listens(spawn)[2]
        before = self.relists(spawn)
        self.ack(spawn, third)
        self.assertEqual(self.relists(spawn)[len(before) :], ["tools/list", "prompts/list", "resources/list", "resources/templates/list"])
        self.assertTrue(backend.listen.is_open)
        self.stop(backend)

    def exits(self, backend: StdioBackend, spawn: Spawn) -> None:
        spawn.protocol.processExited(Failure(ProcessTerminated(exitCode=1)))
        self.assertFalse(backend.listen.is_open)

    def restart(self, spawn: Spawn) -> Spawn:
        """After the backoff, the next process is discovered."""
        self.clock.advance(1.0)
        again = self.last
        self.assertIsNot(again, spawn)
        self.reply(again, "server/discover", {**DISCOVERED, "capabilities": CAPABILITIES})
        self.reply(again, "tools/list", {"tools": TOOLS_1, **LISTED})
        self.reply(again, "prompts/list", {"prompts": [], **LISTED})
        self.reply(again, "resources/list", {"resources": [], **LISTED})
        self.reply(again, "resources/templates/list", {"resourceTemplates": [], **LISTED})
        return again

    def subscribed(self) -> tuple[StdioBackend, Spawn, Gateway, _Subscriber]:
        backend, spawn = self.up()
        gateway = self.gateway(backend)
        self.ack(spawn, self.listens(spawn)[0])
        client = _Subscriber()
        gateway.subscriptions.subscribe(client, backend, "dual://a", {"uri": "dual://a"}, None)
        self.ack(spawn, self.listens(spawn)[1])
        return backend, spawn, gateway, client

    def test_notAcknowledgedInTime(self) -> None:
        """A listen not acknowledged within callTimeout (5 s): cancelled, its
        subscription fails, and another listen follows the backoff."""
        backend, spawn = self.up()
        gateway = self.gateway(backend)
        d = gateway.subscriptions.subscribe(_Subscriber(), backend, "dual://a", {"uri": "dual://a"}, None)
        first = self.listens(spawn)[0]
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.cancels(spawn), [first["id"]])
        self.assertIn("no acknowledgment within 5 s", self.failureResultOf(d, JsonRpcError).value.message)
        self.clock.advance(1.0)
        second = self.listens(spawn)[1]
        self.assertNotIn("resourceSubscriptions", second["params"]["notifications"])
        self.ack(spawn, second)
        self.assertTrue(backend.listen.is_open)
        self.stop(backend)

    def test_refusedReplacementKeepsTheOpenListen(self) -> None:
        """A new listen (for a new URI) refused: that subscription fails; the
        open listen still carries everything else, so nothing more is sent."""
        backend, spawn = self.up()
        gateway = self.gateway(backend)
        first = self.listens(spawn)[0]
        self.ack(spawn, first)
        d = gateway.subscriptions.subscribe(_Subscriber(), backend, "dual://a", {"uri": "dual://a"}, None)
        self.reply(spawn, "subscriptions/listen", error={"code": -32603, "message": "Subscription limit reached"})
        self.assertIn("Subscription limit reached", self.failureResultOf(d, JsonRpcError).value.message)
        self.assertTrue(backend.listen.is_open)
        self.clock.advance(60)
        self.assertEqual(len(self.listens(spawn)), 2)
        self.assertEqual(self.cancels(spawn), [])
        self.tagged(spawn, first, "notifications/tools/list_changed")
        self.assertEqual(self.relists(spawn).count("tools/list"), 2)
        self.stop(backend)

    def test_restartOpensAgainWithTheUris(self) -> None:
        """The backend restarting: the new process gets one listen, with the URIs clients hold."""
        backend, spawn, _, _ = self.subscribed()
        self.exits(backend, spawn)
        again = self.restart(spawn)
        [listen] = self.listens(again)
        self.assertEqual(listen["params"]["notifications"]["resourceSubscriptions"], ["dual://a"])
        self.ack(again, listen)
        self.assertEqual(len(self.listens(again)), 1)
        self.stop(backend)

    def test_unsubscribedWhileDown(self) -> None:
        """A client that leaves while the backend restarts: the next listen does not carry its URI."""
        backend, spawn, gateway, client = self.subscribed()
        self.exits(backend, spawn)
        gateway.subscriptions.session_ended(client)
        again = self.restart(spawn)
        [listen] = self.listens(again)
        self.assertNotIn("resourceSubscriptions", listen["params"]["notifications"])
        self.stop(backend)

    def test_stopCancelsTheListen(self) -> None:
        """Stopping: the open listen and the one being opened are cancelled
        (notifications/cancelled before stdin closes), a waiting subscription
        fails, no timer is left (self.stop checks)."""
        backend, spawn = self.up()
        gateway = self.gateway(backend)
        first = self.listens(spawn)[0]
        self.ack(spawn, first)
        d = gateway.subscriptions.subscribe(_Subscriber(), backend, "dual://a", {"uri": "dual://a"}, None)
        second = self.listens(spawn)[1]
        self.stop(backend)
        self.assertEqual(sorted(self.cancels(spawn)), [first["id"], second["id"]])
        self.failureResultOf(d, JsonRpcError)
        self.assertEqual(backend.listen.requests, 0)
        self.assertEqual(spawn.protocol.session.peer.pending_count, 0)

    def test_stopDuringBackoff(self) -> None:
        backend, spawn = self.up()
        self.ack(spawn, self.listens(spawn)[0])
        self.reply(spawn, "subscriptions/listen", error={"code": -32603, "message": "gone"})
        self.stop(backend)


class _BareSession:
    """Just what a BackendListen asks of its session: requests it can fire, a relisting."""

    capabilities = {"tools": {"listChanged": True}, "resources": {"subscribe": True}}

    def __init__(self) -> None:
        self.sent: list[tuple[int, dict[str, Any], Deferred[Any]]] = []
        self.relisted = 0

    def own_request(self, method: str, params: dict[str, Any], timeout: Any, minted: Any = None) -> Deferred[Any]:
        rid = len(self.sent) + 1
        minted(rid)
        d: Deferred[Any] = Deferred()
        self.sent.append((rid, params, d))
        return d

    def relist_everything(self) -> None:
        self.relisted += 1


class ReplacementEdgeTests(SynchronousTestCase):
    """Replacements that fail or race a drop (found in review)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.listen = BackendListen("b", self.clock, 1.0, 8.0, 60.0, 10.0)
        self.session = _BareSession()
        self.listen.attach(self.session)  # type: ignore[arg-type]

    def tearDown(self) -> None:
        self.listen.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def ack(self, index: int) -> None:
        rid, params, _ = self.session.sent[index]
        self.listen.admit("notifications/subscriptions/acknowledged", {"notifications": params["notifications"]}, rid)

    def test_aSubscriptionTheOpenListenCarriesSucceedsWhenItsReplacementFails(self) -> None:
        self.ack(0)
        first = self.listen.add("a")
        self.ack(1)
        self.successResultOf(first)
        self.listen.remove("a")  # a listen without it opens
        again = self.listen.add("a")  # and the client wants it back meanwhile
        self.session.sent[2][2].errback(JsonRpcError(-32603, "refused"))
        self.assertEqual(self.successResultOf(again), {})
        self.clock.advance(100)
        self.assertEqual(len(self.session.sent), 3)  # the open listen carries it: nothing reopened

    def test_aReplacementAcknowledgedAfterADropCancelsTheReopening(self) -> None:
        self.ack(0)
        added = self.listen.add("a")  # the replacement opens
        self.session.sent[0][2].callback({})  # the open listen ends: a drop, reopened after 1 s
        self.ack(1)  # the replacement is acknowledged: a listen is open again
        self.successResultOf(added)
        self.assertEqual(self.session.relisted, 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.session.sent), 2)
