"""
Tests for what a backend passes beyond tools (L{McpClientSession} through a
L{StdioBackend} on a fake spawner and a Clock): the client capabilities it
declares, discovery of prompts, resources and resource templates, their
re-listing on list_changed, and the server's own requests and
notifications handed to L{BackendEvents}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from twisted.internet.defer import succeed
from twisted.logger import capturedLogs

from twisted_mcp.backends import listings, server_requests
from twisted_mcp.backends.base import State
from twisted_mcp.backends.session import CLIENT_CAPABILITIES
from twisted_mcp.backends.stdio import StdioBackend
from twisted_mcp.mcp.versions import HANDSHAKE_VERSIONS
from twisted_mcp.wire.jsonrpc import JsonRpcError, encode

from .fakes import RecordingEvents, Spawn
from .test_stdio_backend import TOOLS_1, BackendTestCase

SPEC = Path("/work/shared/mcp-spec")
EVERYTHING = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"listChanged": True, "subscribe": True},
    "logging": {},
}
PROMPTS = [{"name": "simple_prompt"}, {"name": "complex_prompt", "arguments": [{"name": "temperature", "required": True}]}]
RESOURCES = [{"uri": "test://static/resource/1", "name": "Resource 1", "mimeType": "text/plain"}]
TEMPLATES = [{"uriTemplate": "test://static/resource/{id}", "name": "Static Resource"}]


def logged_text(events: list[dict[str, Any]]) -> list[str]:
    return [e["log_format"].format(**e) for e in events]


class SurfaceTestCase(BackendTestCase):
    def init(
        self, spawn: Spawn, capabilities: dict[str, Any] = EVERYTHING, instructions: str | None = None
    ) -> None:
        result: dict[str, Any] = {
            "protocolVersion": "2025-06-18",
            "capabilities": capabilities,
            "serverInfo": {"name": "fake-everything", "version": "1.0"},
        }
        if instructions is not None:
            result["instructions"] = instructions
        self.reply(spawn, "initialize", result)

    def server_says(self, spawn: Spawn, message: dict[str, Any]) -> None:
        """A message the server writes on its stdout."""
        spawn.protocol.outReceived(encode(dict(message, jsonrpc="2.0")))

    def requests(self, spawn: Spawn, method: str) -> list[dict[str, Any]]:
        return [m for m in spawn.transport.messages() if m.get("method") == method and "id" in m]

    def answers(self, spawn: Spawn) -> list[dict[str, Any]]:
        """What the gateway wrote that is an answer (to the server's requests)."""
        return [m for m in spawn.transport.messages() if "method" not in m]

    def everything_up(self, events: RecordingEvents | None = None) -> tuple[StdioBackend, Spawn]:
        backend = self.make()
        backend.events = events
        backend.startService()
        spawn = self.last
        self.init(spawn)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.reply(spawn, "prompts/list", {"prompts": PROMPTS})
        self.reply(spawn, "resources/list", {"resources": RESOURCES})
        self.reply(spawn, "resources/templates/list", {"resourceTemplates": TEMPLATES})
        self.assertEqual(backend.state, State.UP)
        return backend, spawn


class HandshakeTests(SurfaceTestCase):
    def test_clientCapabilitiesDeclared(self) -> None:
        """The gateway says it can pass on sampling, elicitation (both
        modes) and roots, in a shape every handshake-era schema accepts."""
        backend = self.make()
        backend.startService()
        (init,) = self.requests(self.last, "initialize")
        declared = init["params"]["capabilities"]
        self.assertEqual(
            declared,
            {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": True}},
        )
        self.assertEqual(declared, CLIENT_CAPABILITIES)
        for version in HANDSHAKE_VERSIONS:
            schema = json.loads((SPEC / version / "schema.json").read_text())
            definitions = "$defs" if "$defs" in schema else "definitions"
            validator = jsonschema.validators.validator_for(schema)(
                dict(schema, **{"$ref": f"#/{definitions}/ClientCapabilities"})
            )
            self.assertEqual([e.message for e in validator.iter_errors(declared)], [], version)
        self.stop(backend)

    def test_whatTheHandshakeSaidIsKept(self) -> None:
        backend = self.make()
        self.assertEqual((backend.capabilities, backend.instructions, backend.server_info), ({}, None, {}))
        backend.startService()
        spawn = self.last
        self.init(spawn, {"tools": {}}, instructions="Use get_time for the time.")
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(backend.capabilities, {"tools": {}})
        self.assertEqual(backend.instructions, "Use get_time for the time.")
        self.assertEqual(backend.server_info, {"name": "fake-everything", "version": "1.0"})
        # Kept while the backend is down.
        spawn.protocol.processExited(self.exited_failure())
        self.assertEqual(backend.state, State.DOWN)
        self.assertEqual(backend.instructions, "Use get_time for the time.")
        self.stop(backend)

    def exited_failure(self) -> Any:
        from .test_stdio_backend import exited

        return exited(1)


class DiscoveryTests(SurfaceTestCase):
    def test_everyKindListed(self) -> None:
        with capturedLogs() as logged:
            backend, spawn = self.everything_up()
        listed = [m["method"] for m in spawn.transport.messages() if m.get("method", "").endswith("/list")]
        self.assertEqual(listed, ["tools/list", "prompts/list", "resources/list", "resources/templates/list"])
        self.assertEqual(backend.tools, TOOLS_1)
        self.assertEqual(backend.prompts, PROMPTS)
        self.assertEqual(backend.resources, RESOURCES)
        self.assertEqual(backend.resource_templates, TEMPLATES)
        self.assertIn(
            "backend time is up: 1 tool(s), 2 prompt(s), 1 resource(s), 1 resource template(s) "
            "from fake-everything 1.0 (protocol 2025-06-18, legacy, pinned)",
            logged_text(logged),
        )
        self.stop(backend)

    def test_onlyWhatIsOffered(self) -> None:
        """A server that offers tools alone is asked for nothing else; one
        that offers prompts alone is not asked for tools."""
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.init(spawn, {"tools": {}})
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(backend.state, State.UP)
        self.assertEqual([m.get("method") for m in spawn.transport.messages()], ["initialize", "notifications/initialized", "tools/list"])
        self.assertEqual((backend.prompts, backend.resources, backend.resource_templates), ([], [], []))
        self.stop(backend)

        backend = self.make()
        backend.startService()
        spawn = self.last
        self.init(spawn, {"prompts": {}})
        self.reply(spawn, "prompts/list", {"prompts": PROMPTS})
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(self.requests(spawn, "tools/list"), [])
        self.assertEqual((backend.tools, backend.prompts), ([], PROMPTS))
        self.stop(backend)

    def test_eachKindPaginated(self) -> None:
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.init(spawn)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        for method, key, entries in (
            ("prompts/list", "prompts", PROMPTS),
            ("resources/list", "resources", RESOURCES + [{"uri": "test://2", "name": "two"}]),
            ("resources/templates/list", "resourceTemplates", TEMPLATES + [{"uriTemplate": "x://{y}", "name": "xy"}]),
        ):
            self.reply(spawn, method, {key: entries[:1], "nextCursor": f"{key}-2"})
            self.reply(spawn, method, {key: entries[1:]})
            self.assertEqual([m.get("params") for m in self.requests(spawn, method)], [None, {"cursor": f"{key}-2"}])
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(len(backend.prompts), 2)
        self.assertEqual(len(backend.resources), 2)
        self.assertEqual(len(backend.resource_templates), 2)
        self.stop(backend)

    def test_failedListingLeavesItEmpty(self) -> None:
        """A refused prompts/list, an oversized resources/list and a
        templates listing that repeats its cursor each leave that listing
        empty: the backend comes up with the rest."""
        backend = self.make(max_message=4096)
        backend.startService()
        spawn = self.last
        self.init(spawn)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        with capturedLogs() as logged:
            self.reply(spawn, "prompts/list", error={"code": -32603, "message": "prompts are broken"})
            page = [{"uri": f"test://{'x' * 100}/{i}"} for i in range(25)]
            self.reply(spawn, "resources/list", {"resources": page, "nextCursor": "2"})
            self.reply(spawn, "resources/list", {"resources": page})
            self.reply(spawn, "resources/templates/list", {"resourceTemplates": TEMPLATES, "nextCursor": "a"})
            self.reply(spawn, "resources/templates/list", {"resourceTemplates": TEMPLATES, "nextCursor": "a"})
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(backend.tools, TOOLS_1)
        self.assertEqual((backend.prompts, backend.resources, backend.resource_templates), ([], [], []))
        text = logged_text(logged)
        self.assertIn(
            "backend time: prompts/list was refused: prompts are broken (-32603); "
            "it is listed without prompts until it says they changed or restarts",
            text,
        )
        self.assertTrue(any("resources/list gave more than 4096 bytes of resource definitions (gateway.maxMessageBytes)" in t for t in text), text)
        self.assertTrue(any("resources/templates/list repeated or gave a bad nextCursor 'a'" in t for t in text), text)
        self.stop(backend)

    def test_listingPagesBounded(self) -> None:
        self.patch(listings, "MAX_LISTING_PAGES", 2)
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.init(spawn, {"tools": {}, "prompts": {}})
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        with capturedLogs() as logged:
            self.reply(spawn, "prompts/list", {"prompts": PROMPTS, "nextCursor": "1"})
            self.reply(spawn, "prompts/list", {"prompts": PROMPTS, "nextCursor": "2"})
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(backend.prompts, [])
        self.assertTrue(any("prompts/list gave more than 2 pages" in t for t in logged_text(logged)))
        self.stop(backend)

    def test_unansweredListingDoesNotFailDiscovery(self) -> None:
        """A server that never answers resources/list is brought up without
        resources before discoveryTimeout (10 s) gives up on it, and is told
        the listing was cancelled."""
        backend = self.make()
        backend.startService()
        discovered = backend.when_discovered()
        spawn = self.last
        self.init(spawn)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.reply(spawn, "prompts/list", {"prompts": PROMPTS})
        (listing,) = self.requests(spawn, "resources/list")
        self.clock.advance(8.99)
        self.assertEqual(backend.state, State.STARTING)
        with capturedLogs() as logged:
            self.clock.advance(0.01)
        self.assertTrue(
            any("resources/list did not finish within discoveryTimeout (10 s)" in t for t in logged_text(logged)), logged_text(logged)
        )
        cancelled = [m for m in spawn.transport.messages() if m.get("method") == "notifications/cancelled"]
        self.assertEqual([m["params"]["requestId"] for m in cancelled], [listing["id"]])
        # Templates get no time left either.
        self.assertEqual(self.requests(spawn, "resources/templates/list"), [])
        self.successResultOf(discovered)
        self.assertEqual(backend.state, State.UP)
        self.assertEqual((backend.prompts, backend.resources), (PROMPTS, []))
        self.stop(backend)

    def test_toolsListingStillFatal(self) -> None:
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.init(spawn)
        self.reply(spawn, "tools/list", error={"code": -32603, "message": "no tools today"})
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("tools/list was refused: no tools today", backend.last_error or "")
        self.assertEqual(self.requests(spawn, "prompts/list"), [])
        self.stop(backend)

    def test_malformedEntriesSkipped(self) -> None:
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.init(spawn)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        with capturedLogs() as logged:
            self.reply(spawn, "prompts/list", {"prompts": [{"name": 7}, {"title": "no name"}, "p", {"name": "ok"}]})
            self.reply(spawn, "resources/list", {"resources": [{"uri": None, "name": "n"}, {"uri": "test://ok", "name": "ok"}]})
            self.reply(spawn, "resources/templates/list", {"resourceTemplates": [{"uri": "test://{x}"}, {"uriTemplate": "test://{x}"}]})
        self.assertEqual(backend.prompts, [{"name": "ok"}])
        self.assertEqual(backend.resources, [{"uri": "test://ok", "name": "ok"}])
        self.assertEqual(backend.resource_templates, [{"uriTemplate": "test://{x}"}])
        text = logged_text(logged)
        self.assertEqual(sum("ignoring a malformed prompt definition (it needs a string name)" in t for t in text), 3)
        self.assertEqual(sum("ignoring a malformed resource definition (it needs a string uri)" in t for t in text), 1)
        self.assertEqual(
            sum("ignoring a malformed resource template definition (it needs a string uriTemplate)" in t for t in text), 1
        )
        self.stop(backend)


class ListChangedTests(SurfaceTestCase):
    def test_eachKindListedAgain(self) -> None:
        backend, spawn = self.everything_up()
        seen: list[tuple[Any, ...]] = []
        backend.add_listener(lambda b: seen.append((list(b.prompts), list(b.resources), list(b.resource_templates))))

        self.server_says(spawn, {"method": "notifications/prompts/list_changed"})
        self.assertEqual(len(self.requests(spawn, "prompts/list")), 2)
        self.assertEqual(len(self.requests(spawn, "resources/list")), 1)
        self.reply(spawn, "prompts/list", {"prompts": PROMPTS[:1]})
        self.assertEqual(backend.prompts, PROMPTS[:1])
        self.assertEqual(seen, [(PROMPTS[:1], RESOURCES, TEMPLATES)])

        # Resources: both resources and templates are listed again.
        self.server_says(spawn, {"method": "notifications/resources/list_changed"})
        self.assertEqual(len(self.requests(spawn, "resources/list")), 2)
        self.assertEqual(len(self.requests(spawn, "resources/templates/list")), 2)
        more = RESOURCES + [{"uri": "test://new", "name": "new"}]
        self.reply(spawn, "resources/list", {"resources": more})
        self.reply(spawn, "resources/templates/list", {"resourceTemplates": []})
        self.assertEqual((backend.resources, backend.resource_templates), (more, []))
        self.assertEqual(seen[1:], [(PROMPTS[:1], more, TEMPLATES), (PROMPTS[:1], more, [])])

        # The same listing again: no listener call.
        self.server_says(spawn, {"method": "notifications/tools/list_changed"})
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(len(seen), 3)
        self.stop(backend)

    def test_coalescedPerKind(self) -> None:
        backend, spawn = self.everything_up()
        for _ in range(3):
            self.server_says(spawn, {"method": "notifications/prompts/list_changed"})
        self.assertEqual(len(self.requests(spawn, "prompts/list")), 2)
        self.reply(spawn, "prompts/list", {"prompts": PROMPTS})
        # One more for the changes that came meanwhile, and no more.
        self.assertEqual(len(self.requests(spawn, "prompts/list")), 3)
        self.reply(spawn, "prompts/list", {"prompts": PROMPTS})
        self.assertEqual(len(self.requests(spawn, "prompts/list")), 3)
        self.stop(backend)

    def test_failedRelistKeepsTheListing(self) -> None:
        backend, spawn = self.everything_up()
        self.server_says(spawn, {"method": "notifications/prompts/list_changed"})
        with capturedLogs() as logged:
            self.reply(spawn, "prompts/list", error={"code": -32603, "message": "busy"})
        self.assertEqual(backend.prompts, PROMPTS)
        self.assertTrue(any("could not list its prompts again after it said they changed: busy" in t for t in logged_text(logged)))
        self.stop(backend)

    def test_changeDuringDiscoveryListedOnceUp(self) -> None:
        """A list_changed that arrives while discovery lists is not lost:
        that kind is listed again once the backend is up."""
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.init(spawn)
        self.server_says(spawn, {"method": "notifications/prompts/list_changed"})
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.reply(spawn, "prompts/list", {"prompts": PROMPTS})
        self.reply(spawn, "resources/list", {"resources": RESOURCES})
        self.assertEqual(len(self.requests(spawn, "prompts/list")), 1)
        self.reply(spawn, "resources/templates/list", {"resourceTemplates": TEMPLATES})
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(len(self.requests(spawn, "prompts/list")), 2)
        self.reply(spawn, "prompts/list", {"prompts": PROMPTS[1:]})
        self.assertEqual(backend.prompts, PROMPTS[1:])
        self.stop(backend)

    def test_kindNotOfferedIgnored(self) -> None:
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.init(spawn, {"tools": {}})
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.server_says(spawn, {"method": "notifications/prompts/list_changed"})
        self.server_says(spawn, {"method": "notifications/resources/list_changed"})
        self.assertEqual(self.requests(spawn, "prompts/list") + self.requests(spawn, "resources/list"), [])
        self.stop(backend)

    def test_listChangedNotHandedOn(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        for kind in ("tools", "prompts", "resources"):
            self.server_says(spawn, {"method": f"notifications/{kind}/list_changed"})
        self.assertEqual(events.notifications, [])
        self.stop(backend)


class ServerRequestTests(SurfaceTestCase):
    def test_handedOnAndAnsweredWithTheServersId(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        params = {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}], "maxTokens": 10}
        self.server_says(spawn, {"id": "s-1", "method": "sampling/createMessage", "params": params})
        self.server_says(spawn, {"id": 7, "method": "roots/list"})
        first, second = events.requests
        self.assertEqual((first.backend, first.method, first.params, first.related), (backend, "sampling/createMessage", params, None))
        self.assertEqual((second.method, second.params, second.related), ("roots/list", {}, None))
        self.assertEqual(self.answers(spawn), [])
        second.deferred.callback({"roots": []})
        first.deferred.callback({"role": "assistant", "content": {"type": "text", "text": "hello"}, "model": "m"})
        self.assertEqual(
            self.answers(spawn),
            [
                {"jsonrpc": "2.0", "id": 7, "result": {"roots": []}},
                {"jsonrpc": "2.0", "id": "s-1", "result": {"role": "assistant", "content": {"type": "text", "text": "hello"}, "model": "m"}},
            ],
        )
        self.assertEqual(backend.child.session.held_requests, 0)
        self.stop(backend)

    def test_errorsAnswered(self) -> None:
        """A JsonRpcError is the answer's error as it is; anything else is
        -32603 without its details (and logged); a refusal at once too."""
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        self.server_says(spawn, {"id": 1, "method": "elicitation/create", "params": {"message": "name?"}})
        self.server_says(spawn, {"id": 2, "method": "sampling/createMessage", "params": {}})
        refused, broken = events.requests
        refused.deferred.errback(JsonRpcError(-32600, "no client of this session can answer elicitation/create", {"backend": "time"}))
        with capturedLogs() as logged:
            broken.deferred.errback(RuntimeError("secret internals"))
        self.assertEqual(
            self.answers(spawn),
            [
                {"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "no client of this session can answer elicitation/create", "data": {"backend": "time"}}},
                {"jsonrpc": "2.0", "id": 2, "error": {"code": -32603, "message": "the gateway failed to handle sampling/createMessage"}},
            ],
        )
        self.assertTrue(any(e.get("log_failure") is not None for e in logged))
        self.flushLoggedErrors(RuntimeError)

        def refuse(*args: Any) -> Any:
            raise JsonRpcError(-32601, "refused at once")

        self.patch(events, "server_request", refuse)
        self.server_says(spawn, {"id": 3, "method": "roots/list"})
        self.assertEqual(self.answers(spawn)[-1], {"jsonrpc": "2.0", "id": 3, "error": {"code": -32601, "message": "refused at once"}})

        def crash(*args: Any) -> Any:
            raise RuntimeError("secret internals")

        self.patch(events, "server_request", crash)
        self.server_says(spawn, {"id": 4, "method": "roots/list"})
        self.assertEqual(
            self.answers(spawn)[-1], {"jsonrpc": "2.0", "id": 4, "error": {"code": -32603, "message": "the gateway failed to handle roots/list"}}
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(backend.child.session.held_requests, 0)
        self.stop(backend)

    def test_answeredAtOnce(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        self.patch(events, "server_request", lambda *args: succeed({"roots": [{"uri": "file:///tmp"}]}))
        self.server_says(spawn, {"id": 4, "method": "roots/list"})
        self.assertEqual(self.answers(spawn), [{"jsonrpc": "2.0", "id": 4, "result": {"roots": [{"uri": "file:///tmp"}]}}])
        self.assertEqual(backend.child.session.held_requests, 0)
        self.stop(backend)

    def test_cancelledByTheServer(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        self.server_says(spawn, {"id": "e-1", "method": "elicitation/create", "params": {"message": "?"}})
        self.server_says(spawn, {"id": "e-2", "method": "elicitation/create", "params": {"message": "?"}})
        first, second = events.requests
        # A cancel for an id that is not held (or is ours) changes nothing.
        self.server_says(spawn, {"method": "notifications/cancelled", "params": {"requestId": "nope"}})
        self.server_says(spawn, {"method": "notifications/cancelled", "params": {"requestId": "e-1", "reason": "user left"}})
        self.assertTrue(first.cancelled)
        self.assertFalse(second.cancelled)
        self.assertEqual(backend.child.session.held_requests, 1)
        # A cancelled request is never answered.
        self.assertEqual(self.answers(spawn), [])
        second.deferred.callback({"action": "decline"})
        self.assertEqual(self.answers(spawn), [{"jsonrpc": "2.0", "id": "e-2", "result": {"action": "decline"}}])
        self.assertEqual(events.notifications, [])
        self.stop(backend)

    def test_connectionLossCancelsHeldRequests(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        self.server_says(spawn, {"id": 1, "method": "sampling/createMessage", "params": {}})
        self.server_says(spawn, {"id": 2, "method": "roots/list"})
        spawn.protocol.processExited(self.exited_failure())
        self.assertEqual([r.cancelled for r in events.requests], [True, True])
        self.assertEqual(spawn.protocol.session.held_requests, 0)
        self.assertEqual(self.answers(spawn), [])
        self.stop(backend)

    def exited_failure(self) -> Any:
        from .test_stdio_backend import exited

        return exited(1)

    def test_stopCancelsHeldRequests(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        self.server_says(spawn, {"id": 1, "method": "sampling/createMessage", "params": {}})
        self.stop(backend)
        self.assertTrue(events.requests[0].cancelled)

    def test_heldRequestsBounded(self) -> None:
        self.patch(server_requests, "MAX_HELD_REQUESTS", 2)
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        for rid in (1, 2, 3):
            self.server_says(spawn, {"id": rid, "method": "roots/list"})
        self.assertEqual(len(events.requests), 2)
        self.assertEqual(
            self.answers(spawn),
            [{"jsonrpc": "2.0", "id": 3, "error": {"code": -32603, "message": "the gateway already holds 2 requests from backend 'time', its limit; answer or cancel some first"}}],
        )
        events.requests[0].deferred.callback({"roots": []})
        self.server_says(spawn, {"id": 4, "method": "roots/list"})
        self.assertEqual(len(events.requests), 3)
        self.stop(backend)

    def test_badRequestsRefused(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        self.server_says(spawn, {"id": 1, "method": "roots/list"})
        self.server_says(spawn, {"id": 1, "method": "roots/list"})
        self.server_says(spawn, {"id": 2, "method": "sampling/createMessage", "params": [1, 2]})
        self.assertEqual(len(events.requests), 1)
        self.assertEqual(
            self.answers(spawn),
            [
                {"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "request id 1 is already in use by a request in progress"}},
                {"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "the params of sampling/createMessage must be an object"}},
            ],
        )
        self.stop(backend)

    def test_withoutEventsRefused(self) -> None:
        backend, spawn = self.everything_up(None)
        self.server_says(spawn, {"id": 1, "method": "sampling/createMessage", "params": {}})
        self.assertEqual(
            self.answers(spawn),
            [{"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "the gateway does not pass sampling/createMessage on to its clients"}}],
        )
        self.stop(backend)

    def test_pingAnsweredByTheBackend(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        self.server_says(spawn, {"id": "p", "method": "ping"})
        self.assertEqual(self.answers(spawn), [{"jsonrpc": "2.0", "id": "p", "result": {}}])
        self.assertEqual(events.requests, [])
        self.stop(backend)


class ServerNotificationTests(SurfaceTestCase):
    def test_handedOn(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        with capturedLogs() as logged:
            self.server_says(spawn, {"method": "notifications/message", "params": {"level": "warning", "logger": "db", "data": "slow"}})
        self.server_says(spawn, {"method": "notifications/resources/updated", "params": {"uri": "test://static/resource/1"}})
        self.server_says(spawn, {"method": "notifications/custom", "params": "not an object"})
        self.assertEqual(
            events.notifications,
            [
                (backend, "notifications/message", {"level": "warning", "logger": "db", "data": "slow"}, None),
                (backend, "notifications/resources/updated", {"uri": "test://static/resource/1"}, None),
                (backend, "notifications/custom", {}, None),
            ],
        )
        # Still in the gateway's log too.
        (line,) = [e for e in logged if "says" in e["log_format"]]
        self.assertEqual(logged_text([line]), ["backend time says (db): slow"])
        self.assertEqual(line["log_level"].name, "warn")
        self.stop(backend)

    def test_progressAndCancelledNotHandedOn(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)
        self.server_says(spawn, {"method": "notifications/progress", "params": {"progressToken": 99, "progress": 1}})
        self.server_says(spawn, {"method": "notifications/cancelled", "params": {"requestId": 5}})
        self.assertEqual(events.notifications, [])
        self.stop(backend)

    def test_failingHandlerDoesNotBreakThePipe(self) -> None:
        events = RecordingEvents()
        backend, spawn = self.everything_up(events)

        def broken(*args: Any) -> None:
            raise RuntimeError("boom")

        self.patch(events, "server_notification", broken)
        self.server_says(spawn, {"method": "notifications/resources/updated", "params": {"uri": "x"}})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        d = backend.call("tools/call", {"name": "get_time"})
        self.reply(spawn, "tools/call", {"content": []})
        self.assertEqual(self.successResultOf(d), {"content": []})
        self.stop(backend)


class NotifyTests(SurfaceTestCase):
    def test_sentToTheCurrentSession(self) -> None:
        backend, spawn = self.everything_up()
        backend.notify("notifications/roots/list_changed", None)
        backend.notify("notifications/progress", {"progressToken": "s-1", "progress": 0.5})
        notes = [m for m in spawn.transport.messages() if m.get("method", "").startswith("notifications/") and "id" not in m]
        self.assertEqual(
            notes[-2:],
            [
                {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
                {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "s-1", "progress": 0.5}},
            ],
        )
        self.stop(backend)

    def test_droppedWhenNotUp(self) -> None:
        backend = self.make()
        backend.notify("notifications/roots/list_changed", None)  # stopped: nothing to send to
        backend.startService()
        spawn = self.last
        backend.notify("notifications/roots/list_changed", None)  # starting
        self.assertEqual([m.get("method") for m in spawn.transport.messages()], ["initialize"])
        self.stop(backend)
