"""
Discovery (C{docs/design/oauth.md} §3, steps 1 to 4): from a backend's 401
challenge (or none) to its protected resource metadata (RFC 9728), the
authorization server it names, and that server's metadata (RFC 8414 /
OpenID discovery), each validated by L{metadata}.

Without a challenge (no request has been answered 401 yet), the two
well-known URLs are tried; when neither has the metadata, the backend is
asked for a challenge: a JSON-RPC C{ping} without a token, whose 401 names
the metadata in C{resource_metadata} (a server may publish it elsewhere,
RFC 9728 §5.1) and gives the C{scope} to ask for.

Results are cached per backend for C{max(60 s, Cache-Control max-age)}, at
most a day; a failure is remembered for 30 s.  Concurrent discoveries of one
backend share one chain of requests.  Step 5 (the 2025-03-26 fallback to the
backend's own origin) is not done: a backend without resource metadata is
C{no-resource-metadata}.
"""

from __future__ import annotations

import re
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.backends.oauth.challenge import Challenge, bearer_challenge
from twisted_mcp.backends.oauth.fetch import AuthHttp, Fetched, origin_of
from twisted_mcp.backends.oauth.metadata import (
    ResourceMetadata,
    ServerMetadata,
    parse_resource_metadata,
    parse_server_metadata,
)
from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable, OAuthProblem
from twisted_mcp.backends.oauth.single_flight import SingleFlight
from twisted_mcp.backends.oauth.urls import (
    authorization_server_metadata_urls,
    protected_resource_metadata_urls,
    same_origin,
)
from twisted_mcp.urls import shown_url

log = Logger()

#: How long a success is kept at least, at most; how long a failure is kept.
MIN_CACHE = 60.0
MAX_CACHE = 86400.0
FAILURE_CACHE = 30.0

#: What the gateway sends to ask a backend for its challenge: a request every MCP server
#: accepts at any time (and before initialization), sent without a token.
ASK_FOR_CHALLENGE = {"jsonrpc": "2.0", "id": "twisted-mcp-oauth-discovery", "method": "ping"}

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


@frozen
class Discovered:
    """What discovery found for a backend.

    @ivar challenge_scope: the C{scope} of the 401 challenge discovery
        started from, or C{None} (§4.2: the first choice of scopes).
    """

    resource: ResourceMetadata
    server: ServerMetadata
    challenge_scope: tuple[str, ...] | None


def cache_lifetime(answers: list[Fetched]) -> float:
    """C{max(60 s, the smallest Cache-Control max-age)}, at most a day."""
    ages = []
    for answer in answers:
        control = answer.header("cache-control")
        found = _MAX_AGE.search(control) if control else None
        if found:
            ages.append(float(found.group(1)))
    if not ages:
        return MIN_CACHE
    return max(MIN_CACHE, min(min(ages), MAX_CACHE))


class Discovery:
    """
    Discovers and caches, per backend.

    @param clock: for the cache's expiry.
    @param http: the bounded fetcher.
    """

    def __init__(self, clock: IReactorTime, http: AuthHttp) -> None:
        self.clock = clock
        self.http = http
        #: backend -> (expires at, the result or the problem, the challenge's resource_metadata)
        self._cache: dict[str, tuple[float, Discovered | OAuthProblem, str | None]] = {}
        self._running: SingleFlight[str, Discovered] = SingleFlight()
        #: backend -> the last success, kept through later failures.
        self._last_good: dict[str, Discovered] = {}

    def cached(self, backend: str) -> Discovered | None:
        """The last successful result for C{backend}, even if stale or failed since, or C{None}."""
        return self._last_good.get(backend)

    def expire(self, backend: str) -> None:
        """
        Fetch C{backend}'s metadata afresh next time, keeping the last
        success for outages (L{cached}).  For a 401 to a token: the resource
        may have moved to another authorization server (SEP-2352), which the
        cache would hide for up to its lifetime.
        """
        self._cache.pop(backend, None)

    def forget(self, backend: str) -> None:
        """Discover C{backend} afresh next time (e.g. its configuration changed)."""
        self._cache.pop(backend, None)
        self._last_good.pop(backend, None)

    def discover(
        self, backend: str, url: str, challenge: Challenge | None = None, issuer: str | None = None
    ) -> Deferred[Discovered]:
        """
        What C{backend} (at C{url}) needs: from the cache when fresh and
        the challenge names no other C{resource_metadata}, else by §3.

        @param challenge: the Bearer challenge of the backend's last 401, if any.
        @param issuer: the pinned issuer (C{auth.oauth.issuer}), if any.
        """
        named = challenge.resource_metadata if challenge is not None else None
        entry = self._cache.get(backend)
        if entry is not None and entry[0] > self.clock.seconds() and (named is None or named == entry[2]):
            result = entry[1]
            if isinstance(result, OAuthProblem):
                return _failed(result)
            if challenge is not None and challenge.scope is not None and challenge.scope != result.challenge_scope:
                result = Discovered(result.resource, result.server, challenge.scope)
            return _succeeded(result)
        return self._running.run(backend, lambda: Deferred.fromCoroutine(self._discover(backend, url, challenge, issuer)))

    async def _discover(self, backend: str, url: str, challenge: Challenge | None, issuer: str | None) -> Discovered:
        named = challenge.resource_metadata if challenge is not None else None
        try:
            answers: list[Fetched] = []
            try:
                resource = await self._resource(backend, url, named, answers)
            except AuthorizationUnavailable as problem:
                if challenge is not None or problem.reason != "no-resource-metadata":
                    raise
                asked = await self._ask(url)
                if asked is None or asked.resource_metadata is None:
                    raise
                challenge, named = asked, asked.resource_metadata
                resource = await self._resource(backend, url, named, answers)
            chosen = _choose(backend, resource, issuer)
            server = await self._server(backend, chosen, answers)
        except OAuthProblem as problem:
            self._cache[backend] = (self.clock.seconds() + FAILURE_CACHE, problem, named)
            log.info(
                "backend {backend}: discovery failed ({reason}): {why}",
                backend=backend,
                reason=problem.reason,
                why=problem.message,
            )
            raise
        result = Discovered(resource, server, challenge.scope if challenge is not None else None)
        self._cache[backend] = (self.clock.seconds() + cache_lifetime(answers), result, named)
        self._last_good[backend] = result
        log.info(
            "backend {backend}: authorization server {issuer} for resource {resource}",
            backend=backend,
            issuer=server.issuer,
            resource=resource.resource,
        )
        return result

    async def _resource(self, backend: str, url: str, named: str | None, answers: list[Fetched]) -> ResourceMetadata:
        if named is not None:
            if not same_origin(named, url):
                raise AuthorizationUnavailable(
                    "metadata-origin",
                    f"backend '{backend}' named its resource metadata at {origin_of(named)}, "
                    f"another origin than its own ({origin_of(url)}): not fetched",
                )
            candidates = [named]
        else:
            candidates = protected_resource_metadata_urls(url)
        found = await self._first_found(backend, candidates, answers)
        if found is not None:
            return parse_resource_metadata(found.body, url)
        raise AuthorizationUnavailable(
            "no-resource-metadata",
            f"backend '{backend}' publishes no protected resource metadata (tried {', '.join(shown_url(c) for c in candidates)})",
        )

    async def _first_found(self, backend: str, candidates: list[str], answers: list[Fetched]) -> Fetched | None:
        """The first of C{candidates} answering 200 (kept in C{answers}); None when each is a 404 (anything else is refused)."""
        for candidate in candidates:
            answer = await self.http.get(candidate)
            if answer.status == 200:
                answers.append(answer)
                return answer
            _refuse_unusable(backend, candidate, answer)
        return None

    async def _ask(self, url: str) -> Challenge | None:
        """The Bearer challenge of the backend's answer to a request without a token, if it is a 401."""
        answer = await self.http.post_json(url, ASK_FOR_CHALLENGE)
        if answer.status != 401:
            return None
        return bearer_challenge(answer.headers.getRawHeaders(b"www-authenticate", []))

    async def _server(self, backend: str, issuer: str, answers: list[Fetched]) -> ServerMetadata:
        candidates = authorization_server_metadata_urls(issuer)
        found = await self._first_found(backend, candidates, answers)
        if found is not None:
            return parse_server_metadata(found.body, issuer)
        raise AuthorizationUnavailable(
            "no-authorization-server-metadata",
            f"the authorization server {issuer} of backend '{backend}' publishes no metadata (tried {', '.join(shown_url(c) for c in candidates)})",
        )


def _choose(backend: str, resource: ResourceMetadata, issuer: str | None) -> str:
    """§3 step 3: the pinned issuer if the resource names it, else the first."""
    if issuer is None:
        return resource.authorization_servers[0]
    if issuer in resource.authorization_servers:
        return issuer
    raise AuthorizationUnavailable(
        "issuer-not-allowed",
        f"backend '{backend}' names the authorization servers {', '.join(resource.authorization_servers)}, "
        f"not the configured issuer {issuer}",
    )


def _refuse_unusable(backend: str, url: str, answer: Fetched) -> None:
    """A 3xx, 5xx or 429 ends discovery; other statuses (404) try the next URL."""
    if 300 <= answer.status < 400:
        location = answer.header("location")
        where = f" to {origin_of(location)}" if location else ""
        raise AuthorizationUnavailable(
            "metadata-unavailable",
            f"backend '{backend}': {shown_url(url)} answered {answer.status} (a redirect{where}, not followed)",
        )
    if answer.status >= 500 or answer.status == 429:
        raise AuthorizationUnavailable("metadata-unavailable", f"backend '{backend}': {shown_url(url)} answered {answer.status}")


def _succeeded(value: Discovered) -> Deferred[Discovered]:
    d: Deferred[Discovered] = Deferred()
    d.callback(value)
    return d


def _failed(problem: BaseException) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(problem))
    return d


__all__ = ["Discovered", "Discovery", "cache_lifetime"]
