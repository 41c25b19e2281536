"""
Consent asked inside the call (L{twisted_mcp.dispatch.authorization}, design
§5): connect links, the waiters, and what a client of each era sees when an
C{auth: oauth} backend fails its call with -31040; through the session, with
a fake per-principal backend, a fake broker and a L{Clock}.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.connect import ConnectLinks
from twisted_mcp.backends.oauth.flow import Authorization
from twisted_mcp.backends.oauth.problems import AuthorizationFailed, AuthorizationRequired, AuthorizationUnavailable
from twisted_mcp.backends.oauth.waiters import Waiters
from twisted_mcp.dispatch.authorization import Consent
from twisted_mcp.mcp.request_state import AUTH
from twisted_mcp.wire.jsonrpc import JsonRpcError

from .fakes import FakeBackend
from .oauth_fakes import MARK, settings
from .test_eras import envelope
from .test_gateway import SessionTestCase

PUBLIC = "https://gw.example"
URL_CAPS = {"elicitation": {"url": {}}}


class ConnectLinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.links = ConnectLinks(self.clock, limit=3)

    def test_aLinkIs128RandomBitsAndLeadsToItsUrlOnce(self) -> None:
        first = self.links.add("local", "alpha", f"https://as.example/authorize?state={MARK}", 600)
        second = self.links.add("local", "alpha", "https://as.example/authorize?state=other", 600)
        self.assertNotEqual(first, second)
        self.assertEqual(len(first), 22)  # 16 bytes, URL-safe base64
        link = self.links.take(first)
        assert link is not None
        self.assertEqual(
            (link.principal, link.backend, link.url), ("local", "alpha", f"https://as.example/authorize?state={MARK}")
        )
        self.assertIsNone(self.links.take(first))  # single use
        self.assertIsNone(self.links.take("unknown"))
        self.assertNotIn(MARK, repr(link))
        self.assertNotIn(MARK, repr(self.links))

    def test_oneUnopenedLinkServesEveryCallWaitingForTheSameConsent(self) -> None:
        link = self.links.add("local", "alpha", "https://as.example/a", 600, ("read",))
        self.assertEqual(self.links.unopened("local", "alpha", ("read",), 120), link)
        self.assertIsNone(self.links.unopened("local", "alpha", ("read", "write"), 120))  # a step-up: its own
        self.assertIsNone(self.links.unopened("jwt:bob", "alpha", ("read",), 120))
        self.clock.advance(500)
        self.assertIsNone(self.links.unopened("local", "alpha", ("read",), 120))  # too close to its end
        self.assertIsNotNone(self.links.take(link))
        self.assertIsNone(self.links.unopened("local", "alpha", ("read",), 0))  # opened: not offered again

    def test_onePrincipalsLinksNeverPushOutAnothers(self) -> None:
        links = ConnectLinks(self.clock)
        bobs = links.add("jwt:bob", "alpha", "https://as.example/bob", 600)
        alices = [links.add("jwt:alice", "alpha", f"https://as.example/{i}", 600) for i in range(20)]
        self.assertIsNotNone(links.take(bobs))
        self.assertEqual(len(links), 8)
        self.assertIsNone(links.take(alices[0]))
        self.assertIsNotNone(links.take(alices[-1]))

    def test_anExpiredLinkLeadsNowhere(self) -> None:
        link = self.links.add("local", "alpha", "https://as.example/a", 10)
        self.clock.advance(11)
        self.assertIsNone(self.links.take(link))

    def test_theOldestIsDroppedBeyondTheLimitAndExpiredOnesFirst(self) -> None:
        ids = [self.links.add("local", "alpha", f"https://as.example/{i}", 100 + i) for i in range(4)]
        self.assertEqual(len(self.links), 3)
        self.assertIsNone(self.links.take(ids[0]))
        self.clock.advance(101.5)  # ids[1] expired: dropped when the next is added, not a live one
        self.links.add("local", "alpha", "https://as.example/4", 500)
        self.assertIsNotNone(self.links.take(ids[2]))
        self.assertIsNotNone(self.links.take(ids[3]))


class WaiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.waiters = Waiters(self.clock)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.waiters), 0)

    def outcome(self, d: Deferred[bool]) -> list[Any]:
        got: list[Any] = []
        d.addBoth(got.append)
        return got

    def test_eachWaiterOfThePrincipalAndBackendFiresTrue(self) -> None:
        a = self.outcome(self.waiters.wait("local", "alpha", 30))
        b = self.outcome(self.waiters.wait("local", "alpha", 30))
        other = self.waiters.wait("jwt:bob", "alpha", 30)
        beta = self.waiters.wait("local", "beta", 30)
        self.waiters.authorized("alpha", "local")
        self.assertEqual((a, b), ([True], [True]))
        self.assertEqual(len(self.waiters), 2)
        self.assertFalse(other.called or beta.called)
        for d in (other, beta):
            d.addErrback(lambda _: None)
            d.cancel()

    def test_aWaiterFiresFalseOnceItsBoundPasses(self) -> None:
        got = self.outcome(self.waiters.wait("local", "alpha", 30))
        self.clock.advance(29)
        self.assertEqual(got, [])
        self.clock.advance(1)
        self.assertEqual(got, [False])
        self.waiters.authorized("alpha", "local")  # too late: nothing waits
        self.assertEqual(got, [False])

    def test_cancellingAWaiterForgetsItAndItsTimer(self) -> None:
        d = self.waiters.wait("local", "alpha", 30)
        d.addErrback(lambda _: None)
        d.cancel()


class FakeBroker:
    """What L{Consent} asks of the broker: begin (an authorization URL carrying a secret), on_authorized."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.settings = settings(publicUrl=PUBLIC)
        self.begun: list[tuple[str, str, str, tuple[str, ...]]] = []
        self.callbacks: list[Callable[[str, str], None]] = []
        self.failures: list[Callable[[str, str, Any], None]] = []
        self.problem: Exception | None = None

    def on_authorized(self, callback: Callable[[str, str], None]) -> None:
        self.callbacks.append(callback)

    def on_failed(self, callback: Callable[[str, str, Any], None]) -> None:
        self.failures.append(callback)

    def failed(self, backend: str, principal: str, problem: Any) -> None:
        for callback in self.failures:
            callback(backend, principal, problem)

    def begin(self, principal: str, backend: str, redirect_uri: str, scopes: Any = ()) -> Deferred[Authorization]:
        if self.problem is not None:
            from twisted.internet.defer import fail

            return fail(self.problem)
        self.begun.append((principal, backend, redirect_uri, tuple(scopes)))
        url = f"https://as.example/authorize?state={MARK}{len(self.begun)}&redirect_uri={redirect_uri}"
        return succeed(Authorization(url=url, state_digest="digest", expires_at=self.clock.seconds() + 600, scopes=()))

    def authorized(self, backend: str, principal: str) -> None:
        for callback in self.callbacks:
            callback(backend, principal)


class PrincipalBackend(FakeBackend):
    """An C{auth: oauth} backend: its calls run as a principal."""

    per_principal = True

    def __init__(self, name: str, tools: list[Any]) -> None:
        super().__init__(name, tools)
        self.principals: list[str] = []

    def call_as(self, principal: str, method: str, params: Any, on_progress: Any = None, context: Any = None) -> Deferred[Any]:
        self.principals.append(principal)
        return self.call(method, params, on_progress, context=context)


def required(reason: str = "authorization-required", **data: Any) -> Exception:
    return AuthorizationRequired(
        reason, "backend 'alpha' needs your authorization: run `twisted-mcp login alpha`", login="twisted-mcp login alpha", **data
    ).to_error("alpha")


class ConsentCase(SessionTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.alpha = PrincipalBackend("alpha", ["add"])
        self.alpha._first_discovery_done()
        from twisted_mcp.dispatch.gateway import Gateway
        from twisted_mcp.dispatch.session import ClientSession
        from twisted_mcp.frontends.stream import line_caller

        self.gateway = Gateway([self.alpha], "__", self.clock, 5.0)
        self.gateway.start()
        self.session = ClientSession(self.gateway, line_caller(self.out.append, "test"))
        self.broker = FakeBroker(self.clock)
        self.consent = Consent(self.broker, self.clock, PUBLIC, 30.0, connect=True)  # type: ignore[arg-type]
        self.gateway.consent = self.consent
        self.logged = capturedLogs()
        self.events = self.logged.__enter__()

    def tearDown(self) -> None:
        self.logged.__exit__(None, None, None)
        text = "\n".join(formatEvent(e) for e in self.events)
        self.assertNotIn(MARK, text)
        self.assertEqual(len(self.consent.waiters), 0)
        super().tearDown()

    def take(self) -> list[Any]:
        messages = super().take()
        self.assertNotIn(MARK, json.dumps(messages))  # the authorization URL never reaches a client
        return messages

    def legacy(self, caps: Any = URL_CAPS) -> None:
        self.request(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": caps, "clientInfo": {"name": "c"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.take()

    def call(self, id: Any, arguments: Any = None, **more: Any) -> None:
        self.request(id, "tools/call", {"name": "alpha__add", "arguments": arguments or {"a": 1}, **more})

    def modern_call(self, id: Any, caps: Any = URL_CAPS, arguments: Any = None, **more: Any) -> None:
        params = {"name": "alpha__add", "arguments": arguments or {"a": 1}, **more}
        params["_meta"] = envelope(**{"io.modelcontextprotocol/clientCapabilities": caps})
        self.request(id, "tools/call", params)


class HandshakeEraTests(ConsentCase):
    def elicited(self) -> dict[str, Any]:
        self.legacy()
        self.call(1)
        self.alpha.calls[0].deferred.errback(required())
        (asked,) = self.take()
        self.assertEqual(asked["method"], "elicitation/create")
        return asked

    def test_theClientIsAskedThenTheCallGoesOnOnceAuthorized(self) -> None:
        asked = self.elicited()
        self.assertEqual(self.broker.begun, [("local", "alpha", PUBLIC + "/oauth/callback", ())])
        params = asked["params"]
        self.assertEqual(params["mode"], "url")
        self.assertTrue(params["url"].startswith(PUBLIC + "/oauth/connect/"))
        self.assertEqual(params["message"], "Authorize twisted-mcp to use alpha as local")
        self.assertTrue(params["elicitationId"])
        link = self.consent.links.take(params["url"].rsplit("/", 1)[1])
        assert link is not None
        self.assertIn(MARK, link.url)  # the connect page leads to the authorization URL
        self.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
        self.assertEqual((self.take(), len(self.alpha.calls)), ([], 1))  # waiting for the browser
        self.broker.authorized("alpha", "local")
        (complete,) = self.take()
        self.assertEqual(
            complete,
            {
                "jsonrpc": "2.0",
                "method": "notifications/elicitation/complete",
                "params": {"elicitationId": params["elicitationId"]},
            },
        )
        self.assertEqual(self.alpha.principals, ["local", "local"])
        self.alpha.calls[1].deferred.callback({"content": [{"type": "text", "text": "2"}]})
        (answer,) = self.take()
        self.assertEqual(answer["id"], 1)
        self.assertEqual(answer["result"]["content"][0]["text"], "2")

    def test_callsWaitingForTheSameConsentShareOneAuthorization(self) -> None:
        """A burst of calls begins one authorization, and every question carries its one link."""
        first = self.elicited()
        self.call(2)
        self.alpha.calls[-1].deferred.errback(required())
        (second,) = self.take()
        self.assertEqual(len(self.broker.begun), 1)
        self.assertEqual(first["params"]["url"], second["params"]["url"])
        self.assertNotEqual(first["params"]["elicitationId"], second["params"]["elicitationId"])
        for asked in (first, second):
            self.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "decline"}})
        self.assertEqual(len(self.take()), 2)

    def test_anAuthorizationBeforeTheAnswerIsNotMissed(self) -> None:
        asked = self.elicited()
        self.broker.authorized("alpha", "local")  # the browser was quicker than the client's answer
        self.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
        self.assertEqual(self.take()[0]["method"], "notifications/elicitation/complete")
        self.assertEqual(len(self.alpha.calls), 2)
        self.alpha.calls[1].deferred.callback({"content": []})
        self.take()

    def test_consentWaitCountsFromTheAccept(self) -> None:
        """A person slower to accept than consentWait still gets consentWait to finish in the browser."""
        asked = self.elicited()
        self.clock.advance(self.consent.consent_wait + 5)  # the client's answer is slow
        self.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
        self.assertEqual(self.take(), [])  # still waiting: not consent-pending at once
        self.clock.advance(self.consent.consent_wait - 1)
        self.broker.authorized("alpha", "local")
        self.assertEqual(self.take()[0]["method"], "notifications/elicitation/complete")
        self.alpha.calls[1].deferred.callback({"content": []})
        self.take()

    def test_aConsentRefusedAtTheAuthorizationServerEndsTheWaitAtOnce(self) -> None:
        """The person clicked "deny" in the browser: the call says so now, not consentWait later."""
        asked = self.elicited()
        self.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
        self.assertEqual(self.take(), [])
        refused = AuthorizationFailed(
            "consent-refused", "backend 'alpha': the authorization server refused: access_denied", error="access_denied"
        )
        self.broker.failed("alpha", "local", refused)
        (answer,) = self.take()
        error = self.assertError(answer, 1, -31041)
        self.assertEqual((error["data"]["reason"], error["data"]["error"]), ("consent-refused", "access_denied"))
        self.assertEqual(len(self.alpha.calls), 1)  # not sent again
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_declineOrCancelIsDeclined(self) -> None:
        for rid, action in ((1, "decline"), (2, "cancel")):
            self.out.clear()
            self.gateway.consent = self.consent
            asked = self.elicited() if rid == 1 else self._again(rid)
            self.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": action}})
            (answer,) = self.take()
            error = self.assertError(answer, rid, -31040, "declined")
            self.assertEqual(error["data"]["reason"], "declined")
            self.assertEqual(error["data"]["login"], "twisted-mcp login alpha")

    def _again(self, rid: int) -> dict[str, Any]:
        self.call(rid)
        self.alpha.calls[-1].deferred.errback(required())
        (asked,) = self.take()
        return asked

    def test_aWaitThatEndsIsConsentPending(self) -> None:
        asked = self.elicited()
        self.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
        self.clock.advance(30)
        (answer,) = self.take()
        error = self.assertError(answer, 1, -31040, "finish the authorization in your browser, then call again")
        self.assertEqual(error["data"]["reason"], "consent-pending")
        self.assertEqual(len(self.alpha.calls), 1)
        # Completed later, while the session lives: the client is told all the same (the call is not sent again).
        self.broker.authorized("alpha", "local")
        (complete,) = self.take()
        self.assertEqual(complete["method"], "notifications/elicitation/complete")
        self.assertEqual(complete["params"], {"elicitationId": asked["params"]["elicitationId"]})
        self.assertEqual(len(self.alpha.calls), 1)

    def test_aConsentThatNeverCompletesIsForgottenWithItsAuthorization(self) -> None:
        asked = self.elicited()
        self.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
        self.clock.advance(30)
        self.take()
        self.assertEqual(len(self.consent.waiters), 1)
        self.clock.advance(600)  # oauth.authorizationTimeout
        self.broker.authorized("alpha", "local")
        self.assertEqual(self.take(), [])

    def test_cancellingTheCallStopsTheWait(self) -> None:
        asked = self.elicited()
        self.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
        self.assertEqual(len(self.consent.waiters), 0)
        self.broker.authorized("alpha", "local")
        self.assertEqual(len(self.alpha.calls), 1)

    def test_scopesOfAStepUpAreAskedFor(self) -> None:
        self.legacy()
        self.call(1)
        self.alpha.calls[0].deferred.errback(required("insufficient-scope", scopes=["write"]))
        (asked,) = self.take()
        self.assertEqual(self.broker.begun[0][3], ("write",))
        self.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "decline"}})
        self.take()

    def assertPassedAsIs(self, error: Exception, code: int, reason: str) -> None:
        self.call(1)
        self.alpha.calls[0].deferred.errback(error)
        (answer,) = self.take()
        self.assertEqual(self.assertError(answer, 1, code)["data"]["reason"], reason)
        self.assertEqual(self.broker.begun, [])

    def test_aClientWithoutUrlElicitationIsToldToLogIn(self) -> None:
        self.legacy({"elicitation": {"form": {}}})
        self.assertPassedAsIs(required(), -31040, "authorization-required")

    def test_withoutAConnectRouteTheErrorIsAsItCame(self) -> None:
        self.legacy()
        self.consent.connect = False
        self.assertPassedAsIs(required(), -31040, "authorization-required")

    def test_otherProblemsAreNotAskedAbout(self) -> None:
        self.legacy()
        self.assertPassedAsIs(required("consent-pending"), -31040, "consent-pending")
        self.out.clear()
        unavailable = AuthorizationUnavailable("as-unavailable", "backend 'alpha': its AS is down").to_error("alpha")
        self.call(2)
        self.alpha.calls[-1].deferred.errback(unavailable)
        self.assertError(self.take()[0], 2, -31042)

    def test_aBackendsOwnMinus31040IsNotTheGatewaysToAskAbout(self) -> None:
        """A server may answer any code, ours included: its error passes through, and no authorization is begun."""
        self.legacy()
        forged = JsonRpcError(-31040, "log in", {"reason": "insufficient-scope", "scopes": ["admin:org"]})
        self.call(1)
        self.alpha.calls[0].deferred.errback(forged)
        error = self.assertError(self.take()[0], 1, -31040)
        self.assertEqual(error["data"]["scopes"], ["admin:org"])
        self.assertEqual(self.broker.begun, [])

    def test_aBeginThatFailsIsTheCallsError(self) -> None:
        self.legacy()
        self.broker.problem = AuthorizationUnavailable("no-client-identity", "backend 'alpha': no client identity")
        self.call(1)
        self.alpha.calls[0].deferred.errback(required())
        error = self.assertError(self.take()[0], 1, -31042)
        self.assertEqual(error["data"]["reason"], "no-client-identity")


class StatelessEraTests(ConsentCase):
    def input_required(self, rid: Any = 1, **more: Any) -> dict[str, Any]:
        self.modern_call(rid, **more)
        self.alpha.calls[-1].deferred.errback(required())
        (answer,) = self.take()
        self.assertEqual(answer["id"], rid)
        result = answer["result"]
        self.assertEqual(result["resultType"], "input_required")
        return result

    def test_anInputRequiredResultAsksForTheAuthorization(self) -> None:
        result = self.input_required()
        (key,) = result["inputRequests"]
        self.assertEqual(key, "authorize")
        asked = result["inputRequests"]["authorize"]
        self.assertEqual(asked["method"], "elicitation/create")
        self.assertEqual(set(asked["params"]), {"mode", "url", "message"})
        self.assertTrue(asked["params"]["url"].startswith(PUBLIC + "/oauth/connect/"))
        claims = self.gateway.reverse.held.seal.open(result["requestState"])
        self.assertEqual((claims.kind, claims.method, claims.backend), (AUTH, "tools/call", "alpha"))

    def retry(self, rid: Any, token: str, action: str = "accept", arguments: Any = None) -> None:
        self.modern_call(rid, arguments=arguments, requestState=token, inputResponses={"authorize": {"action": action}})

    def test_theAcceptedRetryWaitsThenIsForwardedWithoutTheGatewaysState(self) -> None:
        token = self.input_required()["requestState"]
        self.retry(2, token)
        self.assertEqual(len(self.alpha.calls), 2)  # tried first: the authorization may have completed
        sent = self.alpha.calls[1].params
        self.assertNotIn("requestState", sent)
        self.assertNotIn("inputResponses", sent)
        self.alpha.calls[1].deferred.errback(required())
        self.assertEqual(self.take(), [])
        self.broker.authorized("alpha", "local")
        self.alpha.calls[2].deferred.callback({"content": [{"type": "text", "text": "2"}]})
        (answer,) = self.take()
        self.assertEqual((answer["id"], answer["result"]["content"][0]["text"]), (2, "2"))

    def test_aRetryAfterTheAuthorizationCompletedGoesAtOnce(self) -> None:
        token = self.input_required()["requestState"]
        self.broker.authorized("alpha", "local")
        self.retry(2, token)
        self.alpha.calls[1].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["result"]["resultType"], "complete")
        self.assertEqual(len(self.alpha.calls), 2)

    def test_aRetryThatDeclinedIsDeclined(self) -> None:
        token = self.input_required()["requestState"]
        self.retry(2, token, action="decline")
        self.assertEqual(self.assertError(self.take()[0], 2, -31040)["data"]["reason"], "declined")
        self.assertEqual(len(self.alpha.calls), 1)

    def test_aWaitThatEndsIsConsentPending(self) -> None:
        token = self.input_required()["requestState"]
        self.retry(2, token)
        self.alpha.calls[1].deferred.errback(required())
        self.clock.advance(30)
        self.assertEqual(self.assertError(self.take()[0], 2, -31040)["data"]["reason"], "consent-pending")

    def test_theTokenIsBoundToItsRequest(self) -> None:
        token = self.input_required()["requestState"]
        self.retry(2, token, arguments={"a": 2})
        self.assertError(self.take()[0], 2, -32602, "another request")
        self.assertEqual(len(self.alpha.calls), 1)

    def test_aClientWithoutUrlElicitationIsToldToLogIn(self) -> None:
        self.modern_call(1, caps={"elicitation": {"form": {}}})
        self.alpha.calls[0].deferred.errback(required())
        self.assertEqual(self.assertError(self.take()[0], 1, -31040)["data"]["reason"], "authorization-required")
        self.assertEqual(self.broker.begun, [])
