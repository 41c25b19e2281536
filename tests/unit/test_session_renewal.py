"""
A Streamable HTTP server that forgot the gateway's MCP session (404, e.g.
it restarted behind the same URL) gets a new one without the backend ever
going down: what clients asked of the old session is asked of the new.
"""

from __future__ import annotations

import json

from twisted_mcp.backends.base import State
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import line_caller

from .test_http_backend import INIT_RESULT, HttpTestCase


class SessionRenewalTests(HttpTestCase):
    def test_subscriptions_made_again_on_the_new_session(self) -> None:
        backend, _ = self.started()
        gateway = Gateway([backend], "__", self.clock, 5.0)
        gateway.start()
        session = ClientSession(gateway, line_caller([].append, "c1"))
        d = gateway.subscriptions.subscribe(session, backend, "test://r", {"uri": "test://r"}, None)
        self.answer(self.pending("resources/subscribe"), {})
        self.assertEqual(self.successResultOf(d), {})
        self.assertEqual(gateway.subscriptions.count(), 1)
        # The server forgets the session: the next call gets a 404.
        call = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(404, {"content-type": "text/plain"}, b"session not found")
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-2"})
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").respond(405, body=b"")
        self.answer(self.pending("tools/call"), {"content": []})
        self.successResultOf(call)
        self.assertEqual(backend.state, State.UP)
        again = self.pending("resources/subscribe")
        self.assertEqual(again.header("mcp-session-id"), "sess-2")
        self.assertEqual(json.loads(again.data)["params"], {"uri": "test://r"})
        self.answer(again, {})
        self.answer(self.pending("tools/list"), {"tools": []})
        self.stop(backend)
