"""
A fake treq client for the HTTP backend's unit tests: it records every
request and returns a Deferred the test fires with a L{FakeResponse}, whose
body the test pushes chunk by chunk.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers

from twisted_mcp.wire.jsonrpc import encode


class FakeBodyTransport:
    """What a response body's protocol is connected to (a
    TransportProxyProducer in Twisted): records stopProducing."""

    def __init__(self) -> None:
        self.stopped = 0

    def stopProducing(self) -> None:
        self.stopped += 1

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


def broken() -> Failure:
    """How a body ends when its connection drops mid-way."""
    return Failure(ResponseFailed([Failure(ConnectionLost("connection reset by peer"))]))


class FakeResponse:
    """
    A response: C{code}, C{headers} and C{deliverBody}.  Chunks pushed
    before C{deliverBody} is called are buffered, as Twisted does.
    """

    def __init__(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.code = code
        self.headers = Headers({k.encode("latin-1"): [v.encode("latin-1")] for k, v in (headers or {}).items()})
        self.transport = FakeBodyTransport()
        self.protocol: Any = None
        self._buffer: list[bytes] = []
        self._end: Failure | None = None
        self.ended = False

    def deliverBody(self, protocol: Any) -> None:
        assert self.protocol is None, "deliverBody called twice"
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        buffered, self._buffer = self._buffer, []
        for chunk in buffered:
            protocol.dataReceived(chunk)
        if self._end is not None:
            protocol.connectionLost(self._end)

    @property
    def stopped(self) -> int:
        return self.transport.stopped

    def push(self, data: bytes) -> None:
        assert not self.ended, "data after the end of the body"
        if self.protocol is None:
            self._buffer.append(data)
        else:
            self.protocol.dataReceived(data)

    def end(self, reason: Failure | None = None) -> None:
        """End the body: cleanly (ResponseDone) unless C{reason} is given."""
        assert not self.ended, "the body ended twice"
        self.ended = True
        reason = reason if reason is not None else Failure(ResponseDone())
        if self.protocol is None:
            self._end = reason
        else:
            self.protocol.connectionLost(reason)

    def push_event(self, message: Any, event: str | None = None) -> None:
        """Push one SSE event whose data is C{message} as JSON."""
        head = f"event: {event}\n".encode() if event else b""
        data = message if isinstance(message, str) else encode(message).decode().strip()
        self.push(head + b"data: " + data.encode() + b"\n\n")


class FakeRequest:
    def __init__(
        self, method: str, url: bytes, data: bytes | None, headers: Headers | None, allow_redirects: Any, unbuffered: Any
    ) -> None:
        self.method = method
        self.url = url
        self.data = data
        self.headers = headers if headers is not None else Headers()
        self.allow_redirects = allow_redirects
        self.unbuffered = unbuffered
        self.cancelled = False
        self.response: FakeResponse | None = None

        def cancel(d: Deferred[Any]) -> None:
            self.cancelled = True

        self.deferred: Deferred[Any] = Deferred(cancel)

    def __repr__(self) -> str:
        return f"<{self.method} {self.url!r} {self.rpc_method or ''}>"

    @property
    def message(self) -> Any:
        assert self.data is not None
        return json.loads(self.data)

    @property
    def rpc_method(self) -> str | None:
        if self.data is None:
            return None
        return self.message.get("method")

    @property
    def rpc_id(self) -> Any:
        return self.message.get("id")

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode("latin-1"))
        if values is None:
            return None
        assert len(values) == 1, values
        return values[0].decode("latin-1")

    def respond(self, code: int = 200, headers: dict[str, str] | None = None, body: bytes | None = None) -> FakeResponse:
        """Fire the request with a response; with C{body}, the body is
        complete (ended cleanly); without, the test pushes it."""
        assert not self.deferred.called, f"{self} already answered"
        response = FakeResponse(code, headers)
        self.response = response
        if body is not None:
            if body:
                response.push(body)
            response.end()
        self.deferred.callback(response)
        return response

    def fail(self, exception: BaseException) -> None:
        self.deferred.errback(Failure(exception))


class FakeHTTPClient:
    """Records C{request} calls (treq's HTTPClient signature)."""

    def __init__(self) -> None:
        self.requests: list[FakeRequest] = []

    def request(
        self,
        method: str,
        url: bytes,
        data: bytes | None = None,
        headers: Headers | None = None,
        allow_redirects: Any = True,
        unbuffered: Any = False,
        **kwargs: Any,
    ) -> Deferred[Any]:
        assert not kwargs, kwargs
        request = FakeRequest(method, url, data, headers, allow_redirects, unbuffered)
        self.requests.append(request)
        return request.deferred

    def unanswered(self) -> list[FakeRequest]:
        return [r for r in self.requests if not r.deferred.called]
