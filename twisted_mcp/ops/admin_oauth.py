"""
The admin endpoint's OAuth actions (C{docs/design/oauth.md} §10.2), for
C{twisted-mcp login}, C{logout} and C{tokens}:

    POST /oauth/begin     {"backend", "principal"?, "redirectUri", "scopes"?}
                          -> {"url", "expiresAt", "scopes", "principal"}
    POST /oauth/complete  {"params": {query of the callback}, "redirectUri"}
                          -> {"principal", "backend", "issuer", "scopes", "expiresAt", "refreshable"}
    POST /oauth/logout    {"backend", "principal"?, "revoke"?} -> what was done
    POST /oauth/tokens    {"backend"?, "principal"?} -> {"tokens": [rows without secrets]}

They are actions (they need C{gateway.adminToken} on TCP, as C{kill}
does): beginning an authorization for a principal binds that principal's
account at the server to whoever completes it.  Only loopback redirect URIs
are accepted here: the CLI's own listener, on the operator's machine.

Answers never carry a token, a refresh token, a code or a client secret;
the authorization URL (single use, bound to a verifier that never leaves
the gateway) is returned to the CLI, which shows it to its user.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from twisted_mcp.backends.oauth.problems import AuthorizationFailed, AuthorizationRequired, OAuthProblem

log = Logger()

#: Principal sources a C{--as SOURCE:NAME} may name.
_SOURCES = ("local", "config", "jwt", "peer", "certificate", "listener")


class PrincipalUnknown(Exception):
    """C{--as} names no principal the identity config can produce."""


def resolve_principal(identity: Any, given: Any) -> str:
    """
    The stable principal key (C{local}, C{<source>:<name>}) for what an
    operator wrote after C{--as}: a bare name is matched against the
    identity config (a C{config} principal, a listener's, a JWT subject when
    JWTs are accepted); C{SOURCE:NAME} is taken as written.
    """
    if given is None or given == "":
        if identity is None:
            return "local"
        raise PrincipalUnknown(
            "identities are configured: say whose authorization this is (--as NAME, or SOURCE:NAME such as jwt:alice)"
        )
    if type(given) is not str:
        raise PrincipalUnknown("principal must be a string")
    if given == "local":
        if identity is not None:
            raise PrincipalUnknown("identities are configured: the local principal makes no calls; name one of them")
        return "local"
    source, colon, name = given.partition(":")
    if colon:
        if source not in _SOURCES or not name:
            raise PrincipalUnknown(f"{given!r}: expected NAME or SOURCE:NAME, SOURCE one of {', '.join(_SOURCES[1:])}")
        return given
    if identity is None:
        raise PrincipalUnknown(f"no principal {given!r}: no identity is configured, so every call runs as 'local'")
    candidates = []
    principal = getattr(identity, "principal", None)
    if principal is not None and principal.name == given:
        candidates.append(f"config:{given}")
    for _, listener_principal in getattr(identity, "listeners", ()):
        if listener_principal.name == given:
            candidates.append(f"listener:{given}")
    if getattr(identity, "jwt", None) is not None:
        candidates.append(f"jwt:{given}")
    candidates = list(dict.fromkeys(candidates))
    if not candidates:
        raise PrincipalUnknown(f"no principal {given!r}: the identity section names none (write SOURCE:NAME, e.g. peer:{given})")
    if len(candidates) > 1:
        raise PrincipalUnknown(f"{given!r} is ambiguous: say one of {', '.join(candidates)}")
    return candidates[0]


def is_loopback_redirect(uri: Any) -> bool:
    """An http URI to 127.0.0.1 or [::1] with a port: the CLI's listener."""
    if type(uri) is not str:
        return False
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1") and port is not None and not parts.fragment


class OAuthActions:
    """
    The C{/oauth/*} actions; C{answer} writes a Deferred's JSON answer
    later (the admin endpoint's own helper).

    @param service: the gateway service (its C{oauth} broker, its config's identity).
    """

    def __init__(
        self, service: Any, json: Callable[[Any, int, Any], bytes], answer_later: Callable[[Any, Deferred[bytes]], None]
    ) -> None:
        self.service = service
        self._json = json
        self._answer_later = answer_later

    @property
    def broker(self) -> Any:
        return getattr(self.service, "oauth", None)

    def _oauth_backend(self, name: Any) -> str | None:
        """Why C{name} is not a backend with C{auth: oauth}, or None."""
        if type(name) is not str or not name:
            return "expected a backend name"
        for server in self.service.config.servers:
            if server.name == name:
                auth = getattr(server, "auth", None)
                if auth is None or type(auth).__name__ != "OAuthAuth":
                    return f"backend {name!r} does not use auth: oauth"
                return None
        return f"no backend {name!r}"

    def _principal(self, request: Any, body: dict[str, Any]) -> str | bytes:
        try:
            return resolve_principal(self.service.config.identity, body.get("principal"))
        except PrincipalUnknown as e:
            return self._json(request, 400, {"error": str(e), "reason": "principal"})

    def _later(self, request: Any, d: Deferred[Any], ok: Callable[[Any], Any]) -> Any:
        d.addCallback(lambda value: self._json(request, 200, ok(value)))
        d.addErrback(self._refused, request)
        self._answer_later(request, d)
        return NOT_DONE_YET

    def _refused(self, failure: Failure, request: Any) -> bytes:
        problem = failure.value
        if isinstance(problem, OAuthProblem):
            status = 409 if isinstance(problem, (AuthorizationFailed, AuthorizationRequired)) else 502
            return self._json(
                request,
                status,
                {"error": problem.message, "reason": problem.reason, "code": problem.code, **_public(problem.data)},
            )
        log.failure("admin endpoint: an OAuth action failed", failure)
        return self._json(request, 500, {"error": "the action failed; see the gateway's log", "reason": "internal"})

    def _no_broker(self, request: Any) -> bytes | None:
        if self.broker is None:
            return self._json(request, 404, {"error": "this gateway has no backend with auth: oauth", "reason": "no-oauth"})
        return None

    def _target(self, request: Any, body: dict[str, Any]) -> tuple[str, str] | bytes:
        """The (backend, principal) an action names, or the refusal's answer (no broker, not an OAuth backend, no such principal)."""
        refused = self._no_broker(request)
        if refused is not None:
            return refused
        backend = body.get("backend")
        why = self._oauth_backend(backend)
        if why is not None:
            return self._json(request, 400, {"error": why, "reason": "backend"})
        principal = self._principal(request, body)
        if isinstance(principal, bytes):
            return principal
        return str(backend), principal

    def begin(self, request: Any, body: dict[str, Any]) -> Any:
        target = self._target(request, body)
        if isinstance(target, bytes):
            return target
        backend, principal = target
        redirect = body.get("redirectUri")
        if not is_loopback_redirect(redirect):
            return self._json(
                request,
                400,
                {
                    "error": "redirectUri must be http://127.0.0.1:PORT/... or http://[::1]:PORT/... (the CLI's listener)",
                    "reason": "redirect",
                },
            )
        scopes = body.get("scopes", [])
        if type(scopes) is not list or not all(type(s) is str and s and " " not in s for s in scopes):
            return self._json(request, 400, {"error": "scopes must be a list of scope names", "reason": "scopes"})
        log.info("admin endpoint: authorization of backend {backend} begun for {principal}", backend=backend, principal=principal)
        d = maybeDeferred(self.broker.begin, principal, backend, redirect, scopes)
        return self._later(
            request,
            d,
            lambda a: {
                "url": a.url,
                "expiresAt": a.expires_at,
                "scopes": list(a.scopes),
                "principal": principal,
                "backend": backend,
            },
        )

    def complete(self, request: Any, body: dict[str, Any]) -> Any:
        refused = self._no_broker(request)
        if refused is not None:
            return refused
        params, redirect = body.get("params"), body.get("redirectUri")
        if type(params) is not dict or not all(type(k) is str and type(v) is str for k, v in params.items()):
            return self._json(
                request, 400, {"error": "params must be the callback's query as an object of strings", "reason": "params"}
            )
        if not is_loopback_redirect(redirect):
            return self._json(
                request, 400, {"error": "redirectUri must be the CLI listener's loopback URI", "reason": "redirect"}
            )
        d = maybeDeferred(self.broker.complete, params, redirect)
        return self._later(
            request,
            d,
            lambda a: {
                "principal": a.principal,
                "backend": a.backend,
                "issuer": a.issuer,
                "scopes": list(a.scopes),
                "expiresAt": a.expires_at,
                "refreshable": a.refreshable,
            },
        )

    def logout(self, request: Any, body: dict[str, Any]) -> Any:
        target = self._target(request, body)
        if isinstance(target, bytes):
            return target
        backend, principal = target
        revoke = body.get("revoke", False)
        if type(revoke) is not bool:
            return self._json(request, 400, {"error": "revoke must be true or false", "reason": "revoke"})
        log.info("admin endpoint: tokens of {principal} for backend {backend} forgotten", backend=backend, principal=principal)
        d = maybeDeferred(self.broker.logout, principal, backend, revoke)

        def audited(outcome: Any) -> Any:
            self.service.gateway.policy.audit_event("oauth/logout", principal, backend)
            return outcome

        d.addCallback(audited)
        return self._later(request, d, lambda outcome: {"principal": principal, "backend": backend, **_public(outcome)})

    def tokens(self, request: Any, body: dict[str, Any]) -> Any:
        refused = self._no_broker(request)
        if refused is not None:
            return refused
        backend = body.get("backend")
        if backend is not None and type(backend) is not str:
            return self._json(request, 400, {"error": "backend must be a name", "reason": "backend"})
        principal = body.get("principal")
        if principal is not None:
            resolved = self._principal(request, body)
            if isinstance(resolved, bytes):
                return resolved
            principal = resolved
        d = maybeDeferred(self.broker.list_tokens, principal, backend)
        return self._later(request, d, lambda rows: {"tokens": [_public(row) for row in rows]})


def oauth_metrics(service: Any) -> Iterator[Any]:
    """
    The OAuth broker's figures for C{/metrics}: principals authorized and
    their open sessions per backend, and token-store records that could not
    be opened, by kind.  No label holds a principal's name.
    """
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    broker = getattr(service, "oauth", None)
    if broker is None:
        return
    principals = GaugeMetricFamily(
        "twisted_mcp_oauth_principals", "Principals holding an OAuth authorization toward the backend", labels=["backend"]
    )
    runs = GaugeMetricFamily(
        "twisted_mcp_oauth_runs", "Open sessions of principals with the backend (auth: oauth)", labels=["backend"]
    )
    for name, backend in sorted(service.gateway.backends.items()):
        if getattr(backend, "oauth", None) is None:
            continue
        principals.add_metric([name], float(broker.status(name).get("principalsAuthorized") or 0))
        runs.add_metric([name], float(len(backend.principal_runs)))
    yield principals
    yield runs
    store_errors = CounterMetricFamily(
        "twisted_mcp_oauth_store_errors",
        "Token-store records that could not be opened (tampered, permissions, version, io)",
        labels=["kind"],
    )
    totals: dict[str, int] = {}
    for store in (broker.tokens, getattr(broker, "clients", None)):
        for kind, count in (getattr(store, "errors", None) or {}).items():
            totals[kind] = totals.get(kind, 0) + count
    for kind, count in sorted(totals.items()):
        store_errors.add_metric([kind], float(count))
    yield store_errors


#: Members never sent out, whatever a broker puts in a row by mistake.
_SECRET_MEMBERS = frozenset({"access_token", "refresh_token", "client_secret", "code", "code_verifier", "token", "secret"})


def _public(values: Any) -> dict[str, Any]:
    if type(values) is not dict:
        return {}
    return {k: v for k, v in values.items() if k not in _SECRET_MEMBERS}


__all__ = ["OAuthActions", "PrincipalUnknown", "is_loopback_redirect", "oauth_metrics", "resolve_principal"]
