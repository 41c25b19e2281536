"""
Drives one backend (the gateway's own L{StdioBackend} or L{HttpBackend})
with the real reactor against a real server-everything, with a
L{BackendEvents} that answers the server's requests, and prints what
happened as one JSON object on stdout.  Run by test_backend_surface.py
(until the gateway's dispatch passes these requests on to clients, this is
how the backend side is seen end to end).

    python -m tests.integration.backend_driver stdio NODE_DIR
    python -m tests.integration.backend_driver http URL
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater, react

from twisted_mcp.backends.base import Backend, State
from twisted_mcp.backends.http import HttpBackend
from twisted_mcp.backends.stdio import StdioBackend
from twisted_mcp.config import HttpServer, StdioServer

SAMPLED = "sampled by the driver"


class AnsweringEvents:
    """Answers roots/list and sampling/createMessage; records everything."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []

    def server_request(self, backend: Backend, method: str, params: dict[str, Any], related: Any) -> Deferred[Any]:
        self.requests.append({"method": method, "related": related})
        if method == "roots/list":
            return succeed({"roots": [{"uri": "file:///tmp", "name": "tmp"}]})
        if method == "sampling/createMessage":
            return succeed({"role": "assistant", "content": {"type": "text", "text": SAMPLED}, "model": "driver"})
        return succeed({})

    def server_notification(self, backend: Backend, method: str, params: dict[str, Any], related: Any) -> None:
        self.notifications.append({"method": method, "related": related})


def make(kind: str, where: str, reactor: Any) -> Backend:
    if kind == "stdio":
        config = StdioServer(
            name="everything", command="npx", args=("--no-install", "mcp-server-everything", "stdio"), cwd=where
        )
        return StdioBackend(config, reactor, reactor, ("PATH", "HOME"), 1 << 20)
    return HttpBackend(HttpServer(name="everything", url=where), reactor, 1 << 20)


async def scenario(reactor: Any, kind: str, where: str) -> None:
    events = AnsweringEvents()
    backend = make(kind, where, reactor)
    backend.events = events
    backend.startService()
    report: dict[str, Any] = {}
    try:
        await backend.when_discovered()
        report["state"] = backend.state.value
        if backend.state is not State.UP:
            report["error"] = backend.last_error
            return
        report["tools_when_up"] = len(backend.tools)
        # server-everything adds its sampling tools once it knows our capabilities.
        for _ in range(100):
            if any(t["name"] == "trigger-sampling-request" for t in backend.tools):
                break
            await deferLater(reactor, 0.05)
        report["tools"] = sorted(t["name"] for t in backend.tools)
        report["prompts"] = len(backend.prompts)
        report["resources"] = len(backend.resources)
        report["templates"] = len(backend.resource_templates)
        result = await backend.call(
            "tools/call", {"name": "trigger-sampling-request", "arguments": {"prompt": "hi", "maxTokens": 5}}, context="ctx-1"
        )
        report["sampling_result"] = json.dumps(result)
        roots = await backend.call("tools/call", {"name": "get-roots-list", "arguments": {}}, context="ctx-2")
        report["roots_result"] = json.dumps(roots)
        report["requests"] = events.requests
        report["notifications"] = events.notifications
    finally:
        await backend.stopService()
        print(json.dumps(report), flush=True)


def main(reactor: Any, kind: str, where: str) -> Deferred[None]:
    return Deferred.fromCoroutine(scenario(reactor, kind, where))


if __name__ == "__main__":
    react(main, sys.argv[1:3])
