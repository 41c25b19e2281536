"""
The Streamable HTTP front (issue 11, first slice) through the real daemon
(`twistd ... mcp-gateway --listen http:tcp:PORT:interface=127.0.0.1`):
the official `mcp` SDK's Streamable HTTP client, and raw HTTP where a test
must see which stream carried what, or must send what no SDK would.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from typing import Any

import anyio
import pytest
from mcp import MCPError

from tests import mcpclient as mc

from .conftest import alive, everything, free_port, server, wait_gone
from .surface_helpers import ClientSide, text_of
from .test_http import http_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

JSON_AND_SSE = "application/json, text/event-stream"
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}}, "clientInfo": {"name": "raw", "version": "1"}},
}


def start_http(daemon, servers: dict, *more_listen: str, extra: dict | None = None, **gateway) -> tuple[int, str]:
    """Start the daemon with an HTTP listener on a free loopback port; (pid, base URL)."""
    port = free_port()
    pid, _ = daemon(servers, f"http:tcp:{port}:interface=127.0.0.1", *more_listen, extra=extra, **gateway)
    wait_listening(port)
    return pid, f"http://127.0.0.1:{port}"


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the HTTP listener never accepted"
            time.sleep(0.05)


def connect_http(url: str, **kwargs: Any):
    """An SDK client (handshake era) over the SDK's Streamable HTTP transport to the gateway's /mcp."""
    return mc.connect_http(f"{url}/mcp", **kwargs)


class Raw:
    """Raw HTTP/1.1 to the gateway's MCP endpoint (one connection per request)."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)

    def request(self, method: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        h = {"content-type": "application/json", "accept": JSON_AND_SSE}
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, "/mcp", body=data, headers={k: v for k, v in h.items() if v is not None})
        return conn, conn.getresponse()

    def call(self, method: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None):
        conn, response = self.request(method, body, headers, raw)
        data = response.read()
        conn.close()
        return response.status, dict((k.lower(), v) for k, v in response.getheaders()), data

    def initialize(self) -> str:
        status, headers, body = self.call("POST", INIT)
        assert status == 200, body
        assert json.loads(body)["result"]["protocolVersion"] == "2025-06-18"
        return headers["mcp-session-id"]


def next_event(response) -> dict:
    """The next SSE message of a response."""
    data: list[str] = []
    while True:
        line = response.fp.readline()
        assert line, "the stream ended"
        text = line.decode().rstrip("\r\n")
        if text.startswith("data: "):
            data.append(text[6:])
        elif not text and data:
            return json.loads("".join(data))


def events(response, until_id: Any):
    """The SSE messages of a response, up to the answer with id C{until_id}."""
    out = []
    data: list[str] = []
    while True:
        line = response.fp.readline()
        assert line, f"the stream ended before the answer to {until_id}: {out}"
        line = line.decode().rstrip("\r\n")
        if line.startswith("data: "):
            data.append(line[6:])
        elif not line and data:
            message = json.loads("".join(data))
            data = []
            out.append(message)
            if message.get("id") == until_id and "method" not in message:
                return out


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_sdk_client_lists_and_calls_with_progress_over_http(daemon, tmp_path, mode):
    # "auto" (the SDK's default) probes server/discover first: without a session that is a 400
    # with a JSON-RPC error, and the SDK falls back to initialize.
    _, url = start_http(daemon, {"slow": server("slow")})

    async def scenario():
        async with connect_http(url, mode=mode) as client:
            assert {"slow__sleep", "slow__echo", "slow__pid"} <= set(await mc.tool_names(client))
            assert await mc.call_text(client, "slow__echo", {"text": "over http"}) == "over http"
            result, progress = await mc.call_with_progress(client, "slow__sleep", {"seconds": 0.5})
            assert mc.result_text(result) == "slept 0.5"
            assert len(progress) >= 3  # arrived on the call's SSE stream, before its answer

    mc.run(scenario, timeout=60)


def test_sampling_request_arrives_on_the_calls_post_stream(daemon, http_server, tmp_path):  # noqa: F811
    ev = http_server("everything")
    _, url = start_http(daemon, {"everything": {"type": "http", "url": f"{ev.url}/mcp"}})
    raw = Raw(url)
    sid = raw.initialize()
    s = {"mcp-session-id": sid}
    assert raw.call("POST", {"jsonrpc": "2.0", "method": "notifications/initialized"}, s)[0] == 202
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "everything__trigger-sampling-request", "arguments": {"prompt": "hi", "maxTokens": 5}},
    }
    conn, response = raw.request("POST", call, s)
    assert response.status == 200 and response.getheader("content-type") == "text/event-stream"
    # The first event on this POST's stream is the backend's sampling request.
    request = next_event(response)
    assert request["method"] == "sampling/createMessage"
    answer = {
        "jsonrpc": "2.0",
        "id": request["id"],
        "result": {"role": "assistant", "content": {"type": "text", "text": "sampled on the POST stream"}, "model": "m"},
    }
    assert raw.call("POST", answer, s)[0] == 202
    final = events(response, until_id=7)[-1]
    conn.close()
    assert "sampled on the POST stream" in json.dumps(final["result"])


def test_list_changed_arrives_on_the_get_stream(daemon, tmp_path):
    tools_file = tmp_path / "tools.txt"
    tools_file.write_text("first_extra\n")
    _, url = start_http(daemon, {"crashy": server("crashy", env={"CRASHY_TOOLS_FILE": str(tools_file)})}, restartDelay=0.2)
    raw = Raw(url)
    sid = raw.initialize()
    s = {"mcp-session-id": sid}
    conn, stream = raw.request("GET", None, {**s, "content-type": None, "accept": "text/event-stream"})
    assert stream.status == 200 and stream.getheader("content-type") == "text/event-stream"
    # One GET stream per session.
    assert raw.call("GET", None, {**s, "content-type": None, "accept": "text/event-stream"})[0] == 409
    tools_file.write_text("second_extra\n")
    status, _, body = raw.call("POST", {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "crashy__crash", "arguments": {}}}, s)
    assert status == 200 and "error" in json.loads(body)
    while next_event(stream).get("method") != "notifications/tools/list_changed":
        pass
    conn.close()


def test_sdk_client_gets_list_changed_and_delete_ends_the_session(daemon, tmp_path):
    tools_file = tmp_path / "tools.txt"
    tools_file.write_text("first_extra\n")
    _, url = start_http(daemon, {"crashy": server("crashy", env={"CRASHY_TOOLS_FILE": str(tools_file)})}, restartDelay=0.2)

    async def scenario():
        notes = mc.NotificationRecorder()
        async with connect_http(url, message_handler=notes) as client:
            assert "crashy__first_extra" in await mc.tool_names(client)
            tools_file.write_text("second_extra\n")
            with pytest.raises(MCPError):
                await client.call_tool("crashy__crash", {})
            await notes.wait_for("notifications/tools/list_changed", timeout=20)
            assert "crashy__second_extra" in await mc.tool_names(client)

    mc.run(scenario, timeout=60)
    log = (tmp_path / "gw.log").read_text()
    assert "ended: the client ended it (DELETE)" in log  # the SDK sends DELETE when it closes


def test_delete_and_expiry_make_the_session_unknown(daemon, tmp_path):
    _, url = start_http(daemon, {"slow": server("slow")}, extra={"http": {"sessionIdleTimeout": 1}})
    raw = Raw(url)
    sid = raw.initialize()
    s = {"mcp-session-id": sid}
    assert raw.call("DELETE", None, s)[0] == 204
    status, _, body = raw.call("POST", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, s)
    assert status == 404 and json.loads(body)["error"]["code"] == -32001

    async def scenario():
        async with connect_http(url) as client:
            assert "slow__echo" in await mc.tool_names(client)
            await anyio.sleep(2.5)  # the session expires (no request, no stream open... but the SDK's GET stream is open)
            assert await mc.call_text(client, "slow__echo", {"text": "still"}) == "still"

    # The SDK keeps its GET stream open: an open stream is not idle, so the session lives on.
    mc.run(scenario, timeout=60)
    sid = raw.initialize()
    time.sleep(2.5)
    status, _, body = raw.call("POST", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"mcp-session-id": sid})
    assert status == 404 and json.loads(body)["error"]["code"] == -32001
    assert "expired after 1 s unused" in (tmp_path / "gw.log").read_text()


def test_an_sdk_client_whose_session_ended_gets_the_gateways_error_then_a_new_session_works(daemon, tmp_path):
    # mcp 2.3's client does not re-initialize by itself: the 404 answers the
    # call with the gateway's error (-32001, "Session not found"); a new
    # client session works at once.
    import httpx2

    _, url = start_http(daemon, {"slow": server("slow")})
    seen: list[str] = []

    async def remember(request: Any) -> None:
        sid = request.headers.get("mcp-session-id")
        if sid:
            seen.append(sid)

    async def scenario():
        async with httpx2.AsyncClient(event_hooks={"request": [remember]}, timeout=30) as http_client:
            async with connect_http(url, http_client=http_client) as client:
                assert "slow__echo" in await mc.tool_names(client)
                # The session ends behind the client's back (as an expiry would).
                assert Raw(url).call("DELETE", None, {"mcp-session-id": seen[-1]})[0] == 204
                with pytest.raises(MCPError) as e:
                    await client.call_tool("slow__echo", {"text": "lost"})
                assert e.value.error.code == -32001 and "Session not found" in e.value.error.message
        async with connect_http(url) as client:
            assert await mc.call_text(client, "slow__echo", {"text": "new session"}) == "new session"

    mc.run(scenario, timeout=60)


def test_fifty_concurrent_sdk_clients_each_get_their_own_answers(daemon, tmp_path):
    # Each SDK client holds a connection for its GET stream and one per call in
    # flight: up to 300 from 127.0.0.1, over the default maxClientsPerPeer (256).
    _, url = start_http(daemon, {"slow": server("slow")}, maxClientsPerPeer=1024)

    async def one(n: int, got: dict) -> None:
        async with connect_http(url) as client:
            answers: dict[int, str] = {}

            async def ask(i: int) -> None:
                answers[i] = await mc.call_text(client, "slow__echo", {"text": f"client {n} call {i}"})

            # Five calls in flight at once on each session, 250 over the gateway.
            async with anyio.create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(ask, i)
            got[n] = [answers[i] for i in range(5)]

    async def scenario():
        got: dict[int, list[str]] = {}
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(one, n, got)
        assert got == {n: [f"client {n} call {i}" for i in range(5)] for n in range(50)}

    mc.run(scenario, timeout=120)


def test_closing_a_post_stream_cancels_the_call_at_the_backend(daemon, tmp_path):
    cancel_log = tmp_path / "cancelled.log"
    _, url = start_http(daemon, {"slow": server("slow", env={"SLOW_CANCEL_LOG": str(cancel_log)})})
    raw = Raw(url)
    s = {"mcp-session-id": raw.initialize()}
    conn = http.client.HTTPConnection(raw.host, raw.port, timeout=30)
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "slow__sleep", "arguments": {"seconds": 30}}}
    conn.request("POST", "/mcp", body=json.dumps(call).encode(), headers={"content-type": "application/json", "accept": JSON_AND_SSE, **s})
    time.sleep(1.5)  # the call reached the backend; its answer (as JSON) is 30 s away
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    deadline = time.monotonic() + 10
    while not (cancel_log.exists() and "cancelled" in cancel_log.read_text()):
        assert time.monotonic() < deadline, "the backend never saw the cancellation"
        time.sleep(0.05)
    # The session goes on.
    status, _, body = raw.call("POST", {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "slow__echo", "arguments": {"text": "after"}}}, s)
    assert status == 200 and "after" in body.decode()


def test_hostile_http_requests_get_their_status_and_others_keep_being_served(daemon, tmp_path):
    port2 = free_port()
    second = f"http:tcp:{port2}:interface=127.0.0.1"
    pid, url = start_http(
        daemon,
        {"slow": server("slow")},
        second,
        extra={"http": {"maxBodyBytes": 4096, "maxStreamBufferBytes": 65536}},
    )
    raw = Raw(url)
    sid = raw.initialize()
    s = {"mcp-session-id": sid}
    post = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert raw.call("POST", post)[0] == 400  # no session id
    assert raw.call("POST", post, {"mcp-session-id": "not a valid id!"})[0] == 400
    assert raw.call("POST", post, {"mcp-session-id": "A" * 32})[0] == 404
    assert raw.call("POST", post, {**s, "host": "evil.example:80"})[0] == 421  # DNS rebinding
    assert raw.call("POST", post, {**s, "origin": "https://evil.example"})[0] == 403
    assert raw.call("POST", None, s, raw=b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"' + b"a" * 10000 + b'"}}')[0] == 413
    assert raw.call("POST", post, {**s, "content-type": "text/plain"})[0] == 415
    assert raw.call("POST", post, {**s, "accept": "text/html"})[0] == 406
    assert raw.call("POST", post, {**s, "mcp-protocol-version": "1999-01-01"})[0] == 400
    assert raw.call("POST", None, s, raw=b"{not json")[0] == 400
    assert raw.call("POST", [post], s)[0] == 400
    # Another listener is another client identity: the id is unknown there.
    other = Raw(f"http://127.0.0.1:{port2}")
    status, _, body = other.call("POST", post, s)
    assert status == 404 and json.loads(body)["error"]["code"] == -32001
    # A client that never reads its GET stream while messages pile up: the stream is cut.
    # (Progress is tied to calls; here the POST stream of a flood of progress is not read.)
    # The session still works.
    status, _, body = raw.call("POST", post, s)
    assert status == 200 and "slow__echo" in body.decode()
    os.kill(pid, 0)


def test_a_client_that_never_reads_its_stream_is_cut_and_others_keep_being_served(daemon, tmp_path):
    pid, url = start_http(
        daemon, {"flood": server("progress_flood"), "slow": server("slow")}, extra={"http": {"maxStreamBufferBytes": 65536}}
    )
    raw = Raw(url)
    s = {"mcp-session-id": raw.initialize()}
    # A client with a tiny receive window that sends a call with a progress
    # token (so its answer is an SSE stream) and never reads a byte.
    call = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "flood__flood", "arguments": {"count": 4000, "size": 2000}, "_meta": {"progressToken": "p"}},
    }
    body = json.dumps(call).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((raw.host, raw.port))
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{raw.port}\r\nContent-Type: application/json\r\n"
        f"Accept: {JSON_AND_SSE}\r\nMcp-Session-Id: {s['mcp-session-id']}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    log = tmp_path / "gw.log"
    deadline = time.monotonic() + 30
    while "does not read its stream" not in log.read_text():
        assert time.monotonic() < deadline, "the stream was never cut"
        time.sleep(0.1)
    sock.close()
    # Everyone else, this session included, is served.
    status, _, answer = raw.call("POST", {"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "slow__echo", "arguments": {"text": "fine"}}}, s)
    assert status == 200 and "fine" in answer.decode()
    os.kill(pid, 0)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_sdk_client_answers_sampling_elicitation_and_roots_over_http(daemon, http_server, tmp_path, transport):  # noqa: F811
    # A stdio backend does not say which call its request belongs to: the
    # gateway puts it on the session's only open call's stream.  Over
    # Streamable HTTP the backend says so, and it goes on that call's stream.
    if transport == "stdio":
        backend = everything()
    else:
        backend = {"type": "http", "url": f"{http_server('everything').url}/mcp"}
    _, url = start_http(daemon, {"everything": backend})

    async def scenario():
        side = ClientSide("H")
        async with connect_http(url, **side.callbacks()) as client:
            sampled = await client.call_tool("everything__trigger-sampling-request", {"prompt": "about p-4711", "maxTokens": 20})
            assert not sampled.is_error, text_of(sampled)
            assert "p-4711" in side.sampling[0].messages[0].content.text
            assert side.answer in text_of(sampled) and "model-H" in text_of(sampled)
            form = await client.call_tool("everything__trigger-elicitation-request", {})
            assert "- Name: Ada H" in text_of(form)
            roots = await client.call_tool("everything__get-roots-list", {})
            assert side.root in text_of(roots)

    mc.run(scenario, timeout=90)


def test_listener_principals_roles_and_audit_over_http(daemon, tmp_path):
    port_b = free_port()
    audit = tmp_path / "audit.jsonl"
    # Each listener names its principal (identity.listeners, by the --listen string as given).
    port_a = free_port()
    listen_a, listen_b = f"http:tcp:{port_a}:interface=127.0.0.1", f"http:tcp:{port_b}:interface=127.0.0.1"
    extra = {
        "identity": {"listeners": {listen_a: {"name": "alice", "roles": ["dev"]}, listen_b: {"name": "bob", "roles": ["viewer"]}}},
        "roles": {"dev": {"allow": ["slow"]}, "viewer": {"allow": ["slow__pid"]}},
        "audit": {"sink": "file", "path": str(audit)},
    }
    daemon({"slow": server("slow")}, listen_a, listen_b, extra=extra)
    for port in (port_a, port_b):
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)

    async def scenario():
        async with connect_http(f"http://127.0.0.1:{port_a}") as alice, connect_http(f"http://127.0.0.1:{port_b}") as bob:
            assert await mc.call_text(alice, "slow__echo", {"text": "alice may"}) == "alice may"
            assert await mc.tool_names(bob) == ["slow__pid"]
            with pytest.raises(MCPError):
                await bob.call_tool("slow__echo", {"text": "bob may not"})

    mc.run(scenario, timeout=60)
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
        calls = [r for r in records if r.get("tool") == "slow__echo"]
        if len(calls) >= 2:
            break
        assert time.monotonic() < deadline, records
        time.sleep(0.1)
    assert {(r["principal"], r["outcome"]) for r in calls} >= {("alice", "ok")}
    assert any(r["principal"] == "bob" and r["outcome"] != "ok" for r in calls)


@pytest.mark.parametrize("how", ["delete", "expiry"])
def test_ending_a_session_stops_its_per_session_backend(daemon, tmp_path, how):
    _, url = start_http(daemon, {"own": server("slow", perSession=True)}, extra={"http": {"sessionIdleTimeout": 1}})
    raw = Raw(url)
    s = {"mcp-session-id": raw.initialize()}
    status, _, body = raw.call("POST", {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "own__pid", "arguments": {}}}, s)
    assert status == 200
    backend_pid = int(json.loads(body)["result"]["content"][0]["text"])
    assert alive(backend_pid)
    if how == "delete":
        assert raw.call("DELETE", None, s)[0] == 204
    assert not wait_gone({backend_pid}, 15.0), "the session's own backend outlived it"
    assert raw.call("POST", {"jsonrpc": "2.0", "id": 2, "method": "ping"}, s)[0] == 404


class SeverableRelay:
    """A TCP relay on loopback to the gateway whose connections can all be cut at once (a network failure)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def sever(self) -> int:
        """Cut every connection open now; how many there were."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        return len(pairs)

    def close(self) -> None:
        self.listener.close()
        self.sever()


def test_an_sdk_client_whose_connection_is_cut_mid_call_resumes_its_stream_and_gets_the_answer(daemon, tmp_path):
    """
    The network drops mid-call: the SDK client reconnects with GET and
    Last-Event-ID, the gateway sends again what it missed and the rest of
    the call's stream; the call is not cancelled at the backend.
    """
    cancel_log = tmp_path / "cancelled.log"
    port = free_port()
    relay = SeverableRelay(port)
    try:
        daemon(
            {"slow": server("slow", env={"SLOW_CANCEL_LOG": str(cancel_log)})},
            f"http:tcp:{port}:interface=127.0.0.1",
            extra={"http": {"allowedHosts": [f"127.0.0.1:{relay.port}"]}},
        )
        wait_listening(port)

        async def scenario():
            async with connect_http(f"http://127.0.0.1:{relay.port}") as client:
                progress: list[float] = []
                cut = anyio.Event()

                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress.append(value)
                    if len(progress) == 3 and not cut.is_set():
                        cut.set()
                        assert await anyio.to_thread.run_sync(relay.sever) >= 1

                result = await client.call_tool("slow__sleep", {"seconds": 3}, progress_callback=on_progress)
                assert cut.is_set()
                assert mc.result_text(result) == "slept 3"
                # What came while the client was away was sent again: progress never skipped a beat.
                assert len(progress) >= 20
                assert progress == sorted(progress)
                assert await mc.call_text(client, "slow__echo", {"text": "still here"}) == "still here"

        mc.run(scenario, timeout=60)
    finally:
        relay.close()
    assert not (cancel_log.exists() and "cancelled" in cancel_log.read_text())
    assert "resumed stream p" in (tmp_path / "gw.log").read_text()


def test_the_whole_surface_over_the_http_front_with_a_handshake_era_sdk_client(daemon, tmp_path):
    """
    Resources (listed, read, subscribed: the update arrives on the GET stream), templates,
    prompts, completion and log messages at the level set, through the daemon's HTTP front
    to server-everything, with the SDK's Streamable HTTP client of the handshake era.
    """
    from .surface_helpers import all_prompts, all_resources, all_templates, complete_prompt

    _, url = start_http(daemon, {"everything": everything()})

    async def scenario():
        side = ClientSide("H")
        async with connect_http(url, **side.callbacks()) as client:
            caps = client.server_capabilities
            assert caps.resources is not None and caps.resources.subscribe is True
            assert caps.prompts is not None and caps.completions is not None and caps.logging is not None
            resources = {r.uri for r in await all_resources(client)}
            uri = "demo://resource/static/document/features.md"
            assert uri in resources
            (contents,) = (await client.read_resource(uri)).contents
            assert contents.uri == uri and contents.text
            assert any(t.uri_template.startswith("demo://resource/dynamic/") for t in await all_templates(client))
            assert "everything__simple-prompt" in {p.name for p in await all_prompts(client)}
            assert (await client.get_prompt("everything__args-prompt", {"city": "Paris"})).messages
            assert await complete_prompt(client, "everything__completable-prompt", "department", "Eng") == ["Engineering"]

            await client.set_logging_level("info")
            await client.subscribe_resource(uri)  # acknowledged with an info log message
            await mc.wait_until(lambda: any(uri in str(m.data) for m in side.logs), timeout=10)
            assert all("everything" in (m.logger or "") for m in side.logs)
            assert (await mc.call_text(client, "everything__toggle-subscriber-updates")).startswith("Started")
            await side.notes.wait_for("notifications/resources/updated", timeout=10)
            assert set(side.updated()) == {uri}
            await mc.call_text(client, "everything__toggle-subscriber-updates")  # off
            await client.unsubscribe_resource(uri)

    mc.run(scenario, timeout=90)
