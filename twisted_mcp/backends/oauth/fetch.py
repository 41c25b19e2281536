"""
One bounded HTTP request to an authorization server or a metadata URL
(C{docs/design/oauth.md} §3, "Every request of the chain"): redirects never
followed (a 3xx comes back as it is), no cookies, C{Accept:
application/json}, a body of at most C{max_bytes}, and one timeout that
covers the wait for the headers I{and} the reading of the body (treq's
C{timeout=} covers the headers only).

Messages name the authorization server's origin only: a URL's path or query
is never quoted, and neither is a body.
"""

from __future__ import annotations

import json
from typing import Any, Mapping
from urllib.parse import urlencode, urlsplit

from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.http_headers import Headers

from twisted_mcp.backends.cookies import NoCookies
from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable

_ACCEPT = b"application/json"


@frozen
class Fetched:
    """A complete answer: its status, headers and whole (bounded) body."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header C{name}, decoded as latin-1, or C{None}."""
        values = self.headers.getRawHeaders(name.encode("ascii"))
        return values[0].decode("latin-1") if values else None


def origin_of(url: str) -> str:
    """C{scheme://host[:port]} of C{url}, the only part of it messages show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(an invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def cookieless_client(agent: Any) -> Any:
    """A treq client over C{agent} whose cookie jar keeps nothing."""
    from treq.client import HTTPClient
    from treq.cookies import IndexableCookieJar  # type: ignore[attr-defined]

    return HTTPClient(agent, cookiejar=IndexableCookieJar(policy=NoCookies()))


class _Body(Protocol):
    """Collects a body up to C{limit} bytes; C{done} fires with the bytes,
    or fails with L{AuthorizationUnavailable} when the body is too large or
    with the reason the body broke."""

    def __init__(self, limit: int, origin: str, method: bytes = b"GET") -> None:
        self.limit = limit
        self.origin = origin
        self.method = method
        self.chunks: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.chunks.append(data)
        self.size += len(data)
        if self.size > self.limit:
            self.stop(too_large(self.origin, self.limit, self.method))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.done.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)

    def stop(self, why: BaseException) -> None:
        """Stop reading (the connection is closed) and fail C{done} with C{why}."""
        if self.done.called:
            return
        self.done.errback(Failure(why))
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()


def too_large(origin: str, limit: int, method: bytes = b"GET") -> AuthorizationUnavailable:
    """
    An answer over the size limit: C{metadata-invalid} for a GET (metadata
    is all the gateway GETs), C{as-unavailable} for a POST (a token,
    registration or revocation endpoint that cannot be used now).
    """
    if method == b"GET":
        return AuthorizationUnavailable("metadata-invalid", f"the answer from {origin} is larger than {limit} bytes")
    return AuthorizationUnavailable(
        "as-unavailable", f"the authorization server at {origin} answered a {method.decode('ascii')} with more than {limit} bytes"
    )


class AuthHttp:
    """
    Sends one bounded request at a time to an authorization server.

    @param reactor: the clock for the timeout, and (without C{http}) the
        reactor the real client connects with.
    @param request_timeout: seconds from sending to the end of the body.
    @param max_bytes: the largest body read (C{oauth.maxMetadataBytes}).
    @param http: a treq-like client (C{request(method, url, **kwargs)});
        tests pass C{treq.testing.StubTreq}.  Without it, a treq client of
        the gateway's own over one connection pool, without a cookie jar.
    """

    def __init__(self, reactor: Any, request_timeout: float, max_bytes: int, http: Any | None = None) -> None:
        self.clock = reactor
        self.request_timeout = request_timeout
        self.max_bytes = max_bytes
        self._pool: Any = None
        if http is None:
            http = self._real_client(reactor)
        self.http = http

    def _real_client(self, reactor: Any) -> Any:
        from twisted.web.client import Agent, HTTPConnectionPool

        self._pool = HTTPConnectionPool(reactor, persistent=True)
        return cookieless_client(Agent(reactor, connectTimeout=self.request_timeout, pool=self._pool))

    def close(self) -> Deferred[None]:
        """Close the connections of the gateway's own client (none with an injected one)."""
        if self._pool is None:
            return succeed(None)
        result: Deferred[None] = self._pool.closeCachedConnections()
        return result

    def get(self, url: str) -> Deferred[Fetched]:
        """GET C{url}."""
        return self._send(b"GET", url, {}, None)

    def post_form(self, url: str, form: Mapping[str, str], headers: Mapping[bytes, bytes] | None = None) -> Deferred[Fetched]:
        """POST C{form} as C{application/x-www-form-urlencoded}, with C{headers} added."""
        all_headers = dict(headers or {})
        all_headers[b"Content-Type"] = b"application/x-www-form-urlencoded"
        return self._send(b"POST", url, all_headers, urlencode(dict(form)).encode("ascii"))

    def post_json(self, url: str, body: Mapping[str, Any]) -> Deferred[Fetched]:
        """POST C{body} as JSON."""
        return self._send(b"POST", url, {b"Content-Type": b"application/json"}, json.dumps(body).encode("utf-8"))

    def _send(self, method: bytes, url: str, headers: Mapping[bytes, bytes], data: bytes | None) -> Deferred[Fetched]:
        origin = origin_of(url)
        sent = dict(headers)
        sent[b"Accept"] = _ACCEPT
        kwargs: dict[str, Any] = {
            "headers": Headers({k: [v] for k, v in sent.items()}),
            "allow_redirects": False,
            "unbuffered": True,
        }
        if data is not None:
            kwargs["data"] = data
        state: dict[str, Any] = {"body": None, "timed_out": False, "request": None, "timer": None}

        def cancel_request(_: Deferred[Fetched]) -> None:
            if state["timer"] is not None and state["timer"].active():
                state["timer"].cancel()
            body: _Body | None = state["body"]
            if body is not None:
                body.stop(CancelledError())
            elif state["request"] is not None:
                state["request"].cancel()

        result: Deferred[Fetched] = Deferred(cancel_request)
        try:
            request: Deferred[Any] = self.http.request(method.decode("ascii"), url, **kwargs)
        except Exception as e:  # an invalid URL, for instance
            return _failed(unavailable(origin, e))
        state["request"] = request

        def expire() -> None:
            state["timed_out"] = True
            body: _Body | None = state["body"]
            if body is None:
                request.cancel()
            else:
                body.stop(timeout(origin, self.request_timeout))

        timer: IDelayedCall = self.clock.callLater(self.request_timeout, expire)
        state["timer"] = timer

        def finish(outcome: Fetched | Failure) -> None:
            if timer.active():
                timer.cancel()
            if result.called:
                return
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        def answered(response: Any) -> None:
            length = response.length if isinstance(getattr(response, "length", None), int) else None
            body = _Body(self.max_bytes, origin, method)
            state["body"] = body
            response.deliverBody(body)
            if length is not None and length > self.max_bytes:
                body.stop(too_large(origin, self.max_bytes, method))
            body.done.addCallbacks(
                lambda data: finish(Fetched(status=response.code, headers=response.headers, body=data)),
                lambda f: finish(_body_failure(f, origin, state["timed_out"], self.request_timeout)),
            )

        def not_answered(failure: Failure) -> None:
            if state["timed_out"]:
                finish(Failure(timeout(origin, self.request_timeout)))
            elif failure.check(CancelledError):
                finish(failure)
            else:
                finish(Failure(unavailable(origin, failure.value)))

        request.addCallbacks(answered, not_answered)
        return result


def _failed(e: BaseException) -> Deferred[Fetched]:
    d: Deferred[Fetched] = Deferred()
    d.errback(Failure(e))
    return d


def _body_failure(failure: Failure, origin: str, timed_out: bool, seconds: float) -> Failure:
    if failure.check(AuthorizationUnavailable, CancelledError):
        return failure
    if timed_out:
        return Failure(timeout(origin, seconds))
    return Failure(unavailable(origin, failure.value))


def timeout(origin: str, seconds: float) -> AuthorizationUnavailable:
    return AuthorizationUnavailable("as-timeout", f"the authorization server at {origin} did not answer within {seconds:g} s")


def unavailable(origin: str, e: BaseException) -> AuthorizationUnavailable:
    reasons = getattr(e, "reasons", None)
    why = "; ".join(r.getErrorMessage() for r in reasons) if reasons else (str(e) or type(e).__name__)
    return AuthorizationUnavailable("as-unavailable", f"the authorization server at {origin} could not be reached ({why[:200]})")


__all__ = ["AuthHttp", "Fetched", "cookieless_client", "origin_of"]
