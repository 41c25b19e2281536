"""
A lean Streamable HTTP load generator for the benchmarks (not a test double:
it speaks real HTTP/1.1 over real sockets to the real servers).

Each `Session` is one kept-alive TCP connection that holds one MCP session:
it POSTs `initialize` (and keeps the `Mcp-Session-Id` of the answer, when
there is one), then `notifications/initialized`, then `tools/call`
requests, one at a time (HTTP/1.1 without pipelining), each with
`Accept: application/json, text/event-stream`.  Answers are parsed
incrementally whatever their framing (Content-Length or chunked) and body
(JSON or SSE): a call is done when its response is complete, and it is
checked to carry the text this session sent with that id.

With `modern`, a session speaks MCP 2026-07-28 instead: no `initialize` and
no session id; every call carries the envelope in `params._meta` and the
`MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers.

`drive()` runs any number of sessions on one epoll loop in the calling
process; `drive_in_processes()` spreads them over several forked processes
started together, so that the generator is not the bottleneck.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import socket
import time
from typing import Callable

READ_SIZE = 65536
PROTOCOL = "2025-11-25"
INIT = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench-http-front", "version": "1"}}
MODERN = "2026-07-28"
MODERN_META = ('"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
               '"io.modelcontextprotocol/clientCapabilities":{}}')


class HTTPError(RuntimeError):
    """A response that is not what an MCP client expects (status, framing, JSON-RPC error)."""


class Response:
    """One HTTP/1.1 response read incrementally: feed() bytes until it returns True."""

    __slots__ = ("buf", "status", "headers", "body", "_length", "_chunked", "_start")

    def __init__(self) -> None:
        self.buf = b""
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self._length: int | None = None
        self._chunked = False
        self._start = -1

    def feed(self, data: bytes) -> bool:
        """Add bytes; True once the whole response (headers and body) is in."""
        self.buf += data
        if self._start < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = self.buf[:end].split(b"\r\n")
            self.status = int(head[0].split(b" ", 2)[1])
            for line in head[1:]:
                name, _, value = line.partition(b":")
                self.headers[name.strip().lower()] = value.strip()
            self._start = end + 4
            if b"content-length" in self.headers:
                self._length = int(self.headers[b"content-length"])
            elif self.headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                self._chunked = True
            elif self.status in (202, 204, 304):
                self._length = 0
            else:
                raise HTTPError(f"HTTP {self.status} with neither Content-Length nor chunked framing")
        if self._length is not None:
            if len(self.buf) - self._start < self._length:
                return False
            self.body = self.buf[self._start : self._start + self._length]
            return True
        return self._dechunk()

    def _dechunk(self) -> bool:
        pos, buf = self._start, self.buf
        parts: list[bytes] = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return False
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            if size == 0:
                if buf.find(b"\r\n", eol + 2) < 0:  # no trailers expected: the final CRLF
                    return False
                self.body = b"".join(parts)
                return True
            if len(buf) < eol + 2 + size + 2:
                return False
            parts.append(buf[eol + 2 : eol + 2 + size])
            pos = eol + 2 + size + 2


def json_messages(response: Response) -> list[dict]:
    """The JSON-RPC messages of a response body: one JSON document, or the `data:` of SSE events."""
    ctype = response.headers.get(b"content-type", b"")
    if not response.body:
        return []
    if ctype.startswith(b"text/event-stream"):
        out = []
        for event in response.body.replace(b"\r\n", b"\n").split(b"\n\n"):
            data = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
            if data and any(data):
                out.append(json.loads(b"\n".join(data)))
        return out
    return [json.loads(response.body)]


class Session:
    """One kept-alive connection carrying one MCP session, one request at a time."""

    __slots__ = ("ci", "sock", "host", "path", "tool", "arg", "session_id", "next_id",
                 "response", "sent_at", "rid", "head", "expect", "modern")

    def __init__(self, ci: int, port: int, path: str, tool: str, arg: str, modern: bool = False) -> None:
        self.ci = ci
        self.modern = modern
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"127.0.0.1:{port}"
        self.path = path
        self.tool = tool
        self.arg = arg
        self.session_id: str | None = None
        self.next_id = 1
        self.response = Response()
        self.sent_at = 0.0
        self.rid = 0
        self.head = b""
        self.expect = b""

    def _build_head(self) -> None:
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}", "Content-Type: application/json",
                 "Accept: application/json, text/event-stream"]
        if self.modern:
            lines += [f"MCP-Protocol-Version: {MODERN}", "Mcp-Method: tools/call", f"Mcp-Name: {self.tool}"]
        else:
            lines.append(f"MCP-Protocol-Version: {PROTOCOL}")
        if self.session_id:
            lines.append(f"Mcp-Session-Id: {self.session_id}")
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode()

    def request_bytes(self, message: bytes) -> bytes:
        if not self.head:
            self._build_head()
        return self.head + str(len(message)).encode() + b"\r\n\r\n" + message

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def roundtrip(self, message: dict) -> Response:
        """Blocking: POST one message, return the whole response (for set-up)."""
        self.send(self.request_bytes(json.dumps(message).encode()))
        response = Response()
        while True:
            data = self.sock.recv(READ_SIZE)
            if not data:
                raise HTTPError(f"session {self.ci}: the server closed the connection")
            if response.feed(data):
                return response

    def handshake(self) -> None:
        """initialize (keep Mcp-Session-Id), then notifications/initialized; nothing for a 2026-07-28 session."""
        if self.modern:
            return
        answer = self.roundtrip({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT})
        if answer.status != 200:
            raise HTTPError(f"initialize: HTTP {answer.status}: {answer.body[:200]!r}")
        msgs = json_messages(answer)
        if not msgs or "result" not in msgs[-1]:
            raise HTTPError(f"initialize: no result: {answer.body[:200]!r}")
        sid = answer.headers.get(b"mcp-session-id")
        self.session_id = sid.decode() if sid else None
        self.head = b""
        note = self.roundtrip({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if note.status not in (200, 202, 204):
            raise HTTPError(f"notifications/initialized: HTTP {note.status}: {note.body[:200]!r}")

    def start_call(self, now: float) -> None:
        """Send the next tools/call; its text names this session and the id."""
        rid = self.next_id
        self.next_id = rid + 1
        text = f"c{self.ci}-{rid}"
        meta = "," + MODERN_META if self.modern else ""
        body = ('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":{"%s":"%s"}%s}}'
                % (rid, self.tool, self.arg, text, meta)).encode()
        self.rid = rid
        self.expect = b'"text":"' + text.encode() + b'"'
        self.response = Response()
        self.sent_at = now
        self.send(self.request_bytes(body))

    def check(self) -> str | None:
        """None if the finished call's answer is right, else what is wrong with it."""
        r = self.response
        if r.status != 200:
            return f"session {self.ci} id {self.rid}: HTTP {r.status}: {r.body[:200]!r}"
        if self.expect in r.body and b'"error"' not in r.body:
            return None
        try:
            msgs = [m for m in json_messages(r) if m.get("id") == self.rid]
            if msgs and msgs[-1]["result"]["content"][0]["text"] == f"c{self.ci}-{self.rid}":
                return None
        except (ValueError, KeyError, IndexError, TypeError):
            pass
        return f"session {self.ci} id {self.rid}: wrong answer {r.body[:200]!r}"

    def end(self) -> None:
        """DELETE the session (as SDK clients do when they close), then close the connection; best effort."""
        try:
            if self.session_id:
                self.sock.settimeout(5)
                head = (f"DELETE {self.path} HTTP/1.1\r\nHost: {self.host}\r\nMcp-Session-Id: {self.session_id}\r\n"
                        f"MCP-Protocol-Version: {PROTOCOL}\r\nContent-Length: 0\r\n\r\n")
                self.send(head.encode())
                response = Response()
                while True:
                    data = self.sock.recv(READ_SIZE)
                    if not data or response.feed(data):
                        break
        except (OSError, HTTPError, ValueError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()


def drive(sessions: list[Session], seconds: float, start_at: float | None = None) -> dict:
    """
    Keep one call in flight on every session until `seconds` pass, then let
    the calls in flight finish.  Returns the latencies, the calls, the
    wrong answers (at most 5 examples) and this process's CPU time.
    """
    ep = select.epoll()
    by_fd = {}
    for s in sessions:
        s.sock.setblocking(False)
        by_fd[s.sock.fileno()] = s
        ep.register(s.sock.fileno(), select.EPOLLIN)
    now = time.monotonic
    if start_at is not None:
        while now() < start_at:
            time.sleep(min(0.01, max(0.0, start_at - now())))
    latencies: list[float] = []
    wrong = 0
    examples: list[str] = []
    cpu0 = os.times()
    start = now()
    deadline = start + seconds
    for s in sessions:
        s.start_call(now())
    outstanding = len(sessions)
    last = start
    try:
        while outstanding:
            events = ep.poll(60)
            if not events:
                raise TimeoutError(f"no answer for 60 s with {outstanding} call(s) in flight")
            for fd, _ in events:
                s = by_fd[fd]
                data = s.sock.recv(READ_SIZE)
                if not data:
                    raise HTTPError(f"session {s.ci}: the server closed the connection")
                if not s.response.feed(data):
                    continue
                t = now()
                latencies.append(t - s.sent_at)
                problem = s.check()
                if problem is not None:
                    wrong += 1
                    if len(examples) < 5:
                        examples.append(problem)
                last = t
                if t < deadline:
                    s.start_call(t)
                else:
                    outstanding -= 1
    finally:
        ep.close()
        for s in sessions:
            s.sock.setblocking(True)
    cpu1 = os.times()
    return {"calls": len(latencies), "start": start, "end": last, "latencies": latencies, "wrong": wrong,
            "examples": examples, "client_cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}


def _worker(pipe, port: int, path: str, tool: str, arg: str, first: int, count: int, seconds: float,
            modern: bool = False) -> None:
    sessions: list[Session] = []
    try:
        for i in range(count):
            sessions.append(Session(first + i, port, path, tool, arg, modern))
            sessions[-1].handshake()
        pipe.send("ready")
        start_at = pipe.recv()
        pipe.send(drive(sessions, seconds, start_at))
        pipe.poll(60)  # the parent's go-ahead to end the sessions, once it has read the CPU figures
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        pipe.send(HTTPError(f"{type(e).__name__}: {e}"))
    finally:
        for s in sessions:
            s.end()


def drive_in_processes(port: int, path: str, tool: str, arg: str, clients: int, procs: int, seconds: float,
                       on_start: Callable[[], None] | None = None, on_end: Callable[[], None] | None = None,
                       modern: bool = False) -> dict:
    """
    `clients` sessions spread over `procs` forked processes, all starting at
    the same instant, once every session is ready; `on_start` is called then,
    and `on_end` once every call is answered, before the sessions end.
    """
    ctx = multiprocessing.get_context("fork")
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers, pipes, first = [], [], 0
    try:
        for count in per:
            parent, child = ctx.Pipe()
            w = ctx.Process(target=_worker, args=(child, port, path, tool, arg, first, count, seconds, modern),
                            daemon=True)
            w.start()
            workers.append(w)
            pipes.append(parent)
            first += count
        for p in pipes:
            if not p.poll(120):
                raise TimeoutError("a client process did not get its sessions ready within 120 s")
            msg = p.recv()
            if isinstance(msg, BaseException):
                raise msg
        if on_start is not None:
            on_start()
        start_at = time.monotonic() + 0.2
        for p in pipes:
            p.send(start_at)
        results = []
        for p in pipes:
            if not p.poll(seconds + 120):
                raise TimeoutError("a client process did not report")
            msg = p.recv()
            if isinstance(msg, BaseException):
                raise msg
            results.append(msg)
        if on_end is not None:
            on_end()
        for p in pipes:
            p.send("end")
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.terminate()
                w.join()
    return {
        "calls": sum(r["calls"] for r in results),
        "start": min(r["start"] for r in results),
        "end": max(r["end"] for r in results),
        "latencies": [x for r in results for x in r["latencies"]],
        "wrong": sum(r["wrong"] for r in results),
        "examples": [e for r in results for e in r["examples"]][:5],
        "client_cpu": sum(r["client_cpu"] for r in results),
    }


def open_idle_sessions(port: int, path: str, count: int, per_connection: int = 50) -> int:
    """
    Open `count` sessions with `initialize` only (no further request), on
    kept-alive connections of `per_connection` initializes each, every
    connection closed afterwards.  Returns the sessions opened.
    """
    opened = 0
    while opened < count:
        s = Session(opened, port, path, "", "")
        try:
            for _ in range(min(per_connection, count - opened)):
                answer = s.roundtrip({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT})
                if answer.status != 200 or not answer.headers.get(b"mcp-session-id"):
                    raise HTTPError(f"initialize #{opened}: HTTP {answer.status}: {answer.body[:200]!r}")
                opened += 1
        finally:
            s.close()
    return opened
