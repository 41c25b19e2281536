"""Hand-written Streamable HTTP MCP server whose event streams can be resumed (stdlib only, no SDK).

Usage:
  python tests/servers/http_resumable.py --port N [--retry MS]

  --port N     TCP port on 127.0.0.1 (0 = pick a free one).
  --retry MS   the `retry:` field of every stream's first event (default 300).

Prints exactly one line "LISTENING <port>" to stdout once listening; logs one
line per request to stderr. Exits on SIGTERM/SIGINT and on stdin EOF.

Every event on every stream has an id "<stream>-<n>", unique in the server,
and every stream is kept (events and all), so that a GET with Last-Event-ID
replays what came after that event on that stream, as the 2025-11-25
transport describes.

MCP endpoint: /mcp (HTTP/1.1; SSE bodies chunked).
  POST initialize       -> application/json, Mcp-Session-Id: s<N>; tools {listChanged}.
  POST notification     -> 202.   POST ping -> {}.   Other methods -> -32601.
  GET  /mcp             -> the session's stream: a first event (id, retry, empty
                           data), then its events as they come (list_changed
                           from /admin/add_tool).
  GET  /mcp + Last-Event-ID -> the stream that event was on, from after it: a
                           call's stream replays its result and is then held
                           open (as the conformance suite's sse-retry server
                           does: the client must close it); the session's
                           stream goes on live. A stream of `refuse_resume`:
                           400.  An unknown id: 404.

Tools (tools/call), each answering an SSE stream whose first event carries
an id and `retry`, then one notifications/progress (when the call has a
progressToken) with an id:
  close_then_answer {text}  the stream is ended gracefully (a clean chunked
                            end) before the result "resumed: <text>".
  drop_then_answer {text}   the connection is cut in the middle of the result
                            event "resumed: <text>".
  no_ids {text}             like drop_then_answer, with no ids at all.
  refuse_resume {text}      like close_then_answer, but resuming it is refused.
  echo {text}               application/json result with text.

Admin endpoints (GET, JSON answers, no session needed):
  /admin/stats       {"gets": [{"last_event_id", "t"}], "closed": {stream: t},
                      "open_gets": n, "held": n (replayed call streams still
                      open)}; t is time.monotonic() of this process.
  /admin/close_get   ends every session stream gracefully (the client should
                     resume it with Last-Event-ID after `retry`).
  /admin/add_tool?name=X  adds tool X and puts notifications/tools/list_changed
                     on every session's stream (delivered at once if a GET is
                     connected, else when the stream is resumed).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
ARGS: argparse.Namespace


def log(msg: str) -> None:
    sys.stderr.write(f"http_resumable: {msg}\n")
    sys.stderr.flush()


class Stream:
    """One event stream's whole history: (id, encoded event) pairs."""

    def __init__(self, key: str, resumable: bool = True) -> None:
        self.key = key
        self.resumable = resumable
        self.events: list[tuple[str, bytes]] = []

    def add(self, data: str, with_id: bool = True, retry: int | None = None) -> bytes:
        event_id = f"{self.key}-{len(self.events) + 1}"
        head = f"id: {event_id}\n" if with_id else ""
        if retry is not None:
            head += f"retry: {retry}\n"
        encoded = f"{head}data: {data}\n\n".encode()
        self.events.append((event_id, encoded))
        return encoded

    def after(self, event_id: str) -> list[bytes] | None:
        ids = [i for i, _ in self.events]
        if event_id not in ids:
            return None
        return [e for _, e in self.events[ids.index(event_id) + 1 :]]


class State:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.next_session = 1
        self.next_stream = 1
        self.sessions: dict[str, Stream] = {}  # session id -> its own stream
        self.streams: dict[str, Stream] = {}
        self.tools: list[str] = ["close_then_answer", "drop_then_answer", "no_ids", "refuse_resume", "echo"]
        self.gets: list[dict] = []
        self.closed: dict[str, float] = {}
        self.open_gets = 0
        self.held = 0
        self.get_generation = 0  # bumped by /admin/close_get
        self.shutting_down = threading.Event()

    def stream(self, prefix: str, resumable: bool = True) -> Stream:
        with self.lock:
            key = f"{prefix}{self.next_stream}"
            self.next_stream += 1
            stream = self.streams[key] = Stream(key, resumable)
            return stream


STATE = State()


class ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", ctype: str = "application/json", headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _json(self, obj, headers=()) -> None:
        self._send(200, json.dumps(obj).encode(), headers=headers)

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

    def _end_chunks(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError as e:
            raise ClientGone() from e

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _client_gone(self, wait: float) -> bool:
        try:
            r, _, _ = select.select([self.connection], [], [], wait)
            return bool(r) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ClientGone, ConnectionError):
            self.close_connection = True

    # -- GET ----------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self._body()
        if url.path.startswith("/admin/"):
            return self._admin(url.path, parse_qs(url.query))
        sid = self.headers.get("Mcp-Session-Id")
        last = self.headers.get("Last-Event-ID")
        with STATE.lock:
            STATE.gets.append({"last_event_id": last, "t": time.monotonic()})
            own = STATE.sessions.get(sid or "")
        log(f"GET /mcp session={sid} last-event-id={last}")
        if own is None:
            return self._send(404, b"unknown session\n", "text/plain")
        if last is None:
            with STATE.lock:
                position = len(own.events)
                first = own.add("", retry=ARGS.retry)
            self._start_sse()
            self._chunk(first)
            return self._follow(own, position + 1)
        with STATE.lock:
            stream = STATE.streams.get(last.rsplit("-", 1)[0])
            missed = stream.after(last) if stream is not None else None
            end = len(stream.events) if stream is not None else 0
        if stream is None or missed is None:
            return self._send(404, b"unknown event id\n", "text/plain")
        if not stream.resumable:
            return self._send(400, b"this stream cannot be resumed\n", "text/plain")
        self._start_sse()
        for event in missed:
            self._chunk(event)
        if stream is own:
            return self._follow(own, end)
        # A call's stream, replayed: held open until the client closes it.
        with STATE.lock:
            STATE.held += 1
        try:
            while not STATE.shutting_down.is_set() and not self._client_gone(0.1):
                pass
        finally:
            with STATE.lock:
                STATE.held -= 1
        self.close_connection = True

    def _follow(self, stream: Stream, position: int) -> None:
        """Send the session stream's events from C{position} as they come,
        until /admin/close_get (a graceful end) or the client goes."""
        with STATE.lock:
            generation = STATE.get_generation
            STATE.open_gets += 1
        try:
            while not STATE.shutting_down.is_set():
                with STATE.lock:
                    STATE.lock.wait_for(
                        lambda seen=position: len(stream.events) > seen or STATE.get_generation != generation,
                        timeout=0.1,
                    )
                    new = [e for _, e in stream.events[position:]]
                    position = len(stream.events)
                    ending = STATE.get_generation != generation
                for event in new:
                    self._chunk(event)
                if ending:
                    with STATE.lock:
                        STATE.closed[stream.key] = time.monotonic()
                    log(f"  session stream {stream.key} ended by the server")
                    return self._end_chunks()
                if self._client_gone(0):
                    self.close_connection = True
                    return
            self.close_connection = True
        finally:
            with STATE.lock:
                STATE.open_gets -= 1

    # -- POST ---------------------------------------------------------------

    def do_POST(self) -> None:
        msg = json.loads(self._body())
        method, rid = msg.get("method"), msg.get("id")
        sid = self.headers.get("Mcp-Session-Id")
        log(f"POST {method} id={rid} session={sid}")
        if method == "initialize":
            with STATE.lock:
                sid = f"s{STATE.next_session}"
                STATE.next_session += 1
                STATE.sessions[sid] = Stream(f"session{sid}")
                STATE.streams[f"session{sid}"] = STATE.sessions[sid]
            version = msg.get("params", {}).get("protocolVersion", "2025-11-25")
            result = {"protocolVersion": version, "capabilities": {"tools": {"listChanged": True}},
                      "serverInfo": {"name": "http-resumable", "version": "1"}}
            return self._json({"jsonrpc": "2.0", "id": rid, "result": result}, [("Mcp-Session-Id", sid)])
        with STATE.lock:
            known = sid in STATE.sessions
        if not known:
            return self._send(404, b"unknown session\n", "text/plain")
        if rid is None or method is None:
            return self._send(202, b"", "text/plain")
        if method == "ping":
            return self._json({"jsonrpc": "2.0", "id": rid, "result": {}})
        if method == "tools/list":
            with STATE.lock:
                tools = [{"name": n, "inputSchema": {"type": "object"}} for n in STATE.tools]
            return self._json({"jsonrpc": "2.0", "id": rid, "result": {"tools": tools}})
        if method == "tools/call":
            return self._call(rid, msg.get("params") or {})
        return self._json({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})

    def _call(self, rid, params: dict) -> None:
        name = params.get("name")
        text = str((params.get("arguments") or {}).get("text", ""))
        if name == "echo" or name not in ("close_then_answer", "drop_then_answer", "no_ids", "refuse_resume"):
            return self._json({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}})
        with_ids = name != "no_ids"
        stream = STATE.stream("call", resumable=name != "refuse_resume")
        token = (params.get("_meta") or {}).get("progressToken")
        with STATE.lock:
            events = [stream.add("", with_ids, retry=ARGS.retry)]
            if token is not None:
                note = {"jsonrpc": "2.0", "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": 1, "message": "before the cut"}}
                events.append(stream.add(json.dumps(note), with_ids))
            answer = {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": f"resumed: {text}"}]}}
            result = stream.add(json.dumps(answer), with_ids)
        self._start_sse()
        for event in events:
            self._chunk(event)
        if name in ("close_then_answer", "refuse_resume"):
            with STATE.lock:
                STATE.closed[stream.key] = time.monotonic()
            self._end_chunks()
            log(f"  {name} {rid}: stream {stream.key} ended before its result")
            return
        self._chunk(result[: len(result) // 2])
        with STATE.lock:
            STATE.closed[stream.key] = time.monotonic()
        self._cut()
        log(f"  {name} {rid}: connection cut in the middle of the result of {stream.key}")

    # -- admin --------------------------------------------------------------

    def _admin(self, path: str, query: dict) -> None:
        if path == "/admin/stats":
            with STATE.lock:
                return self._json({"gets": STATE.gets, "closed": STATE.closed,
                                   "open_gets": STATE.open_gets, "held": STATE.held})
        if path == "/admin/close_get":
            with STATE.lock:
                STATE.get_generation += 1
                STATE.lock.notify_all()
            return self._json({"closing": True})
        if path == "/admin/add_tool":
            name = query["name"][0]
            with STATE.lock:
                STATE.tools.append(name)
                for own in STATE.sessions.values():
                    own.add(json.dumps({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}))
                STATE.lock.notify_all()
            return self._json({"added": name})
        return self._send(404, b"unknown admin endpoint\n", "text/plain")


class Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


def main() -> None:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--retry", type=int, default=300)
    ARGS = p.parse_args()
    httpd = Server((HOST, ARGS.port), Handler)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def watch_stdin() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
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
    os._exit(0)


if __name__ == "__main__":
    main()
