"""Hand-written Streamable HTTP MCP server for fault injection (stdlib only, no SDK).

Usage:
  python tests/servers/http_faults.py --port N [--get-stream] [--lenient-version]

  --port N            TCP port on 127.0.0.1 (0 = pick a free one). Always
                      loopback. SO_REUSEADDR is set, so the test can kill the
                      process and start a new one on the same port at once.
  --get-stream        GET /mcp opens a standalone SSE stream (else 405).
  --lenient-version   only log a missing MCP-Protocol-Version (default: 400).
  --tls-cert F --tls-key F [--tls-client-ca F]
                      serve HTTPS (and require a client certificate signed
                      by the given CA); the hang/cut tools are not for TLS.

Prints exactly one line "LISTENING <port>" to stdout once listening; logs one
line per request to stderr. Exits 0 on SIGTERM/SIGINT and on stdin EOF.
Starts in ~0.1 s.

MCP endpoint: /mcp (HTTP/1.1, keep-alive; JSON bodies carry Content-Length,
SSE bodies use chunked encoding; request bodies may be either).

  POST initialize       -> application/json; echoes protocolVersion if it is
                           one of 2024-11-05/2025-03-26/2025-06-18/2025-11-25,
                           else 2025-11-25; capabilities {"tools":{"listChanged":true}};
                           header Mcp-Session-Id: s<N> (a new session per call).
  every other request   -> needs Mcp-Session-Id (missing: 400, unknown or
                           expired: 404) and, for sessions negotiated at
                           2025-06-18 or later, MCP-Protocol-Version (missing or
                           unsupported value: 400; a value different from the
                           negotiated one is only logged and counted).
  POST Accept           -> must cover application/json and text/event-stream
                           (*/*, application/*, text/* count), else 406.
  POST notification/response -> 202, empty body. notifications/cancelled
                           records params.requestId in stats "cancelled".
  POST ping             -> {}.  Unknown method -> JSON-RPC error -32601 (200).
  POST JSON array       -> 400 (no batches).
  GET  /mcp             -> 405, or with --get-stream an SSE stream held open
                           (same session/version checks; Accept must allow
                           text/event-stream, else 406).
  DELETE /mcp           -> removes the session, 200 (missing id 400, unknown 404).

Tools (tools/call):
  echo {text, sse?}           application/json result with text (sse=true: as SSE).
  fail500 {}                  HTTP 500, text/plain body.
  hang_headers {seconds?}     never sends headers: waits until the client
                              disconnects (or `seconds`, default 600; then closes
                              the connection without answering).
  hang_stream {seconds?}      200 text/event-stream headers, one
                              notifications/progress event (progressToken from
                              _meta; without one a notifications/message event
                              instead), then hangs like hang_headers.
  cut_stream {}               SSE headers, one progress (or message) event,
                              then half of the next event's `data:` line, then
                              closes the connection (chunked body left unfinished).
  huge {bytes, sse?}          application/json result whose text is `bytes` long.
  slow_progress {steps}       SSE: `steps` progress notifications 0.1 s apart
                              (progress i of total steps), then the result
                              "done <steps>".
  <added>                     tools added via /admin/add_tool: no args, return
                              their own name.

Admin endpoints (GET, JSON answers, no session needed):
  /admin/stats     counters: initialize, posts {session: n} (the initialize POST
                   counts for the session it creates), cancelled [ids], deletes,
                   get_streams (GET /mcp stream requests), open_get_streams,
                   last_protocol_version, last_authorization, last_x_test_token
                   (last values seen, never reset to null), sessions [live ids],
                   rejected {status: n}, version_mismatches, methods {rpc: n},
                   requests [last 500: {http, session, rpc, id, pv,
                   authorization, x_test_token, status}].
  /admin/expire    forgets all sessions (their next request gets 404) and
                   closes their GET streams.
  /admin/notify    pushes notifications/tools/list_changed on every open GET stream.
  /admin/add_tool?name=X[&notify=1]  adds tool X to tools/list (notify=1 also
                   pushes list_changed).
  /admin/reset     zeroes the counters (sessions and tools stay).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
SUPPORTED_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST = "2025-11-25"
VERSION_HEADER_REQUIRED_FROM = "2025-06-18"  # the header was introduced in 2025-06-18

BASE_TOOLS = [
    {
        "name": "echo",
        "description": "Return text (sse=true: answer as text/event-stream).",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}, "sse": {"type": "boolean"}},
            "required": ["text"],
        },
    },
    {"name": "fail500", "description": "Answer HTTP 500.", "inputSchema": {"type": "object", "properties": {}}},
    {
        "name": "hang_headers",
        "description": "Never send response headers.",
        "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}},
    },
    {
        "name": "hang_stream",
        "description": "Send SSE headers and one event, then hang.",
        "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}},
    },
    {
        "name": "cut_stream",
        "description": "Send SSE headers, one event, half an event, then close.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "huge",
        "description": "Return a text of `bytes` characters.",
        "inputSchema": {
            "type": "object",
            "properties": {"bytes": {"type": "integer"}, "sse": {"type": "boolean"}},
            "required": ["bytes"],
        },
    },
    {
        "name": "slow_progress",
        "description": "SSE: `steps` progress notifications 0.1 s apart, then the result.",
        "inputSchema": {"type": "object", "properties": {"steps": {"type": "integer"}}, "required": ["steps"]},
    },
]


def log(msg: str) -> None:
    sys.stderr.write(f"http_faults: {msg}\n")
    sys.stderr.flush()


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_session = 1
        self.sessions: dict[str, str] = {}  # session id -> negotiated protocol version
        self.extra_tools: list[str] = []
        self.get_streams: dict[int, tuple[str, queue.Queue]] = {}  # key -> (session, queue)
        self.next_stream = 1
        self.shutting_down = threading.Event()
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = {
            "initialize": 0,
            "posts": {},
            "cancelled": [],
            "deletes": 0,
            "get_streams": 0,
            "last_protocol_version": None,
            "last_authorization": None,
            "last_x_test_token": None,
            "rejected": {},
            "version_mismatches": 0,
            "methods": {},
        }
        self.requests: list[dict] = []

    def snapshot(self) -> dict:
        with self.lock:
            out = json.loads(json.dumps(self.stats))
            out["sessions"] = sorted(self.sessions)
            out["open_get_streams"] = len(self.get_streams)
            out["requests"] = list(self.requests)
            return out

    def tools(self) -> list[dict]:
        with self.lock:
            extra = list(self.extra_tools)
        return BASE_TOOLS + [
            {"name": n, "description": "Added via /admin/add_tool.", "inputSchema": {"type": "object", "properties": {}}}
            for n in extra
        ]

    def push_all(self, message: dict, sessions: set[str] | None = None, close: bool = False) -> int:
        """Queue `message` (None with close=True: end the stream) on open GET streams."""
        with self.lock:
            targets = [q for s, q in self.get_streams.values() if sessions is None or s in sessions]
        for q in targets:
            q.put(None if close else message)
        return len(targets)


STATE = State()
ARGS: argparse.Namespace


def _accepts(accept: str) -> tuple[bool, bool]:
    types = [t.split(";")[0].strip().lower() for t in accept.split(",")]
    wild = "*/*" in types
    return (
        wild or "application/json" in types or "application/*" in types,
        wild or "text/event-stream" in types or "text/*" in types,
    )


class ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "http_faults/1.0"

    # ------------------------------------------------------------------ utils
    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log(f"{self.address_string()} {format % args}")

    def log_request(self, code="-", size="-") -> None:
        pass  # one line per request is written by _record instead

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", ctype: str | None = "application/json", headers=()) -> None:
        self.send_response(status)
        if ctype and (body or status >= 400):
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, obj, headers=()) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _rpc_error(self, status: int, code: int, message: str, rid=None) -> None:
        with STATE.lock:
            rej = STATE.stats["rejected"]
            rej[str(status)] = rej.get(str(status), 0) + 1
        self._status = status
        self._send_json(status, {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})

    def _start_sse(self, headers=()) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError as e:
            raise ClientGone() from e

    def _sse_event(self, message: dict) -> None:
        self._chunk(b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n")

    def _end_chunks(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError as e:
            raise ClientGone() from e

    def _client_gone(self) -> bool:
        """Whether the peer closed the connection (non-blocking check)."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _hang(self, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if STATE.shutting_down.is_set():
                return "shutdown"
            try:
                r, _, _ = select.select([self.connection], [], [], 0.2)
                if r and self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return "client disconnected"
                if r:  # unexpected pipelined bytes: keep waiting without spinning
                    time.sleep(0.2)
            except OSError:
                return "client disconnected"
        return "timeout"

    def _record(self, http: str, session, rpc=None, rid=None, pv=None) -> dict:
        auth = self.headers.get("Authorization")
        tok = self.headers.get("X-Test-Token")
        entry = {
            "http": http,
            "session": session,
            "rpc": rpc,
            "id": rid,
            "pv": pv,
            "authorization": auth,
            "x_test_token": tok,
            "status": None,
        }
        with STATE.lock:
            st = STATE.stats
            if pv is not None:
                st["last_protocol_version"] = pv
            if auth is not None:
                st["last_authorization"] = auth
            if tok is not None:
                st["last_x_test_token"] = tok
            if rpc:
                st["methods"][rpc] = st["methods"].get(rpc, 0) + 1
            STATE.requests.append(entry)
            del STATE.requests[:-500]
        return entry

    def _check_session(self, pv, rid=None) -> str | None:
        """Validate Mcp-Session-Id and MCP-Protocol-Version; answer and return None if bad."""
        sid = self.headers.get("Mcp-Session-Id")
        if not sid:
            self._rpc_error(400, -32600, "Bad Request: missing Mcp-Session-Id", rid)
            return None
        with STATE.lock:
            negotiated = STATE.sessions.get(sid)
        if negotiated is None:
            self._rpc_error(404, -32600, "Session not found", rid)
            return None
        if pv is None:
            if negotiated >= VERSION_HEADER_REQUIRED_FROM and not ARGS.lenient_version:
                self._rpc_error(400, -32600, "Bad Request: missing MCP-Protocol-Version", rid)
                return None
            log(f"  {sid}: no MCP-Protocol-Version header (negotiated {negotiated})")
        elif pv not in SUPPORTED_VERSIONS:
            self._rpc_error(400, -32600, f"Bad Request: unsupported MCP-Protocol-Version {pv}", rid)
            return None
        elif pv != negotiated:
            log(f"  {sid}: MCP-Protocol-Version {pv} != negotiated {negotiated}")
            with STATE.lock:
                STATE.stats["version_mismatches"] += 1
        return sid

    def _count_post(self, sid: str) -> None:
        with STATE.lock:
            posts = STATE.stats["posts"]
            posts[sid] = posts.get(sid, 0) + 1

    # --------------------------------------------------------------- dispatch
    def handle_one_request(self) -> None:
        self._status = None
        try:
            super().handle_one_request()
        except ClientGone:
            self.close_connection = True
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.startswith("/admin/"):
            self._read_body()
            return self._admin(url.path, parse_qs(url.query))
        if url.path != "/mcp":
            self._read_body()
            return self._send(404, b"not found\n", "text/plain")
        self._read_body()
        pv = self.headers.get("MCP-Protocol-Version")
        entry = self._record("GET", self.headers.get("Mcp-Session-Id"), pv=pv)
        log(f"GET /mcp session={entry['session']} pv={pv}")
        with STATE.lock:
            STATE.stats["get_streams"] += 1
        if not ARGS.get_stream:
            entry["status"] = 405
            return self._send(405, b"GET stream not supported\n", "text/plain", [("Allow", "POST, DELETE")])
        sid = self._check_session(pv)
        if sid is None:
            entry["status"] = self._status
            return
        if not _accepts(self.headers.get("Accept", ""))[1]:
            entry["status"] = 406
            return self._rpc_error(406, -32600, "Not Acceptable: must accept text/event-stream")
        entry["status"] = 200
        q: queue.Queue = queue.Queue()
        with STATE.lock:
            key = STATE.next_stream
            STATE.next_stream += 1
            STATE.get_streams[key] = (sid, q)
        try:
            self._start_sse([("Mcp-Session-Id", sid)])
            while not STATE.shutting_down.is_set():
                try:
                    msg = q.get(timeout=0.2)
                except queue.Empty:
                    if self._client_gone():
                        log(f"  GET stream of {sid}: client disconnected")
                        self.close_connection = True
                        return
                    continue
                if msg is None:
                    log(f"  GET stream of {sid}: closed by server")
                    self._end_chunks()
                    return
                self._sse_event(msg)
            self.close_connection = True
        finally:
            with STATE.lock:
                STATE.get_streams.pop(key, None)

    def do_DELETE(self) -> None:
        self._read_body()
        if urlsplit(self.path).path != "/mcp":
            return self._send(404, b"not found\n", "text/plain")
        pv = self.headers.get("MCP-Protocol-Version")
        entry = self._record("DELETE", self.headers.get("Mcp-Session-Id"), pv=pv)
        with STATE.lock:
            STATE.stats["deletes"] += 1
        sid = self._check_session(pv)
        log(f"DELETE /mcp session={entry['session']} pv={pv}")
        if sid is None:
            entry["status"] = self._status
            return
        with STATE.lock:
            STATE.sessions.pop(sid, None)
        STATE.push_all(None, {sid}, close=True)
        entry["status"] = 200
        self._send(200)

    def do_PUT(self) -> None:
        self._read_body()
        self._send(405, b"method not allowed\n", "text/plain", [("Allow", "GET, POST, DELETE")])

    do_PATCH = do_PUT

    def do_POST(self) -> None:
        body = self._read_body()
        if urlsplit(self.path).path != "/mcp":
            return self._send(404, b"not found\n", "text/plain")
        pv = self.headers.get("MCP-Protocol-Version")
        try:
            msg = json.loads(body)
        except ValueError:
            self._record("POST", self.headers.get("Mcp-Session-Id"), pv=pv)["status"] = 400
            return self._rpc_error(400, -32700, "Parse error")
        if not isinstance(msg, dict):
            self._record("POST", self.headers.get("Mcp-Session-Id"), pv=pv)["status"] = 400
            return self._rpc_error(400, -32600, "Batches are not supported")
        method = msg.get("method")
        rid = msg.get("id")
        is_request = method is not None and "id" in msg
        entry = self._record("POST", self.headers.get("Mcp-Session-Id"), method or "(response)", rid, pv)
        tool = (msg.get("params") or {}).get("name") if method == "tools/call" else None
        log(f"POST {method or '(response)'}{' ' + tool if tool else ''} id={rid} "
            f"session={entry['session']} pv={pv}")
        has_json, has_sse = _accepts(self.headers.get("Accept", ""))
        if not (has_json and has_sse):
            entry["status"] = 406
            return self._rpc_error(
                406, -32600, "Not Acceptable: must accept application/json and text/event-stream", rid)

        if method == "initialize":
            return self._initialize(msg, entry)

        sid = self._check_session(pv, rid)
        if sid is None:
            entry["status"] = self._status
            return
        self._count_post(sid)

        if not is_request:
            if method == "notifications/cancelled":
                cid = (msg.get("params") or {}).get("requestId")
                with STATE.lock:
                    STATE.stats["cancelled"].append(cid)
                log(f"  cancelled {cid}")
            entry["status"] = 202
            return self._send(202)

        entry["status"] = 200
        params = msg.get("params") or {}
        if method == "ping":
            return self._result(rid, {})
        if method == "tools/list":
            return self._result(rid, {"tools": STATE.tools()})
        if method == "tools/call":
            return self._call_tool(rid, params, entry)
        return self._send_json(200, {"jsonrpc": "2.0", "id": rid,
                                     "error": {"code": -32601, "message": f"Method not found: {method}"}})

    def _initialize(self, msg: dict, entry: dict) -> None:
        requested = (msg.get("params") or {}).get("protocolVersion")
        version = requested if requested in SUPPORTED_VERSIONS else LATEST
        with STATE.lock:
            sid = f"s{STATE.next_session}"
            STATE.next_session += 1
            STATE.sessions[sid] = version
            STATE.stats["initialize"] += 1
            STATE.stats["posts"][sid] = STATE.stats["posts"].get(sid, 0) + 1
        entry["status"] = 200
        log(f"  initialize: requested {requested}, answered {version}, session {sid}")
        result = {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": True}},
            "serverInfo": {"name": "http-faults", "version": "1.0"},
        }
        self._send_json(200, {"jsonrpc": "2.0", "id": msg.get("id"), "result": result},
                        headers=[("Mcp-Session-Id", sid)])

    # ------------------------------------------------------------------ tools
    def _result(self, rid, result: dict, sse: bool = False) -> None:
        message = {"jsonrpc": "2.0", "id": rid, "result": result}
        if not sse:
            return self._send_json(200, message)
        self._start_sse()
        self._sse_event(message)
        self._end_chunks()

    @staticmethod
    def _text(text: str) -> dict:
        return {"content": [{"type": "text", "text": text}], "isError": False}

    def _first_event(self, rid, params: dict, what: str) -> None:
        token = (params.get("_meta") or {}).get("progressToken")
        if token is not None:
            self._sse_event({"jsonrpc": "2.0", "method": "notifications/progress",
                             "params": {"progressToken": token, "progress": 1, "message": what}})
        else:
            self._sse_event({"jsonrpc": "2.0", "method": "notifications/message",
                             "params": {"level": "info", "data": f"{what} (request {rid})"}})

    def _call_tool(self, rid, params: dict, entry: dict) -> None:
        name = params.get("name")
        args = params.get("arguments") or {}
        if name == "echo":
            return self._result(rid, self._text(str(args.get("text", ""))), bool(args.get("sse")))
        if name == "fail500":
            entry["status"] = 500
            return self._send(500, b"fault injection: internal server error\n", "text/plain")
        if name == "hang_headers":
            entry["status"] = None
            why = self._hang(float(args.get("seconds", 600)))
            log(f"  hang_headers {rid} ended: {why}")
            self.close_connection = True
            return
        if name == "hang_stream":
            self._start_sse()
            self._first_event(rid, params, "hang_stream started")
            why = self._hang(float(args.get("seconds", 600)))
            log(f"  hang_stream {rid} ended: {why}")
            self.close_connection = True
            return
        if name == "cut_stream":
            self._start_sse()
            self._first_event(rid, params, "cut_stream started")
            whole = b"event: message\ndata: " + json.dumps(
                {"jsonrpc": "2.0", "id": rid, "result": self._text("never delivered")}).encode() + b"\n\n"
            cut = whole.index(b"data: ") + (len(whole) - whole.index(b"data: ")) // 2
            self._chunk(whole[:cut])
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            log(f"  cut_stream {rid}: connection cut after {cut} bytes of the result event")
            return
        if name == "huge":
            n = int(args.get("bytes", 0))
            return self._result(rid, self._text("x" * n), bool(args.get("sse")))
        if name == "slow_progress":
            steps = int(args.get("steps", 0))
            token = (params.get("_meta") or {}).get("progressToken")
            self._start_sse()
            for i in range(1, steps + 1):
                time.sleep(0.1)
                if token is not None:
                    self._sse_event({"jsonrpc": "2.0", "method": "notifications/progress",
                                     "params": {"progressToken": token, "progress": i, "total": steps,
                                                "message": f"step {i}"}})
            self._sse_event({"jsonrpc": "2.0", "id": rid, "result": self._text(f"done {steps}")})
            return self._end_chunks()
        with STATE.lock:
            added = name in STATE.extra_tools
        if added:
            return self._result(rid, self._text(name))
        entry["status"] = 200
        return self._send_json(200, {"jsonrpc": "2.0", "id": rid,
                                     "error": {"code": -32602, "message": f"Unknown tool: {name}"}})

    # ------------------------------------------------------------------ admin
    def _admin(self, path: str, query: dict) -> None:
        if path == "/admin/stats":
            return self._send_json(200, STATE.snapshot())
        if path == "/admin/expire":
            with STATE.lock:
                gone = set(STATE.sessions)
                STATE.sessions.clear()
            closed = STATE.push_all(None, gone, close=True)
            log(f"admin: expired {len(gone)} sessions, closed {closed} GET streams")
            return self._send_json(200, {"expired": sorted(gone), "closed_streams": closed})
        if path == "/admin/notify":
            n = STATE.push_all({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            log(f"admin: list_changed pushed on {n} GET streams")
            return self._send_json(200, {"notified": n})
        if path == "/admin/add_tool":
            name = (query.get("name") or [""])[0]
            if not name:
                return self._send(400, b"name required\n", "text/plain")
            with STATE.lock:
                if name not in STATE.extra_tools and name not in {t["name"] for t in BASE_TOOLS}:
                    STATE.extra_tools.append(name)
            out = {"tools": [t["name"] for t in STATE.tools()]}
            if (query.get("notify") or ["0"])[0] not in ("0", ""):
                out["notified"] = STATE.push_all({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            log(f"admin: added tool {name}")
            return self._send_json(200, out)
        if path == "/admin/reset":
            with STATE.lock:
                STATE.reset_stats()
            return self._send_json(200, {"reset": True})
        return self._send(404, b"unknown admin endpoint\n", "text/plain")


class Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def main() -> None:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--get-stream", action="store_true")
    p.add_argument("--lenient-version", action="store_true")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", help="the certificate's key (PEM)")
    p.add_argument("--tls-client-ca", help="require a client certificate signed by this CA (PEM)")
    ARGS = p.parse_args()

    log(f"starting (pid {os.getpid()})")
    httpd = Server((HOST, ARGS.port), Handler)
    if ARGS.tls_cert:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
        if ARGS.tls_client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(ARGS.tls_client_ca)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def watch_stdin() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        log("stdin closed, exiting")
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    sys.stdout.write(f"LISTENING {httpd.server_address[1]}\n")
    sys.stdout.flush()

    while not stop.wait(0.5):
        pass
    STATE.shutting_down.set()
    httpd.shutdown()
    httpd.server_close()
    log("stopped")
    sys.stdout.flush()
    os._exit(0)  # don't wait for (daemon) handler threads stuck in blocking I/O


if __name__ == "__main__":
    main()
