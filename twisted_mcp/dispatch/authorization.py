"""
A call that needs the principal's authorization toward an C{auth: oauth}
backend (C{docs/design/oauth.md} §5): what the client sees when the backend
failed it with -31040.

With a connect route (C{oauth.publicUrl}, and a browser check this step
allows: §4.4, L{consent_for}) and a C{tools/call}, C{prompts/get} or
C{resources/read}:

  - a handshake-era client whose C{initialize} declared
    C{elicitation.url} is sent C{elicitation/create} (URL mode, the connect
    page's URL) on the call itself; C{accept} makes the call wait (up to
    C{oauth.consentWait}) for the authorization, then
    C{notifications/elicitation/complete}, then the call is sent again and
    answered with its result; C{decline}/C{cancel}: -31040 C{declined}; the
    wait ends first: -31040 C{consent-pending};
  - a stateless-era (2026-07-28) client whose request declares
    C{elicitation.url} is answered an C{InputRequiredResult} asking
    C{authorize} (the same elicitation) with a C{requestState} sealed as
    kind C{auth}; its retry that accepted waits the same way (or goes at
    once when the authorization completed meanwhile) and is forwarded;
  - any other client gets the -31040 as it came (its message names
    C{twisted-mcp login}).

Neither the connect URL's C{<id>} nor anything the client sees carries a
token, a code or a C{state}: the authorization URL stays in the gateway
(L{twisted_mcp.backends.oauth.connect}).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable

from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.held_calls import HELD_METHODS, caller_digest
from twisted_mcp.dispatch.instances import principal_name
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.request_state import AUTH, MAX_TOKEN_CHARS, Claims, StateRefused, request_digest
from twisted_mcp.wire.jsonrpc import JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.backends.oauth.broker import OAuthBroker
    from twisted_mcp.config.models import Config
    from twisted_mcp.dispatch.session import InFlight

log = Logger()

#: The -31040 reasons a person can fix by consenting in a browser.
ASKABLE = frozenset({"authorization-required", "reauthorization-required", "token-rejected", "insufficient-scope", "expired"})
#: The key of the one input request an C{auth} InputRequiredResult asks.
INPUT_KEY = "authorize"
CONNECT_PATH = "/oauth/connect/"


class Consent:
    """
    The HTTP front's connect route toward the broker: connect links, the
    calls waiting for a consent, and the URLs a browser is sent to.

    @param broker: begins authorizations and reports them done.
    @param clock: every time and timer.
    @param public_url: C{oauth.publicUrl}.
    @param consent_wait: C{oauth.consentWait}, seconds.
    @param connect: whether the connect page (and elicitation) is offered.
    """

    def __init__(self, broker: OAuthBroker, clock: IReactorTime, public_url: str, consent_wait: float, connect: bool) -> None:
        # The OAuth modules load only with a broker (some backend has auth:).
        from twisted_mcp.backends.oauth.connect import ConnectLinks
        from twisted_mcp.backends.oauth.waiters import Waiters

        self.broker = broker
        self.clock = clock
        self.public_url = public_url.rstrip("/")
        self.consent_wait = consent_wait
        #: Seconds a started authorization waits for its callback (oauth.authorizationTimeout).
        self.authorization_timeout = broker.settings.authorizationTimeout
        self.connect = connect
        self.links = ConnectLinks(clock)
        self.waiters = Waiters(clock)
        broker.on_authorized(self.waiters.authorized)
        broker.on_failed(self.waiters.failed)

    def __repr__(self) -> str:
        return f"<Consent at {self.public_url}, connect {'on' if self.connect else 'off'}>"

    @property
    def callback_url(self) -> str:
        """Where the authorization server sends the browser back."""
        from twisted_mcp.backends.oauth.registration import CALLBACK_PATH

        return self.public_url + CALLBACK_PATH

    def start(self, principal: str, backend: str, scopes: tuple[str, ...] = ()) -> Deferred[str]:
        """Begin an authorization of C{principal} for C{backend}: the connect URL leading to it."""
        return Deferred.fromCoroutine(self._start(principal, backend, scopes))

    async def _start(self, principal: str, backend: str, scopes: tuple[str, ...]) -> str:
        from twisted_mcp.backends.oauth.problems import OAuthProblem

        link = self.links.unopened(principal, backend, scopes, self.consent_wait)
        if link is None:
            try:
                authorization = await self.broker.begin(principal, backend, self.callback_url, scopes)
            except OAuthProblem as problem:
                raise problem.to_error(backend) from None
            link = self.links.add(principal, backend, authorization.url, authorization.expires_at, scopes)
        return self.public_url + CONNECT_PATH + link


def consent_for(config: Config, broker: OAuthBroker | None, clock: IReactorTime) -> Consent | None:
    """
    The connect route C{config} allows: none without a broker or
    C{oauth.publicUrl}; its connect page (and elicitation) only with no
    identity configured, or with C{browserCheck: none} written explicitly
    (C{oidc} is not built yet).
    """
    oauth = config.oauth
    if broker is None or oauth is None or oauth.publicUrl is None:
        return None
    return Consent(broker, clock, oauth.publicUrl, oauth.consentWait, connect_allowed(config))


def connect_allowed(config: Config) -> bool:
    """
    Whether C{config} allows the connect page (and elicitation): with no
    identity configured (nobody to phish), or with C{browserCheck: none}
    written explicitly.  Asked again at every reload: identities added
    later turn it off.
    """
    oauth = config.oauth
    if oauth is None or oauth.publicUrl is None:
        return False
    return oauth.browserCheck != "oidc" and (config.identity is None or oauth.browserCheck == "none")


def announce(consent: Consent | None, config: Config) -> None:
    """Say at start what the connect route allows (a warning for C{browserCheck: none} with identities)."""
    if consent is None or config.oauth is None:
        return
    check = config.oauth.browserCheck
    if consent.connect and config.identity is not None:
        log.warn(
            "oauth.browserCheck is none: a user who forwards a consent link can bind someone else's account to their principal"
        )
    elif not consent.connect:
        why = (
            "oauth.browserCheck oidc is not available yet"
            if check == "oidc"
            else "identities are configured and oauth.browserCheck is not set"
        )
        log.info("no /oauth/connect page and no elicitation of consent ({why}): principals run `twisted-mcp login`", why=why)


@frozen
class AuthRetry:
    """A stateless-era retry of a call that asked for authorization: its checked token and the client's answer."""

    claims: Claims
    accepted: bool


def auth_retry(claims: Claims, params: dict[str, Any]) -> AuthRetry:
    """The retry C{params} carried C{claims} (kind C{auth}): whether C{inputResponses.authorize} accepted."""
    responses = params.get("inputResponses")
    answer = responses.get(INPUT_KEY) if type(responses) is dict else None
    action = answer.get("action") if type(answer) is dict else None
    return AuthRetry(claims, action == "accept")


def consented(request: InFlight, target: Backend, principal: str, send: Callable[[], Deferred[Any]]) -> Deferred[Any]:
    """
    C{send()} (C{request} to C{target}, an C{auth} backend, as
    C{principal}), with consent asked inside the call when it fails for
    want of an authorization and the client can be asked (module docstring).
    """
    consent = request.session.gateway.consent
    passed = request.passed
    if isinstance(passed, AuthRetry):
        return Deferred.fromCoroutine(_resumed(consent, request, target, principal, passed, send))
    if consent is None or not consent.connect or request.method not in HELD_METHODS:
        return send()
    return send().addErrback(_required, consent, request, target, principal, send)


def _askable(e: BaseException) -> bool:
    """The gateway's own -31040 (a backend's error of the same code passes through untouched: never its to start a consent)."""
    return (
        isinstance(e, errors.GatewayError)
        and e.code == errors.AUTHORIZATION_REQUIRED
        and type(e.data) is dict
        and e.data.get("reason") in ASKABLE
    )


def _declares_url(capabilities: Any) -> bool:
    elicitation = capabilities.get("elicitation") if type(capabilities) is dict else None
    return type(elicitation) is dict and type(elicitation.get("url")) is dict


def _required(
    failure: Any, consent: Consent, request: InFlight, target: Backend, principal: str, send: Callable[[], Deferred[Any]]
) -> Any:
    if not _askable(failure.value):
        return failure
    scopes = failure.value.data.get("scopes")
    scopes = tuple(s for s in scopes if type(s) is str) if type(scopes) is list else ()
    if request.envelope is None:
        if not _declares_url(request.session.caller.capabilities):
            return failure
        return Deferred.fromCoroutine(_elicited(consent, request, target, principal, scopes, send))
    if not _declares_url(request.envelope.capabilities):
        return failure
    return Deferred.fromCoroutine(_input_required(consent, request, target, principal, scopes))


def _message(request: InFlight, target: Backend) -> str:
    session = request.session
    who = principal_name(session.gateway, session.peer) or "you"
    return f"Authorize twisted-mcp to use {target.name} as {who}"


async def _elicited(
    consent: Consent,
    request: InFlight,
    target: Backend,
    principal: str,
    scopes: tuple[str, ...],
    send: Callable[[], Deferred[Any]],
) -> Any:
    """A handshake-era client asked with C{elicitation/create} on the call; the call sent again once authorized."""
    session = request.session
    url = await consent.start(principal, target.name, scopes)
    # Waiting starts now, so that an authorization finished before the
    # client's answer is not missed; consentWait counts from "accept".
    waiter = consent.waiters.wait(principal, target.name, session.gateway.reverse.timeout + consent.consent_wait)
    elicitation_id = str(uuid.uuid4())
    params = {"mode": "url", "elicitationId": elicitation_id, "url": url, "message": _message(request, target)}
    try:
        asked = session.client_requests.request(
            target, "elicitation/create", params, request.rid, session.gateway.reverse.timeout
        )
        answer = await asked
        if answer.get("action") != "accept":
            raise declined(target)
        log.info("client {client}: waiting for the authorization of backend {backend}", client=session.label, backend=target.name)
        if not await _within(waiter, consent.consent_wait, consent.clock):
            _complete_later(consent, request, principal, target, elicitation_id)
            raise consent_pending(target, consent.consent_wait)
    finally:
        _forget(waiter)
    session.notify("notifications/elicitation/complete", {"elicitationId": elicitation_id}, request.rid)
    return await send()


def _complete_later(consent: Consent, request: InFlight, principal: str, target: Backend, elicitation_id: str) -> None:
    """
    The call stopped waiting: should the authorization still complete (within
    C{oauth.authorizationTimeout}) while the session lives, its client is
    sent C{notifications/elicitation/complete} all the same (optional in
    2025-11-25's URL-mode sequence).
    """
    session = request.session
    later = consent.waiters.wait(principal, target.name, consent.authorization_timeout)

    def done(authorized: bool) -> None:
        if authorized and session in session.gateway.sessions:
            session.notify("notifications/elicitation/complete", {"elicitationId": elicitation_id})

    later.addCallbacks(done, lambda f: f.trap(JsonRpcError) and None)  # the flow failed: nothing to tell
    later.addErrback(lambda f: log.failure("telling a client its authorization completed failed", f))


async def _input_required(consent: Consent, request: InFlight, target: Backend, principal: str, scopes: tuple[str, ...]) -> Any:
    """A stateless-era client's call answered with an InputRequiredResult asking for the authorization."""
    session = request.session
    url = await consent.start(principal, target.name, scopes)
    seal = session.gateway.reverse.held.seal
    params = request.holdable if request.holdable is not None else {}
    link = url.rsplit("/", 1)[-1]
    claims = Claims(AUTH, caller_digest(session), request.method, request_digest(params), target.name, seal.expiry(), link)
    token = seal.seal(claims)
    assert len(token) <= MAX_TOKEN_CHARS
    question = {"method": "elicitation/create", "params": {"mode": "url", "url": url, "message": _message(request, target)}}
    return {"resultType": "input_required", "inputRequests": {INPUT_KEY: question}, "requestState": token}


async def _resumed(
    consent: Consent | None,
    request: InFlight,
    target: Backend,
    principal: str,
    passed: AuthRetry,
    send: Callable[[], Deferred[Any]],
) -> Any:
    """A stateless-era retry after an C{auth} InputRequiredResult: forwarded once authorized (at once if it is already)."""
    if passed.claims.backend != target.name:
        raise StateRefused("requestState names another server")
    if not passed.accepted:
        raise declined(target)
    waiter = consent.waiters.wait(principal, target.name, consent.consent_wait) if consent is not None else None
    try:
        try:
            return await send()
        except JsonRpcError as e:
            if waiter is None or not _askable(e):
                raise
        if not await waiter:
            raise consent_pending(target, consent.consent_wait if consent is not None else 0)
    finally:
        if waiter is not None:
            _forget(waiter)
    return await send()


def _within(waiter: Deferred[bool], seconds: float, clock: IReactorTime) -> Deferred[bool]:
    """What C{waiter} says within C{seconds} from now, else False (the waiter itself is left to its owner)."""
    if waiter.called:
        return waiter
    timers: list[Any] = []

    def cancelled(_: Deferred[bool]) -> None:
        if timers and timers[0].active():
            timers[0].cancel()

    outcome: Deferred[bool] = Deferred(cancelled)

    def too_late() -> None:
        if not outcome.called:
            outcome.callback(False)

    timer = clock.callLater(seconds, too_late)
    timers.append(timer)

    def settled(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        if not outcome.called:
            if isinstance(result, Failure):
                outcome.errback(result)
            else:
                outcome.callback(result)
        return None  # handed on to the outcome (or too late to matter)

    waiter.addBoth(settled)
    return outcome


def _forget(waiter: Deferred[bool]) -> None:
    """Stop waiting (a no-op once the waiter fired)."""
    if not waiter.called:
        waiter.addErrback(lambda f: f.trap(CancelledError) and None)
        waiter.cancel()


def declined(target: Backend) -> JsonRpcError:
    """-31040 C{declined}: the person declined (or cancelled) the authorization."""
    from twisted_mcp.backends.oauth.broker import login_command
    from twisted_mcp.backends.oauth.problems import AuthorizationRequired

    command = login_command(target.name)
    message = (
        f"backend '{target.name}' was not authorized: the request to authorize it was declined (run `{command}` to authorize it)"
    )
    return AuthorizationRequired("declined", message, login=command).to_error(target.name)


def consent_pending(target: Backend, waited: float) -> JsonRpcError:
    """-31040 C{consent-pending}: the authorization did not complete within C{oauth.consentWait}."""
    from twisted_mcp.backends.oauth.broker import login_command
    from twisted_mcp.backends.oauth.problems import AuthorizationRequired

    message = (
        f"backend '{target.name}' is still waiting for your authorization ({waited:g} s passed): "
        "finish the authorization in your browser, then call again"
    )
    return AuthorizationRequired("consent-pending", message, login=login_command(target.name)).to_error(target.name)


__all__ = ["ASKABLE", "AuthRetry", "Consent", "announce", "auth_retry", "consent_for", "consented", "declined", "consent_pending"]
