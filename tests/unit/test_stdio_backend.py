"""
Tests for L{twisted_mcp.backends.stdio.StdioBackend} with a fake spawner and
a Clock.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends import listings
from twisted_mcp.backends import stdio as stdio_backend
from twisted_mcp.backends.base import State
from twisted_mcp.backends.stdio import SHIM, StdioBackend, child_environment
from twisted_mcp.config import StdioServer
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.versions import LATEST_HANDSHAKE
from twisted_mcp.wire.jsonrpc import JsonRpcError, encode

from .fakes import FakeSpawner, Spawn

ENVIRON = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/gw",
    "LANG": "C.UTF-8",
    "SECRET_TOKEN": "do-not-leak",
    "AWS_SECRET_ACCESS_KEY": "nope",
}
INHERIT = ("PATH", "HOME", "LANG", "TZ")
TOOLS_1 = [{"name": "get_time", "inputSchema": {"type": "object"}}]
TOOLS_2 = [{"name": "convert_time", "inputSchema": {"type": "object"}}]


def exited(code: int = 1) -> Failure:
    return Failure(ProcessTerminated(exitCode=code))


def killed(sig: int) -> Failure:
    return Failure(ProcessTerminated(signal=sig))


class BackendTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.spawner = FakeSpawner()
        self.signals: list[tuple[int, int]] = []
        self.patch(stdio_backend, "signal_group", lambda pid, sig, leader_alive=False: self.signals.append((pid, sig)))
        self.patch(stdio_backend, "group_alive", lambda pgid: False)
        self.orphans: dict[str, set[int]] = {}
        self.patch(stdio_backend, "adopted", lambda run: (set(self.orphans.get(run, ())), set()))
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)

    def make(self, max_message: int = 1 << 20, **overrides: Any) -> StdioBackend:
        settings: dict[str, Any] = dict(
            name="time",
            command="mcp-server-time",
            args=("--local-timezone", "UTC"),
            env={"TZ": "UTC", "API_KEY": "k"},
            cwd=self.cwd,
            discoveryTimeout=10.0,
            callTimeout=5.0,
            shutdownTimeout=3.0,
            restartDelay=1.0,
            restartMaxDelay=8.0,
            stableAfter=30.0,
            livenessTimeout=0.0,  # LivenessTests turn it on
            # The fake server here speaks the handshake era; the probe has
            # its own tests (test_probe.py).
            protocol="legacy",
        )
        settings.update(overrides)
        backend = StdioBackend(StdioServer(**settings), self.spawner, self.clock, INHERIT, max_message, ENVIRON)
        self.states: list[State] = []
        backend.add_listener(lambda b: self.states.append(b.state))
        return backend

    def stop(self, backend: StdioBackend) -> None:
        """Stop the backend; its child (if any) exits when stdin closes."""
        d = backend.stopService()
        child = backend.child
        if child is not None and not child._gone:
            self.assertTrue(child.transport.stdin_closed)
            child.processExited(Failure(ProcessDone(0)))
        self.successResultOf(d)
        self.assertEqual(backend.state, State.STOPPED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @property
    def last(self) -> Spawn:
        return self.spawner.spawned[-1]

    def reply(self, spawn: Spawn, method: str, result: Any = None, error: Any = None) -> dict[str, Any]:
        """Answer the last request for C{method} the child got."""
        requests = [m for m in spawn.transport.messages() if m.get("method") == method and "id" in m]
        self.assertTrue(requests, f"no {method} request in {spawn.transport.messages()}")
        request = requests[-1]
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if error is not None:
            message["error"] = error
        else:
            message["result"] = result
        spawn.protocol.outReceived(encode(message))
        return request

    def initialize_reply(self, spawn: Spawn, tools: bool = True) -> dict[str, Any]:
        return self.reply(
            spawn,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {"listChanged": True}} if tools else {},
                "serverInfo": {"name": "fake-time", "version": "1.0"},
            },
        )

    def bring_up(self, backend: StdioBackend, tools: list[Any] = TOOLS_1) -> Spawn:
        spawn = self.last
        self.initialize_reply(spawn)
        self.reply(spawn, "tools/list", {"tools": tools})
        self.assertEqual(backend.state, State.UP)
        return spawn

    def started(self, **overrides: Any) -> tuple[StdioBackend, Spawn]:
        backend = self.make(**overrides)
        backend.startService()
        spawn = self.bring_up(backend)
        return backend, spawn


class SpawnTests(BackendTestCase):
    def test_spawnArguments(self) -> None:
        backend = self.make()
        backend.startService()
        (spawn,) = self.spawner.spawned
        run = spawn.env.pop("TWISTED_MCP_RUN")
        self.assertEqual(run, spawn.protocol.run)
        self.assertEqual(spawn.env, {"PATH": "/usr/bin:/bin", "HOME": "/home/gw", "LANG": "C.UTF-8", "TZ": "UTC", "API_KEY": "k"})
        self.assertNotIn("SECRET_TOKEN", spawn.env)
        self.assertEqual(spawn.executable, sys.executable)
        self.assertEqual(spawn.args[0], sys.executable)
        c = spawn.args.index("-c")
        self.assertEqual(spawn.args[c + 1], SHIM)
        self.assertIn("os.setsid()", SHIM)
        self.assertIn("os.execvp", SHIM)
        self.assertEqual(spawn.args[c + 2], str(os.getpid()))
        self.assertEqual(spawn.args[c + 3 :], ["mcp-server-time", "--local-timezone", "UTC"])
        self.assertEqual(spawn.path, self.cwd)
        self.assertEqual(spawn.childFDs, {0: "w", 1: "r", 2: "r"})
        self.assertEqual(backend.pid, spawn.transport.pid)
        self.assertEqual(backend.state, State.STARTING)
        self.stop(backend)

    def test_serverEnvOverridesAllowlist(self) -> None:
        server = StdioServer(name="x", command="c", env={"PATH": "/opt/bin", "EXTRA": "1"})
        env = child_environment(server, INHERIT, ENVIRON)
        self.assertEqual(env, {"PATH": "/opt/bin", "HOME": "/home/gw", "LANG": "C.UTF-8", "EXTRA": "1"})

    def test_emptyAllowlist(self) -> None:
        server = StdioServer(name="x", command="c")
        self.assertEqual(child_environment(server, (), ENVIRON), {})

    def test_discovery(self) -> None:
        backend = self.make()
        backend.startService()
        discovered = backend.when_discovered()
        spawn = self.last
        (init,) = spawn.transport.messages()
        self.assertEqual(init["method"], "initialize")
        self.assertEqual(init["params"]["protocolVersion"], LATEST_HANDSHAKE)
        self.assertEqual(init["params"]["clientInfo"]["name"], "twisted-mcp")
        # The answer arrives in two pieces.
        data = encode(
            {
                "jsonrpc": "2.0",
                "id": init["id"],
                "result": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "s"}},
            }
        )
        spawn.protocol.outReceived(data[:20])
        self.assertEqual(len(spawn.transport.messages()), 1)
        spawn.protocol.outReceived(data[20:])
        _, initialized, list1 = spawn.transport.messages()
        self.assertEqual(initialized, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.assertEqual(list1["method"], "tools/list")
        self.assertNotIn("params", list1)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1, "nextCursor": "page-2"})
        list2 = spawn.transport.messages()[-1]
        self.assertEqual(list2["params"], {"cursor": "page-2"})
        self.assertEqual(backend.state, State.STARTING)
        self.assertNoResult(discovered)
        self.reply(spawn, "tools/list", {"tools": TOOLS_2})
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(backend.tools, TOOLS_1 + TOOLS_2)
        self.assertEqual(self.states, [State.STARTING, State.UP])
        self.successResultOf(discovered)
        self.assertIsNone(backend.last_error)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_noToolsCapability(self) -> None:
        backend = self.make()
        backend.startService()
        self.initialize_reply(self.last, tools=False)
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(backend.tools, [])
        self.assertNotIn("tools/list", [m.get("method") for m in self.last.transport.messages()])
        self.stop(backend)

    def test_badProtocolVersion(self) -> None:
        backend = self.make()
        backend.startService()
        self.reply(self.last, "initialize", {"protocolVersion": "1999-01-01", "capabilities": {}})
        self.assertIn("1999-01-01", backend.last_error or "")
        self.successResultOf(backend.when_discovered())
        self.assertEqual(self.signals, [(self.last.transport.pid, signal.SIGTERM)])
        self.last.protocol.processExited(killed(signal.SIGTERM))
        self.assertEqual(backend.state, State.DOWN)
        self.stop(backend)

    def test_spawnFails(self) -> None:
        self.spawner.error = OSError("no such file")
        backend = self.make()
        backend.startService()
        self.successResultOf(backend.when_discovered())
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("no such file", backend.last_error or "")
        self.spawner.error = None
        self.clock.advance(1.0)
        self.assertEqual(len(self.spawner.spawned), 1)
        self.bring_up(backend)
        self.stop(backend)


class StderrTests(BackendTestCase):
    def test_stderrLogged(self) -> None:
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        backend = self.make()
        backend.startService()
        spawn = self.last
        init = spawn.transport.messages()[0]
        with capturedLogs() as events:
            spawn.protocol.errReceived(b"starting server\r\nwarning: x\npart")
            # A JSON-RPC answer on stderr is only a log line.
            spawn.protocol.errReceived(b"ial\n" + encode({"jsonrpc": "2.0", "id": init["id"], "result": {}}))
            spawn.protocol.errReceived(b"\n   \n")
        lines = [(e["backend"], e["line"]) for e in events if "line" in e]
        self.assertEqual(
            lines,
            [
                ("time", "starting server"),
                ("time", "warning: x"),
                ("time", "partial"),
                ("time", encode({"jsonrpc": "2.0", "id": init["id"], "result": {}}).decode().strip()),
            ],
        )
        self.assertEqual(backend.state, State.STARTING)
        self.assertEqual(len(spawn.transport.messages()), 1)
        self.assertEqual(stdout.getvalue(), "")
        self.stop(backend)

    def test_unfinishedStderrLineFlushedOnExit(self) -> None:
        backend = self.make()
        backend.startService()
        with capturedLogs() as events:
            self.last.protocol.errReceived(b"Traceback: boom")
            self.last.protocol.processExited(exited(1))
        self.assertIn(("time", "Traceback: boom"), [(e["backend"], e["line"]) for e in events if "line" in e])
        self.stop(backend)

    def test_stderrBoundedInSizeAndRate(self) -> None:
        """A flood on stderr: long lines are cut, lines over the rate counted and summarised at exit."""
        backend = self.make()
        backend.startService()
        with capturedLogs() as events:
            self.last.protocol.errReceived(b"\x1b[2J" + b"x" * (1 << 20))
            self.last.protocol.errReceived(b"\n" + b"line\n" * 1000)
            self.last.protocol.processExited(exited(1))
        lines = [e for e in events if "line" in e]
        self.assertEqual(len(lines), 200)  # the default burst
        self.assertEqual((len(lines[0]["line"]), lines[0]["cut"]), (4096, (1 << 20) + 4 - 4096))
        [summary] = [e for e in events if "count" in e]
        self.assertEqual((summary["backend"], summary["count"]), ("time", 801))
        self.stop(backend)

    def test_garbageOnStdoutIgnored(self) -> None:
        backend = self.make()
        backend.startService()
        with capturedLogs() as events:
            self.last.protocol.outReceived(b"Server listening on stdio\n[1,2]\n")
        warnings = [e for e in events if "not a JSON-RPC message" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 2)
        self.assertEqual(warnings[0]["backend"], "time")
        self.bring_up(backend)
        self.stop(backend)


class CallTests(BackendTestCase):
    def test_callResult(self) -> None:
        backend, spawn = self.started()
        d = backend.call("tools/call", {"name": "get_time", "arguments": {"tz": "UTC"}})
        request = spawn.transport.messages()[-1]
        self.assertEqual(request["method"], "tools/call")
        self.assertEqual(request["params"], {"name": "get_time", "arguments": {"tz": "UTC"}})
        self.assertNoResult(d)
        self.reply(spawn, "tools/call", {"content": [{"type": "text", "text": "12:00"}]})
        self.assertEqual(self.successResultOf(d), {"content": [{"type": "text", "text": "12:00"}]})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_callError(self) -> None:
        backend, spawn = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        self.reply(spawn, "tools/call", error={"code": -32602, "message": "bad tz", "data": {"tz": "Mars"}})
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((e.code, e.message, e.data), (-32602, "bad tz", {"tz": "Mars"}))
        self.stop(backend)

    def test_callTimeout(self) -> None:
        backend, spawn = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        rid = spawn.transport.messages()[-1]["id"]
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_TIMEOUT)
        self.assertEqual(e.data, {"backend": "time", "timeout": 5.0})
        self.assertEqual(
            spawn.transport.messages()[-1],
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid, "reason": "timed out"}},
        )
        # The late answer is dropped; the backend stays up.
        spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "id": rid, "result": {}}))
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_callTimeoutOverride(self) -> None:
        backend, spawn = self.started()
        d = backend.call("tools/call", {"name": "get_time"}, timeout=1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.failureResultOf(d, JsonRpcError).value.data["timeout"], 1.0)
        self.stop(backend)

    def test_cancelCall(self) -> None:
        backend, spawn = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        rid = spawn.transport.messages()[-1]["id"]
        d.cancel()
        self.assertEqual(
            spawn.transport.messages()[-1]["params"], {"requestId": rid, "reason": "cancelled"}
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        d.addErrback(lambda f: None)
        self.stop(backend)

    def test_progress(self) -> None:
        backend, spawn = self.started()
        progress: list[dict[str, Any]] = []
        params = {"name": "get_time", "_meta": {"progressToken": "client-token"}}
        d = backend.call("tools/call", params, progress.append)
        request = spawn.transport.messages()[-1]
        rid = request["id"]
        self.assertEqual(request["params"]["_meta"], {"progressToken": rid})
        self.assertNotIn("client-token", repr(spawn.transport.messages()))
        note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": rid, "progress": 1}}
        spawn.protocol.outReceived(encode(note))
        stray = dict(note, params={"progressToken": rid + 1, "progress": 9})
        spawn.protocol.outReceived(encode(stray))
        self.assertEqual(progress, [{"progressToken": rid, "progress": 1}])
        self.reply(spawn, "tools/call", {"content": []})
        self.successResultOf(d)
        spawn.protocol.outReceived(encode(note))
        self.assertEqual(len(progress), 1)
        self.stop(backend)

    def test_responseTooLarge(self) -> None:
        backend, spawn = self.started(max_message=4096)
        d = backend.call("tools/call", {"name": "get_time"})
        rid = spawn.transport.messages()[-1]["id"]
        with capturedLogs():
            spawn.protocol.outReceived(
                b'{"jsonrpc":"2.0","id":%d,"result":{"text":"' % rid + b"x" * 5000 + b'"}}\n'
            )
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_RESPONSE_TOO_LARGE)
        self.assertEqual(e.data, {"backend": "time", "limit": 4096})
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_responseTooLargeWithIdLast(self) -> None:
        """
        An answer that writes its id after the result (as TypeScript SDK
        servers do) fails its call as soon as the line ends, whatever the
        chunks it arrives in; an "id" nested in the result is not taken.
        """
        backend, spawn = self.started(max_message=4096)
        for size in (1 << 20, 1000, 3):
            d = backend.call("tools/call", {"name": "get_time"})
            other = backend.call("tools/call", {"name": "get_time"})
            rid = spawn.transport.messages()[-2]["id"]
            line = (
                b'{"jsonrpc":"2.0","result":{"text":"' + b"x" * 5000
                + b'","nested":{"id":%d}},"id":%d}\n' % (rid + 1, rid)
            )
            with capturedLogs():
                for i in range(0, len(line), size):
                    spawn.protocol.outReceived(line[i : i + size])
            e = self.failureResultOf(d, JsonRpcError).value
            self.assertEqual(e.code, errors.BACKEND_RESPONSE_TOO_LARGE)
            self.assertNoResult(other)
            other.cancel()
            self.failureResultOf(other)
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_serverPingAnswered(self) -> None:
        backend, spawn = self.started()
        spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"}))
        spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "id": "srv-2", "method": "sampling/createMessage"}))
        pong, refused = spawn.transport.messages()[-2:]
        self.assertEqual(pong, {"jsonrpc": "2.0", "id": "srv-1", "result": {}})
        self.assertEqual(refused["error"]["code"], -32601)
        self.stop(backend)

    def test_toolListChanged(self) -> None:
        backend, spawn = self.started()
        changes: list[Any] = []
        backend.add_listener(lambda b: changes.append(list(b.tools)))
        spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}))
        self.reply(spawn, "tools/list", {"tools": TOOLS_1 + TOOLS_2})
        self.assertEqual(backend.tools, TOOLS_1 + TOOLS_2)
        self.assertEqual(changes, [TOOLS_1 + TOOLS_2])
        self.stop(backend)

    def test_unhashableProgressToken(self) -> None:
        backend, spawn = self.started()
        try:
            spawn.protocol.outReceived(
                encode({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": {"a": 1}}})
            )
        except TypeError:
            self.fail("TypeError escaped outReceived")
        finally:
            self.stop(backend)


class DownTests(BackendTestCase):
    def test_exitFailsPendingCalls(self) -> None:
        backend, spawn = self.started()
        d1 = backend.call("tools/call", {"name": "get_time"})
        d2 = backend.call("tools/call", {"name": "get_time"})
        spawn.protocol.processExited(exited(1))
        for d in (d1, d2):
            e = self.failureResultOf(d, JsonRpcError).value
            self.assertEqual(e.code, errors.BACKEND_LOST)
            self.assertEqual(e.data["backend"], "time")
            self.assertIn("code 1", e.message)
        self.assertEqual(backend.state, State.DOWN)
        self.assertEqual(backend.last_error, "the process exited with code 1")
        # Restarted after restartDelay.
        self.clock.advance(0.999)
        self.assertEqual(len(self.spawner.spawned), 1)
        self.clock.advance(0.001)
        self.assertEqual(len(self.spawner.spawned), 2)
        self.assertEqual(backend.state, State.STARTING)
        self.bring_up(backend)
        self.assertEqual(backend.restarts, 1)
        self.stop(backend)

    def test_killedBySignal(self) -> None:
        backend, spawn = self.started()
        spawn.protocol.processExited(killed(signal.SIGKILL))
        self.assertEqual(backend.last_error, "the process killed by SIGKILL")
        self.stop(backend)

    def restart_delay(self) -> float:
        (call,) = self.clock.getDelayedCalls()
        return call.getTime() - self.clock.seconds()

    def test_backoff(self) -> None:
        backend = self.make()
        backend.startService()
        delays = []
        for _ in range(6):
            self.last.protocol.processExited(exited(1))
            delay = self.restart_delay()
            delays.append(delay)
            self.clock.advance(delay)
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0])
        self.assertEqual(len(self.spawner.spawned), 7)
        self.stop(backend)

    def test_backoffResetsWhenStable(self) -> None:
        backend, _ = self.started()
        self.last.protocol.processExited(exited(1))
        self.assertEqual(self.restart_delay(), 1.0)
        self.clock.advance(1.0)
        self.bring_up(backend)
        self.clock.advance(29.0)
        self.last.protocol.processExited(exited(1))
        self.assertEqual(self.restart_delay(), 2.0)
        self.clock.advance(2.0)
        self.bring_up(backend)
        self.clock.advance(30.0)
        self.last.protocol.processExited(exited(1))
        self.assertEqual(self.restart_delay(), 1.0)
        self.stop(backend)

    def test_callWhileDown(self) -> None:
        backend, spawn = self.started()
        spawn.protocol.processExited(exited(1))
        self.clock.advance(0.25)
        e = self.assertRaises(JsonRpcError, backend.call, "tools/call", {"name": "get_time"})
        self.assertEqual(e.code, errors.BACKEND_UNAVAILABLE)
        self.assertEqual(e.data, {"backend": "time", "state": "down", "retryAfter": 0.75})
        self.assertIn("exited with code 1", e.message)
        self.stop(backend)

    def test_callWhileStarting(self) -> None:
        backend = self.make()
        backend.startService()
        e = self.assertRaises(JsonRpcError, backend.call, "tools/call", {"name": "get_time"})
        self.assertEqual(e.code, errors.BACKEND_UNAVAILABLE)
        self.assertEqual(e.data, {"backend": "time", "state": "starting"})
        self.assertEqual(len(self.last.transport.messages()), 1)
        self.stop(backend)

    def test_toolsKeptWhileDown(self) -> None:
        backend, spawn = self.started()
        spawn.protocol.processExited(exited(1))
        self.assertEqual(backend.tools, TOOLS_1)
        self.stop(backend)

    def test_exitBeforeReady(self) -> None:
        backend = self.make()
        backend.startService()
        discovered = backend.when_discovered()
        with capturedLogs():
            self.last.protocol.processExited(exited(127))
        self.successResultOf(discovered)
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("127", backend.last_error or "")
        self.assertEqual(self.restart_delay(), 1.0)
        self.stop(backend)

    def test_toolDefinitionsBoundedByMaxMessageBytes(self) -> None:
        """
        The gateway lists every tool to a client in one message, so a
        backend's tool definitions may add up to gateway.maxMessageBytes:
        past that, discovery fails at the page that crosses it (however
        many pages the backend would send).
        """
        backend = self.make(max_message=4096)
        backend.startService()
        discovered = backend.when_discovered()
        spawn = self.last
        self.initialize_reply(spawn)
        page = [{"name": f"t{i}", "description": "x" * 900} for i in range(3)]
        self.reply(spawn, "tools/list", {"tools": page, "nextCursor": "2"})
        self.assertNoResult(discovered)
        self.reply(spawn, "tools/list", {"tools": page, "nextCursor": "3"})
        self.successResultOf(discovered)
        self.assertNotEqual(backend.state, State.UP)
        self.assertIn("more than 4096 bytes of tool definitions (gateway.maxMessageBytes)", backend.last_error or "")
        self.assertEqual([m.get("params") for m in spawn.transport.messages() if m.get("method") == "tools/list"], [None, {"cursor": "2"}])

    def test_toolListPagesBounded(self) -> None:
        """A server that always gives another cursor fails discovery after
        MAX_LISTING_PAGES pages (patched to 3 here)."""
        self.patch(listings, "MAX_LISTING_PAGES", 3)
        backend = self.make()
        backend.startService()
        discovered = backend.when_discovered()
        spawn = self.last
        self.initialize_reply(spawn)
        for page in range(3):
            self.reply(spawn, "tools/list", {"tools": TOOLS_1, "nextCursor": str(page)})
        self.successResultOf(discovered)
        self.assertNotEqual(backend.state, State.UP)
        self.assertIn("tools/list gave more than 3 pages", backend.last_error or "")

    def test_discoveryTimeout(self) -> None:
        backend = self.make()
        backend.startService()
        discovered = backend.when_discovered()
        spawn = self.last
        self.clock.advance(9.9)
        self.assertNoResult(discovered)
        self.clock.advance(0.1)
        self.successResultOf(discovered)
        self.assertIn("initialize", backend.last_error or "")
        # initialize is never cancelled (the spec forbids it): the last
        # message is initialize itself.
        self.assertEqual(spawn.transport.messages()[-1]["method"], "initialize")
        self.assertEqual(self.signals, [(spawn.transport.pid, signal.SIGTERM)])
        self.assertNotEqual(backend.state, State.UP)
        spawn.protocol.processExited(killed(signal.SIGTERM))
        self.assertEqual(backend.state, State.DOWN)
        self.assertEqual(self.restart_delay(), 1.0)
        self.stop(backend)

    def test_discoveryTimeoutDuringToolsList(self) -> None:
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.clock.advance(6.0)
        self.initialize_reply(spawn)
        self.clock.advance(4.0)
        self.assertIn("did not finish within 10 s", backend.last_error or "")
        self.assertEqual(self.signals, [(spawn.transport.pid, signal.SIGTERM)])
        # Not answered in shutdownTimeout: SIGKILL.
        self.clock.advance(3.0)
        self.assertEqual(self.signals[-1], (spawn.transport.pid, signal.SIGKILL))
        spawn.protocol.processExited(killed(signal.SIGKILL))
        self.assertEqual(backend.state, State.DOWN)
        self.stop(backend)

    def test_discoveryTimeoutMarksDown(self) -> None:
        backend = self.make()
        backend.startService()
        self.clock.advance(10.0)
        try:
            self.assertEqual(backend.state, State.DOWN)
        finally:
            self.last.protocol.processExited(killed(signal.SIGTERM))
            self.stop(backend)


class BusyTests(BackendTestCase):
    """
    A backend that does not read its input for a while is busy, not dead:
    beyond maxQueuedBytes waiting for it, new calls are refused at once and
    nothing is restarted; only a liveness check that goes unanswered for
    livenessTimeout restarts it.
    """

    def test_busyBackendRefusesNewCallsAndKeepsRunning(self) -> None:
        backend, spawn = self.started(maxQueuedBytes=4096)
        queued = [4096]
        spawn.transport.queued = lambda: queued[0]  # type: ignore[attr-defined]
        before = len(spawn.transport.written)
        e = self.assertRaises(JsonRpcError, backend.call, "tools/call", {"name": "get_time"})
        self.assertEqual(e.code, errors.BUSY)
        self.assertEqual(e.data, {"backend": "time", "limit": 4096})
        self.assertIn("'time' is busy", e.message)
        self.assertEqual(len(spawn.transport.written), before)  # nothing more was queued
        self.assertEqual((backend.state, self.signals, len(self.spawner.spawned)), (State.UP, [], 1))
        queued[0] = 4095
        d = backend.call("tools/call", {"name": "get_time"})
        self.reply(spawn, "tools/call", {"content": []})
        self.assertEqual(self.successResultOf(d), {"content": []})
        self.stop(backend)

    def test_defaultQueueBound(self) -> None:
        self.assertEqual(self.make(max_message=1 << 20).max_queue, 4 << 20)
        self.assertEqual(self.make(max_message=4096).max_queue, 1 << 20)

    def test_quietBackendIsPingedAndAnswering(self) -> None:
        backend, spawn = self.started(livenessTimeout=40.0)
        self.clock.advance(10.0)
        ping = self.reply(spawn, "ping", {})
        self.clock.advance(10.0)
        pings = [m for m in spawn.transport.messages() if m.get("method") == "ping"]
        self.assertEqual(len(pings), 2)
        self.assertNotEqual(pings[-1]["id"], ping["id"])
        self.reply(spawn, "ping", {})
        self.clock.advance(100.0)
        self.assertEqual(backend.state, State.DOWN)  # no answer to the later pings
        self.assertEqual(self.signals, [(spawn.transport.pid, signal.SIGTERM)])
        self.assertIn("livenessTimeout", backend.last_error or "")
        spawn.protocol.processExited(killed(signal.SIGTERM))
        self.stop(backend)

    def test_busyBackendThatWritesIsNeverRestarted(self) -> None:
        """Any output is a sign of life, even while pings go unanswered."""
        backend, spawn = self.started(livenessTimeout=40.0)
        d = backend.call("tools/call", {"name": "get_time"}, timeout=1000.0)
        rid = spawn.transport.messages()[-1]["id"]
        for _ in range(60):
            self.clock.advance(5.0)
            spawn.protocol.errReceived(b"")
            spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "debug", "data": "working"}}))
        self.assertEqual((backend.state, self.signals), (State.UP, []))
        spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "id": rid, "result": {"content": []}}))
        self.successResultOf(d)
        self.stop(backend)

    def test_wedgedBackendIsRestartedAfterLivenessTimeout(self) -> None:
        backend, spawn = self.started(livenessTimeout=40.0)
        d = backend.call("tools/call", {"name": "get_time"}, timeout=1000.0)
        self.clock.advance(39.0)
        self.assertEqual(backend.state, State.UP)
        self.clock.advance(11.0)
        self.assertEqual(backend.state, State.DOWN)
        self.assertEqual(self.signals, [(spawn.transport.pid, signal.SIGTERM)])
        spawn.protocol.processExited(killed(signal.SIGTERM))
        self.assertEqual(self.failureResultOf(d, JsonRpcError).value.code, errors.BACKEND_LOST)
        self.clock.advance(1.0)
        self.assertEqual(len(self.spawner.spawned), 2)
        self.bring_up(backend)
        self.stop(backend)


class StopTests(BackendTestCase):
    def test_gracefulStop(self) -> None:
        backend, spawn = self.started()
        d = backend.stopService()
        self.assertTrue(spawn.transport.stdin_closed)
        self.assertNoResult(d)
        spawn.protocol.processExited(Failure(ProcessDone(0)))
        self.successResultOf(d)
        self.assertEqual(backend.state, State.STOPPED)
        self.assertEqual(self.signals, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.spawner.spawned), 1)

    def test_stopEscalates(self) -> None:
        backend, spawn = self.started()
        pid = spawn.transport.pid
        d = backend.stopService()
        self.clock.advance(2.0)
        self.assertEqual(self.signals, [(pid, signal.SIGTERM)])
        self.clock.advance(3.0)
        self.assertEqual(self.signals, [(pid, signal.SIGTERM), (pid, signal.SIGKILL)])
        self.assertNoResult(d)
        spawn.protocol.processExited(killed(signal.SIGKILL))
        self.successResultOf(d)
        self.assertEqual(backend.state, State.STOPPED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWhileRestartPending(self) -> None:
        backend, spawn = self.started()
        spawn.protocol.processExited(exited(1))
        self.successResultOf(backend.stopService())
        self.clock.advance(100)
        self.assertEqual(len(self.spawner.spawned), 1)
        self.assertEqual(backend.state, State.STOPPED)

    def test_reapsGrandchildren(self) -> None:
        """
        When the server exits but its process group lives on, the group is
        sent SIGTERM.
        """
        alive = [True]
        self.patch(stdio_backend, "group_alive", lambda pgid: alive[0])
        backend, spawn = self.started()
        spawn.protocol.processExited(exited(0))
        self.assertEqual(self.signals, [(spawn.transport.pid, signal.SIGTERM)])
        alive[0] = False
        self.clock.advance(0.05)
        self.stop(backend)


    def test_adoptedDescendantsEndedOnStop(self) -> None:
        """
        Descendants that left the child's process group (a daemon in a
        session of its own, reparented to the gateway) get SIGTERM in their
        own group when the backend stops, SIGKILL after shutdownTimeout.
        """
        backend, spawn = self.started()
        self.orphans[spawn.protocol.run] = {7001, 7002}
        d = backend.stopService()
        spawn.protocol.processExited(Failure(ProcessDone(0)))
        self.assertEqual(sorted(self.signals), [(7001, signal.SIGTERM), (7002, signal.SIGTERM)])
        self.orphans[spawn.protocol.run] = {7002}
        self.clock.advance(3.0)
        self.assertIn((7002, signal.SIGKILL), self.signals)
        self.assertNotIn((7001, signal.SIGKILL), self.signals)
        self.assertNoResult(d)
        self.orphans[spawn.protocol.run] = set()
        self.clock.advance(0.05)
        self.successResultOf(d)
        self.assertEqual(backend.state, State.STOPPED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_adoptedDescendantsEndedOnRestart(self) -> None:
        backend, spawn = self.started()
        self.orphans[spawn.protocol.run] = {7001}
        spawn.protocol.processExited(exited(1))
        self.assertEqual(self.signals, [(7001, signal.SIGTERM)])
        self.orphans[spawn.protocol.run] = set()
        self.clock.advance(1.0)
        self.assertEqual(len(self.spawner.spawned), 2)
        self.bring_up(backend)
        self.stop(backend)

    def test_adoptedFindsOnlyThisRunsDescendants(self) -> None:
        """The real adopted(): a child of ours carrying the run's mark is
        found, one without it is not."""
        import subprocess

        self.patch(stdio_backend, "adopted", ADOPTED)
        marked = subprocess.Popen(["sleep", "30"], env={"TWISTED_MCP_RUN": "x.1"})
        other = subprocess.Popen(["sleep", "30"], env={"TWISTED_MCP_RUN": "x.2"})
        try:
            live, _ = stdio_backend.adopted("x.1")
            self.assertIn(marked.pid, live)
            self.assertNotIn(other.pid, live)
        finally:
            for p in (marked, other):
                p.kill()
                p.wait()


ADOPTED = stdio_backend.adopted


class ThroughGatewayTests(BackendTestCase):
    """
    A client session in front of a stdio backend: ids, cancellation and
    progress tokens are translated both ways.
    """

    def setUp(self) -> None:
        super().setUp()
        self.backend, self.spawn = self.started()
        self.gateway = Gateway([self.backend], "__", self.clock, 1.0)
        self.gateway.start()
        self.out: list[bytes] = []
        self.session = ClientSession(self.gateway, line_caller(self.out.append, "stdio"))
        deliver(self.session, b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}')
        del self.out[:]

    def tearDown(self) -> None:
        self.stop(self.backend)

    def take(self) -> list[Any]:
        messages = [json.loads(line) for line in self.out]
        del self.out[:]
        return messages

    def forget_leaked_requests(self) -> None:
        """
        Cleanup for the tests of known bugs: requests whose Deferred never
        reached a caller would otherwise be logged as unhandled errors
        (failing whichever test is running when they are collected).
        """
        peer = self.spawn.protocol.session.peer
        for d, _ in list(peer._pending.values()):
            if isinstance(d, Deferred):  # (a direct call's failure is answered to the session)
                d.addErrback(lambda f: None)
        self.spawn.protocol.processExited(exited(0))

    def test_callRoundTrip(self) -> None:
        deliver(self.session, 
            b'{"jsonrpc":"2.0","id":"client-7","method":"tools/call","params":{"name":"time__get_time","arguments":{}}}'
        )
        request = self.spawn.transport.messages()[-1]
        self.assertEqual(request["params"], {"name": "get_time", "arguments": {}})
        self.assertIs(type(request["id"]), int)
        self.assertNotIn("client-7", repr(self.spawn.transport.messages()))
        self.reply(self.spawn, "tools/call", {"content": [], "isError": False})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": "client-7", "result": {"content": [], "isError": False}}])

    def test_clientCancelReachesBackend(self) -> None:
        deliver(self.session, 
            b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"time__get_time"}}'
        )
        rid = self.spawn.transport.messages()[-1]["id"]
        deliver(self.session, b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}')
        self.assertEqual(
            self.spawn.transport.messages()[-1],
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid, "reason": "cancelled"}},
        )
        self.reply(self.spawn, "tools/call", {"content": []})
        self.assertEqual(self.take(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_progressThroughGateway(self) -> None:
        deliver(self.session, 
            b'{"jsonrpc":"2.0","id":5,"method":"tools/call",'
            b'"params":{"name":"time__get_time","_meta":{"progressToken":"tok"}}}'
        )
        request = self.spawn.transport.messages()[-1]
        rid = request["id"]
        self.assertEqual(request["params"]["_meta"], {"progressToken": rid})
        self.spawn.protocol.outReceived(
            encode({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": rid, "progress": 3}})
        )
        self.assertEqual(
            self.take(),
            [{"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "tok", "progress": 3}}],
        )
        self.reply(self.spawn, "tools/call", {"content": []})
        self.assertEqual(self.take()[0]["id"], 5)

    def test_backendExitDuringCall(self) -> None:
        deliver(self.session, b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"time__get_time"}}')
        self.spawn.protocol.processExited(exited(3))
        (answer,) = self.take()
        self.assertEqual(answer["id"], 5)
        self.assertEqual(answer["error"]["code"], errors.BACKEND_LOST)
        self.assertEqual(answer["error"]["data"], {"backend": "time"})
        deliver(self.session, b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"time__get_time"}}')
        (answer,) = self.take()
        self.assertEqual(answer["error"]["code"], errors.BACKEND_UNAVAILABLE)
        self.assertEqual(answer["error"]["data"]["retryAfter"], 1.0)

    def test_infiniteArgument(self) -> None:
        line = b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"time__get_time","arguments":{"x":1e400}}}'
        try:
            deliver(self.session, line)
            self.assertEqual(len(self.take()), 1)
            self.assertEqual(self.clock.getDelayedCalls(), [])
        finally:
            self.forget_leaked_requests()

    def test_deepArgument(self) -> None:
        try:
            for depth in range(1100, 0, -1):
                deliver(self.session, 
                    b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"time__get_time","arguments":{"a":'
                    % depth
                    + b"[" * depth
                    + b"]" * depth
                    + b"}}}"
                )
                answers = self.take()
                if answers and "nested too deeply" in answers[0].get("error", {}).get("message", ""):
                    continue
                break
        finally:
            self.forget_leaked_requests()


def _exited_child() -> int:
    """Fork a child that exits at once; return its pid once it is a zombie."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    # Bounded by time, not by a count of yields: on a busy machine the child
    # may wait a while for a CPU before it can exit.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        if stat[stat.rfind(b")") + 2 :].split()[0] == b"Z":
            return pid
        time.sleep(0.001)
    raise AssertionError("the child did not exit")


class ReapAdoptedTests(SynchronousTestCase):
    """Adopted children that exit are collected; Twisted's own are not."""

    def test_collectsAnAdoptedChildThatExited(self) -> None:
        pid = _exited_child()
        stdio_backend.reap_adopted()
        self.assertRaises(ChildProcessError, os.waitpid, pid, os.WNOHANG)

    def test_leavesTwistedsProcessesAlone(self) -> None:
        from twisted.internet.process import reapProcessHandlers

        pid = _exited_child()
        reapProcessHandlers[pid] = object()
        try:
            stdio_backend.reap_adopted()
            self.assertEqual(os.waitpid(pid, os.WNOHANG)[0], pid)
        finally:
            del reapProcessHandlers[pid]

    def test_startReapingCollectsEveryInterval(self) -> None:
        reaped: list[None] = []
        self.patch(stdio_backend, "become_subreaper", lambda: True)
        self.patch(stdio_backend, "reap_adopted", lambda: reaped.append(None))
        clock = Clock()
        loop = stdio_backend.start_reaping(clock)
        self.assertEqual(reaped, [])
        clock.advance(stdio_backend.REAP_INTERVAL)
        clock.advance(stdio_backend.REAP_INTERVAL)
        self.assertEqual(len(reaped), 2)
        assert loop is not None
        loop.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noReapingWithoutSubreaper(self) -> None:
        self.patch(stdio_backend, "become_subreaper", lambda: False)
        clock = Clock()
        self.assertIsNone(stdio_backend.start_reaping(clock))
        self.assertEqual(clock.getDelayedCalls(), [])
