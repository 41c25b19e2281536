"""
C{subscriptions/listen} on the HTTP front (2026-07-28): the POST is answered
with an SSE stream at once, the acknowledgment first, every notification
tagged with the listen's id as the client sent it (not the gateway's own),
keep-alive comments while it is open, closing the POST ends it (its
subscriptions dropped, nothing answered), the gateway stopping answers it
with the spec's result; over a real L{McpSite} on a L{StringTransport}.
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.dispatch.listens import SUBSCRIPTION_ID

from .test_http_front import JSON_AND_SSE, MODERN, Connection, FrontCase, modern_headers

LISTEN_HEADERS = modern_headers("subscriptions/listen", None)


def listen(rid: Any, **notifications: Any) -> dict[str, Any]:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    return {"jsonrpc": "2.0", "id": rid, "method": "subscriptions/listen", "params": {"notifications": notifications, "_meta": meta}}


class HttpListenTests(FrontCase):
    def setUp(self) -> None:
        super().setUp()
        self.backend.resources = [{"uri": "alpha://doc", "name": "doc"}]
        self.backend.capabilities = {"tools": {}, "resources": {"subscribe": True}}
        self.gateway._changed(self.gateway._rebuild())

    def open(self, rid: Any = "L", headers: dict[str, str | None] | None = None, **notifications: Any) -> Connection:
        c = Connection(self.site)
        c.send(body=listen(rid, **notifications), headers=headers or LISTEN_HEADERS)
        return c

    def test_theListenIsAnSseStreamAtOnceTaggedWithTheClientsId(self) -> None:
        c = self.open("L", toolsListChanged=True)
        r = c.response()
        self.assertEqual((r.status, r.headers["content-type"]), (200, "text/event-stream"))
        self.assertFalse(r.finished)
        (ack,) = r.events()
        self.assertEqual(ack["method"], "notifications/subscriptions/acknowledged")
        self.assertEqual(ack["params"], {"notifications": {"toolsListChanged": True}, "_meta": {SUBSCRIPTION_ID: "L"}})
        self.gateway._changed(frozenset({"tools"}))
        ack, change = c.response().events()
        self.assertEqual(change["method"], "notifications/tools/list_changed")
        self.assertEqual(change["params"]["_meta"], {SUBSCRIPTION_ID: "L"})
        before = c.transport.value()
        self.resource.keep_alive()
        self.assertIn(b": keep-alive", c.transport.value()[len(before) :])
        c.close()

    def test_twoClientsOfOnePrincipalListenUnderTheSameIdEachOnItsOwnStream(self) -> None:
        a, b = self.open(1, toolsListChanged=True), self.open(1, toolsListChanged=True)
        self.gateway._changed(frozenset({"tools"}))
        for c in (a, b):
            events = c.response().events()
            self.assertEqual([e["method"] for e in events], ["notifications/subscriptions/acknowledged", "notifications/tools/list_changed"])
            self.assertEqual({e["params"]["_meta"][SUBSCRIPTION_ID] for e in events}, {1})
        self.assertEqual(len(self.resource.table), 1)
        a.close()
        b.close()

    def test_closingThePostEndsTheListenAndItsSubscriptions(self) -> None:
        c = self.open("L", resourceSubscriptions=["alpha://doc"])
        (subscribe,) = self.backend.calls
        self.assertEqual((subscribe.method, subscribe.params), ("resources/subscribe", {"uri": "alpha://doc"}))
        subscribe.deferred.callback({})
        self.assertEqual(c.response().events()[0]["params"]["notifications"], {"resourceSubscriptions": ["alpha://doc"]})
        self.gateway.reverse.server_notification(self.backend, "notifications/resources/updated", {"uri": "alpha://doc"}, None)
        update = c.response().events()[-1]
        self.assertEqual(update["params"], {"uri": "alpha://doc", "_meta": {SUBSCRIPTION_ID: "L"}})
        c.close()
        self.assertEqual([call.method for call in self.backend.calls], ["resources/subscribe", "resources/unsubscribe"])
        core = next(iter(self.resource.table.sessions.values())).core
        self.assertEqual((core.in_flight, core.listens.open), ({}, {}))

    def test_anOpenListenKeepsTheStatelessSessionAlive(self) -> None:
        c = self.open("L", toolsListChanged=True)
        self.clock.advance(self.settings.sessionIdleTimeout * 3)
        self.assertEqual(len(self.resource.table), 1)
        c.close()
        self.clock.advance(self.settings.sessionIdleTimeout)
        self.assertEqual(len(self.resource.table), 0)

    def test_aListenThatDoesNotAcceptSseIs406(self) -> None:
        c = self.open("L", headers={**LISTEN_HEADERS, "accept": "application/json"}, toolsListChanged=True)
        r = c.response()
        self.assertEqual((r.status, r.json()["error"]["code"], r.json()["id"]), (406, -32600, "L"))
        self.assertIn("text/event-stream", r.json()["error"]["message"])

    def test_theGatewayStoppingAnswersTheListenWithTheResultAndEndsTheStream(self) -> None:
        c = self.open("L", toolsListChanged=True)
        d = self.resource.stop(30)
        r = c.response()
        self.assertTrue(r.finished)
        ack, result = r.events()
        self.assertEqual(result["id"], "L")
        self.assertEqual(result["result"]["resultType"], "complete")
        self.assertEqual(result["result"]["_meta"][SUBSCRIPTION_ID], "L")
        self.successResultOf(d)

    def test_aListenIsNeverSentAnotherCallsProgress(self) -> None:
        c = self.open("L", toolsListChanged=True)
        call = Connection(self.site)
        body = {
            "jsonrpc": "2.0",
            "id": 9,
            "method": "tools/call",
            "params": {
                "name": "alpha__echo",
                "arguments": {},
                "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}, "progressToken": "p"},
            },
        }
        call.send(body=body, headers={**modern_headers(), "accept": JSON_AND_SSE})
        (backend_call,) = self.backend.calls
        backend_call.on_progress({"progress": 1})
        self.assertEqual([e["method"] for e in c.response().events()], ["notifications/subscriptions/acknowledged"])
        self.assertEqual(call.response().events()[0]["method"], "notifications/progress")
        backend_call.deferred.callback({"content": []})
        c.close()
