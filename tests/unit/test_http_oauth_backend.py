"""
Tests for an HTTP backend with C{auth: oauth}: every request carries the
token of the principal it runs for, each principal has its own session with
the server, a 401 is refreshed once, and a principal without a token is told
to log in before anything is sent.  A fake token source stands for the
broker; the server is L{http_fakes}' fake treq client.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from twisted_mcp.backends import envelope
from twisted_mcp.backends.base import State
from twisted_mcp.backends.http import HttpBackend
from twisted_mcp.backends.oauth.problems import AuthorizationFailed, AuthorizationRequired
from twisted_mcp.config import HttpServer
from twisted_mcp.config.models import ClientCredentialsAuth, OAuthAuth
from twisted_mcp.mcp import errors
from twisted_mcp.wire.jsonrpc import JsonRpcError

from .http_fakes import FakeHTTPClient, FakeRequest
from .test_http_backend import INIT_RESULT, TOOLS_1, URL, HttpTestCase
from .test_http_modern_backend import DISCOVERED, MODERN, PLAIN

INSUFFICIENT = 'Bearer error="insufficient_scope", scope="read write", resource_metadata="http://mcp.example/.well-known/oauth-protected-resource/mcp"'
CHALLENGE = 'Bearer resource_metadata="http://mcp.example/.well-known/oauth-protected-resource/mcp", scope="tools:read"'


@attrs.frozen
class Bearer:
    token: str = attrs.field(repr=False)
    version: int
    principal: str | None


class FakeTokens:
    """The broker's side: tokens by principal (None: the catalog's), refreshes by old token."""

    def __init__(self) -> None:
        self.tokens: dict[str | None, str] = {None: "catalog-token"}
        self.refreshed: dict[str, str] = {}
        self.challenges: list[list[bytes]] = []
        self.rejections: list[tuple[str, list[bytes]]] = []
        self.asked: list[str | None] = []
        #: Whose token the gateway's own requests get (None: the "catalog-token").
        self.catalog: str | None = None
        self.step_ups: list[tuple[str, list[bytes], str]] = []
        self.stepped: dict[str, str] = {}
        self.refusals: list[Exception] = []

    def token_for(self, principal: str | None, backend: str) -> Deferred[Any]:
        self.asked.append(principal)
        if principal is None and self.catalog is not None:
            principal = self.catalog
        token = self.tokens.get(principal)
        if token is None:
            return fail(
                AuthorizationRequired(
                    "authorization-required",
                    f"backend {backend!r} needs your authorization: run `twisted-mcp login {backend}`",
                    login=f"twisted-mcp login {backend}",
                )
            )
        return succeed(Bearer(token, 1, principal))

    def rejected(self, bearer: Any, backend: str, www_authenticate: Sequence[bytes]) -> Deferred[Any]:
        self.rejections.append((bearer.token, list(www_authenticate)))
        current = self.tokens.get(bearer.principal)
        if current is not None and current != bearer.token:
            return succeed(Bearer(current, bearer.version + 1, bearer.principal))  # refreshed meanwhile
        new = self.refreshed.pop(bearer.token, None)
        if new is None:
            self.tokens.pop(bearer.principal, None)
            return fail(AuthorizationRequired("token-rejected", f"backend {backend!r} refused the token", login="x"))
        self.tokens[bearer.principal] = new
        return succeed(Bearer(new, bearer.version + 1, bearer.principal))

    def challenged(self, backend: str, www_authenticate: Sequence[bytes]) -> None:
        self.challenges.append(list(www_authenticate))

    def forbidden(self, bearer: Any, backend: str, www_authenticate: Sequence[bytes], tool: str) -> Deferred[Any]:
        """A step-up: a new token when one is set in C{stepped}, else what C{refusals} holds, else -31040."""
        self.step_ups.append((bearer.token, list(www_authenticate), tool))
        new = self.stepped.pop(bearer.token, None)
        if new is not None:
            self.tokens[bearer.principal] = new
            return succeed(Bearer(new, bearer.version + 1, bearer.principal))
        if self.refusals:
            return fail(self.refusals.pop(0))
        return fail(
            AuthorizationRequired(
                "insufficient-scope",
                "needs more scopes",
                login=f"twisted-mcp login {backend} --scope write",
                scopes=["read", "write"],
            )
        )


class OAuthBackendTests(HttpTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.http = FakeHTTPClient()
        self.states: list[State] = []
        self.tokens = FakeTokens()

    def make(self, max_message: int = 1 << 20, **overrides: Any) -> HttpBackend:
        settings: dict[str, Any] = dict(
            name="remote",
            url=URL,
            connectTimeout=5.0,
            discoveryTimeout=10.0,
            callTimeout=5.0,
            restartDelay=1.0,
            restartMaxDelay=8.0,
            protocol="legacy",
            idleTimeout=60.0,
            auth=OAuthAuth(),
        )
        settings.update(overrides)
        backend = HttpBackend(HttpServer(**settings), self.clock, max_message, oauth=self.tokens)
        backend.http = self.http  # type: ignore[assignment]
        backend.add_listener(lambda b: self.states.append(b.state))
        return backend

    def up(self) -> HttpBackend:
        backend = self.make()
        backend.startService()
        self.bring_up(backend)
        return backend

    def open_session(self, session: str) -> FakeRequest:
        """Answer a principal's initialize (and its initialized); returns the initialize."""
        init = self.pending("initialize")
        self.answer(init, INIT_RESULT, {"mcp-session-id": session})
        self.accept(self.pending("notifications/initialized"))
        return init

    def test_catalogRunCarriesTheCatalogToken(self) -> None:
        """The backend's own run (handshake, listings) carries the catalog principal's token, not a static header."""
        backend = self.up()
        for request in self.sent("initialize") + self.sent("tools/list"):
            self.assertEqual(request.header("authorization"), "Bearer catalog-token")
        self.assertEqual(backend.tools, TOOLS_1)
        self.stop(backend)

    def test_noTokenYetThe401ChallengeGoesToTheBroker(self) -> None:
        """
        Before anyone has authorized, the backend's run asks without a token;
        the server's 401 challenge (which names its metadata) reaches the
        broker and the backend is down, its reason naming the login command.
        """
        del self.tokens.tokens[None]
        backend = self.make()
        backend.startService()
        init = self.pending("initialize")
        self.assertIsNone(init.header("authorization"))
        init.respond(401, {"www-authenticate": CHALLENGE}, b"unauthorized")
        self.assertEqual(self.tokens.challenges, [[CHALLENGE.encode()]])
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("twisted-mcp login remote", backend.last_error or "")
        self.stop(backend)

    def test_principalsGetTheirOwnSessionsAndTokens(self) -> None:
        """Alice's and Bob's calls go over sessions of their own, each with its own token; never the catalog's."""
        backend = self.up()
        self.tokens.tokens["jwt:alice"] = "alice-token"
        self.tokens.tokens["jwt:bob"] = "bob-token"
        alice = backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        init = self.open_session("sess-alice")
        self.assertEqual(init.header("authorization"), "Bearer alice-token")
        self.assertIsNone(init.header("mcp-session-id"))
        call = self.pending("tools/call")
        self.assertEqual(call.header("authorization"), "Bearer alice-token")
        self.assertEqual(call.header("mcp-session-id"), "sess-alice")
        self.answer(call, {"content": [{"type": "text", "text": "alice's"}]})
        self.assertEqual(self.successResultOf(alice)["content"][0]["text"], "alice's")

        bob = backend.call_as("jwt:bob", "tools/call", {"name": "get_time", "arguments": {}})
        init = self.open_session("sess-bob")
        self.assertEqual(init.header("authorization"), "Bearer bob-token")
        call = self.pending("tools/call")
        self.assertEqual((call.header("authorization"), call.header("mcp-session-id")), ("Bearer bob-token", "sess-bob"))
        self.answer(call, {"content": []})
        self.successResultOf(bob)

        # Alice again: her session is reused, no new handshake.
        again = backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        self.assertEqual(len(self.sent("initialize")), 3)
        call = self.pending("tools/call")
        self.assertEqual(call.header("mcp-session-id"), "sess-alice")
        self.answer(call, {"content": []})
        self.successResultOf(again)
        self.assertEqual(len(backend.principal_runs), 2)
        self.stop(backend)
        # Each session was ended with its own token.
        deletes = {(r.header("mcp-session-id"), r.header("authorization")) for r in self.http.requests if r.method == "DELETE"}
        self.assertEqual(
            deletes,
            {("sess-1", "Bearer catalog-token"), ("sess-alice", "Bearer alice-token"), ("sess-bob", "Bearer bob-token")},
        )

    def test_concurrentFirstCallsShareOneHandshake(self) -> None:
        backend = self.up()
        self.tokens.tokens["jwt:alice"] = "alice-token"
        first = backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        second = backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        self.open_session("sess-alice")
        calls = self.pending_all("tools/call")
        self.assertEqual(len(calls), 2)
        for call in calls:
            self.answer(call, {"content": []})
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(len(self.sent("initialize")), 2)  # the catalog's and alice's
        self.stop(backend)

    def test_principalWithoutTokenIsToldToLogIn(self) -> None:
        """-31040 with the login command, and nothing sent to the server."""
        backend = self.up()
        before = len(self.http.requests)
        d = backend.call_as("jwt:carol", "tools/call", {"name": "get_time", "arguments": {}})
        error = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(error.code, errors.AUTHORIZATION_REQUIRED)
        self.assertEqual(error.data["reason"], "authorization-required")
        self.assertEqual(error.data["backend"], "remote")
        self.assertEqual(error.data["login"], "twisted-mcp login remote")
        self.assertEqual(len(self.http.requests), before)
        self.stop(backend)

    def test_a401IsRefreshedOnceAndResent(self) -> None:
        """The same request (same JSON-RPC id) goes again with the refreshed token."""
        backend = self.up()
        self.tokens.tokens["jwt:alice"] = "alice-token"
        self.tokens.refreshed["alice-token"] = "alice-token-2"
        d = backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        self.open_session("sess-alice")
        call = self.pending("tools/call")
        call.respond(401, {"www-authenticate": 'Bearer error="invalid_token"'}, b"expired")
        self.assertEqual(self.tokens.rejections, [("alice-token", [b'Bearer error="invalid_token"'])])
        again = self.pending("tools/call")
        self.assertEqual(again.header("authorization"), "Bearer alice-token-2")
        self.assertEqual(again.rpc_id, call.rpc_id)
        self.answer(again, {"content": []})
        self.successResultOf(d)
        self.stop(backend)

    def test_a401AfterTheRefreshIsTokenRejected(self) -> None:
        backend = self.up()
        self.tokens.tokens["jwt:alice"] = "alice-token"
        self.tokens.refreshed["alice-token"] = "alice-token-2"
        d = backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        self.open_session("sess-alice")
        self.pending("tools/call").respond(401, {}, b"no")
        self.pending("tools/call").respond(401, {}, b"still no")
        error = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((error.code, error.data["reason"]), (errors.AUTHORIZATION_REQUIRED, "token-rejected"))
        self.assertEqual(len(self.sent("tools/call")), 2)
        self.stop(backend)

    def test_idleRunIsClosed(self) -> None:
        """A principal's session without a call for idleTimeout is ended on the server."""
        backend = self.up()
        self.tokens.tokens["jwt:alice"] = "alice-token"
        d = backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        self.open_session("sess-alice")
        self.answer(self.pending("tools/call"), {"content": []})
        self.successResultOf(d)
        self.clock.advance(61)
        delete = self.pending(method="DELETE")
        self.assertEqual(delete.header("mcp-session-id"), "sess-alice")
        delete.respond(200, body=b"")
        self.assertEqual(len(backend.principal_runs), 0)
        self.stop(backend)

    def test_principalRunCapIsBusy(self) -> None:
        backend = self.make(maxInstances=1)
        backend.startService()
        self.bring_up(backend)
        self.tokens.tokens["jwt:alice"] = "alice-token"
        self.tokens.tokens["jwt:bob"] = "bob-token"
        backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        d = backend.call_as("jwt:bob", "tools/call", {"name": "get_time", "arguments": {}})
        self.assertEqual(self.failureResultOf(d, JsonRpcError).value.code, errors.BUSY)
        self.open_session("sess-alice")
        self.answer(self.pending("tools/call"), {"content": []})
        self.stop(backend)

    def test_eventStreamReopensWithTheCurrentToken(self) -> None:
        """The backend's event stream, reopened after it ended, carries the token of now, not the one it opened with."""
        backend = self.make()
        backend.startService()
        get = self.bring_up(backend, stream=True)
        self.assertEqual(get.header("authorization"), "Bearer catalog-token")
        self.tokens.tokens[None] = "catalog-token-2"
        assert get.response is not None
        get.response.end()
        self.clock.advance(1)
        again = self.pending(method="GET")
        self.assertEqual(again.header("authorization"), "Bearer catalog-token-2")
        again.respond(405, body=b"")
        self.stop(backend)

    def test_concurrent401sReportTheTokenEachWasSentWith(self) -> None:
        """
        Two calls sent with the same token, both refused: each 401 is reported
        with the token that request carried (the second must not condemn the
        token the first one's refresh brought), and both are resent with it.
        """
        backend = self.up()
        self.tokens.tokens["jwt:alice"] = "alice-token"
        self.tokens.refreshed["alice-token"] = "alice-token-2"
        first = backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        second = backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        self.open_session("sess-alice")
        one, two = self.pending_all("tools/call")
        one.respond(401, {}, b"expired")
        two.respond(401, {}, b"expired")
        self.assertEqual([token for token, _ in self.tokens.rejections], ["alice-token", "alice-token"])
        resent = self.pending_all("tools/call")
        self.assertEqual([r.header("authorization") for r in resent], ["Bearer alice-token-2"] * 2)
        for r in resent:
            self.answer(r, {"content": []})
        self.successResultOf(first)
        self.successResultOf(second)
        self.stop(backend)

    def test_backendRunKeepsThePrincipalItOpenedWith(self) -> None:
        """
        The backend's own session, opened with Alice's token, carries Alice's
        token for its whole life, whoever the broker would pick now; when her
        authorization ends, that session ends and a new one starts with another's.
        """
        self.tokens.catalog = "jwt:alice"
        self.tokens.tokens["jwt:alice"] = "alice-token"
        self.tokens.tokens["jwt:bob"] = "bob-token"
        backend = self.make()
        backend.startService()
        self.bring_up(backend)
        self.assertEqual(self.sent("initialize")[0].header("authorization"), "Bearer alice-token")
        self.tokens.catalog = "jwt:bob"
        d = backend.call("tools/list", {})
        listing = self.pending("tools/list")
        self.assertEqual(listing.header("authorization"), "Bearer alice-token")
        self.answer(listing, {"tools": TOOLS_1})
        self.successResultOf(d)
        del self.tokens.tokens["jwt:alice"]
        d = backend.call("tools/list", {})
        self.assertEqual(self.failureResultOf(d, JsonRpcError).value.code, errors.AUTHORIZATION_REQUIRED)
        self.assertEqual(backend.state, State.DOWN)
        self.clock.advance(1)
        self.assertEqual(self.pending("initialize").header("authorization"), "Bearer bob-token")
        self.bring_up(backend, session="sess-2")
        self.stop(backend)

    def test_noResourceSubscriptionsOnPerPrincipalServers(self) -> None:
        """A subscription would be made on one principal's session for another's client: refused, nothing sent."""
        backend = self.up()
        before = len(self.http.requests)
        with self.assertRaises(JsonRpcError) as e:
            backend.subscribe_resource("file:///a", {"uri": "file:///a"})
        self.assertEqual(e.exception.code, -32601)
        self.assertEqual(len(self.http.requests), before)
        self.stop(backend)

    # -- step-up (§7.4) --------------------------------------------------

    def alice_calls(self, backend: HttpBackend, tool: str = "write_note") -> tuple[Deferred[Any], FakeRequest]:
        self.tokens.tokens["jwt:alice"] = "alice-token"
        d = backend.call_as("jwt:alice", "tools/call", {"name": tool, "arguments": {"text": "hi"}})
        self.open_session("sess-alice")
        return d, self.pending("tools/call")

    def test_insufficientScopeIsAStepUp(self) -> None:
        """A 403 insufficient_scope: the broker is told (token, challenge, tool); the call gets its -31040, nothing resent."""
        backend = self.up()
        d, call = self.alice_calls(backend)
        call.respond(
            403, {"www-authenticate": INSUFFICIENT, "content-type": "application/json"}, b'{"error": "insufficient_scope"}'
        )
        self.assertEqual(self.tokens.step_ups, [("alice-token", [INSUFFICIENT.encode()], "write_note")])
        error = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(error.code, errors.AUTHORIZATION_REQUIRED)
        self.assertEqual(
            error.data,
            {
                "backend": "remote",
                "reason": "insufficient-scope",
                "login": "twisted-mcp login remote --scope write",
                "scopes": ["read", "write"],
            },
        )
        self.assertEqual(len(self.sent("tools/call")), 1)
        self.assertEqual(self.tokens.rejections, [])
        # The session and the token stay: the next call goes on them.
        again = backend.call_as("jwt:alice", "tools/call", {"name": "get_time", "arguments": {}})
        call = self.pending("tools/call")
        self.assertEqual((call.header("authorization"), call.header("mcp-session-id")), ("Bearer alice-token", "sess-alice"))
        self.answer(call, {"content": []})
        self.successResultOf(again)
        self.stop(backend)

    def test_stepUpLimitFromTheBroker(self) -> None:
        """The broker's -31041 step-up-limit is the call's error."""
        backend = self.up()
        self.tokens.refusals.append(AuthorizationFailed("step-up-limit", "still refuses", scopes=["read", "write"]))
        d, call = self.alice_calls(backend)
        call.respond(403, {"www-authenticate": INSUFFICIENT}, b"")
        error = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((error.code, error.data["reason"]), (errors.AUTHORIZATION_FAILED, "step-up-limit"))
        self.stop(backend)

    def test_otherForbiddenIsAnHttpError(self) -> None:
        """A 403 without insufficient_scope is the backend's HTTP error, as before; the broker is not told."""
        backend = self.up()
        d, call = self.alice_calls(backend)
        call.respond(403, {"www-authenticate": 'Bearer error="invalid_token"'}, b"forbidden here")
        error = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((error.code, error.data["status"]), (errors.BACKEND_HTTP_ERROR, 403))
        self.assertIn("forbidden here", error.message)
        self.assertEqual(self.tokens.step_ups, [])
        d = backend.call_as("jwt:alice", "tools/call", {"name": "write_note", "arguments": {"text": "hi"}})
        self.pending("tools/call").respond(403, {}, b"no challenge")
        self.assertEqual(self.failureResultOf(d, JsonRpcError).value.code, errors.BACKEND_HTTP_ERROR)
        self.assertEqual(self.tokens.step_ups, [])
        self.stop(backend)

    def make_machine(self) -> HttpBackend:
        backend = self.make(auth=ClientCredentialsAuth(id="gw", secret="s", scopes=("read",)))
        backend.startService()
        self.bring_up(backend)
        return backend

    def test_clientCredentialsStepUpResends(self) -> None:
        """A machine token with more scopes: the same request (same id) goes again with it, once."""
        backend = self.make_machine()
        self.tokens.stepped["catalog-token"] = "wider-token"
        d = backend.call("tools/call", {"name": "pay", "arguments": {}})
        first = self.pending("tools/call")
        self.assertEqual(first.header("authorization"), "Bearer catalog-token")
        first.respond(403, {"www-authenticate": INSUFFICIENT}, b"")
        self.assertEqual([t for _, _, t in self.tokens.step_ups], ["pay"])
        again = self.pending("tools/call")
        self.assertEqual(again.header("authorization"), "Bearer wider-token")
        self.assertEqual(again.rpc_id, first.rpc_id)
        self.answer(again, {"content": [{"type": "text", "text": "paid"}]})
        self.assertEqual(self.successResultOf(d)["content"][0]["text"], "paid")
        self.stop(backend)

    def test_clientCredentialsSecondForbiddenFails(self) -> None:
        """A 403 to the wider token too: the broker's answer fails the call; never a third request."""
        backend = self.make_machine()
        self.tokens.stepped["catalog-token"] = "wider-token"
        self.tokens.refusals.append(AuthorizationFailed("step-up-limit", "still refuses", scopes=["read", "write"]))
        d = backend.call("tools/call", {"name": "pay", "arguments": {}})
        self.pending("tools/call").respond(403, {"www-authenticate": INSUFFICIENT}, b"")
        self.pending("tools/call").respond(403, {"www-authenticate": INSUFFICIENT}, b"")
        error = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((error.code, error.data["reason"]), (errors.AUTHORIZATION_FAILED, "step-up-limit"))
        self.assertEqual(len(self.sent("tools/call")), 2)
        self.stop(backend)

    def test_twoReplacementsInARowFail(self) -> None:
        """A broker that hands out a new token after the resend too: the call fails rather than loop."""
        backend = self.make_machine()
        self.tokens.stepped["catalog-token"] = "wider-token"
        self.tokens.stepped["wider-token"] = "widest-token"
        d = backend.call("tools/call", {"name": "pay", "arguments": {}})
        self.pending("tools/call").respond(403, {"www-authenticate": INSUFFICIENT}, b"")
        self.pending("tools/call").respond(403, {"www-authenticate": INSUFFICIENT}, b"")
        error = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((error.code, error.data["reason"]), (errors.AUTHORIZATION_FAILED, "step-up-limit"))
        self.assertEqual(len(self.sent("tools/call")), 2)
        self.stop(backend)

    def test_statelessEraStepUp(self) -> None:
        """A 2026-07-28 server's 403 insufficient_scope is a step-up too (not its generic error status):
        the request goes again with the wider token and its own headers."""
        backend = self.make(protocol="auto", auth=ClientCredentialsAuth(id="gw", secret="s", scopes=("read",)))
        backend.startService()
        self.answer(self.pending("server/discover"), DISCOVERED)
        self.answer(self.pending("tools/list"), {"tools": [PLAIN]})
        self.answer(self.pending("prompts/list"), {"prompts": []})
        self.answer(self.pending("resources/list"), {"resources": []})
        self.answer(self.pending("resources/templates/list"), {"resourceTemplates": []})
        self.assertEqual(backend.state, State.UP)
        self.tokens.stepped["catalog-token"] = "wider-token"
        d = backend.call("tools/call", envelope.stamp({"name": "get_time", "arguments": {}}, MODERN, {}, None))
        self.pending("tools/call").respond(403, {"www-authenticate": INSUFFICIENT}, b"")
        again = self.pending("tools/call")
        self.assertEqual((again.header("authorization"), again.header("mcp-name")), ("Bearer wider-token", "get_time"))
        self.answer(again, {"content": []})
        self.successResultOf(d)
        self.assertEqual([t for _, _, t in self.tokens.step_ups], ["get_time"])
        self.stop(backend)

    def test_aProbeRefusedForWantOfATokenIsNoVerdict(self) -> None:
        """
        protocol auto, nobody authorized yet: the server/discover probe's 401
        says nothing of the server's era, so no initialize is tried (whose
        refusal would hide the reason); the backend is down, naming the login.
        """
        del self.tokens.tokens[None]
        backend = self.make(protocol="auto")
        backend.startService()
        probe = self.pending("server/discover")
        probe.respond(401, {"www-authenticate": CHALLENGE}, b"unauthorized")
        self.assertEqual(self.sent("initialize"), [])
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("twisted-mcp login remote", backend.last_error or "")
        self.stop(backend)
