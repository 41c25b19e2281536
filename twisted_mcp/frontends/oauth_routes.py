"""
The HTTP front's OAuth routes (C{docs/design/oauth.md} §10.1), served only
with C{oauth.publicUrl}; no bearer token is asked (a browser has none), the
front's C{Host} checks apply:

  - C{GET /oauth/client.json}: the gateway's client ID metadata document;
  - C{GET /oauth/connect/<id>}: a connect link (single use) -> 302 to the
    authorization server (C{browserCheck: none} only: L{Consent.connect});
  - C{GET /oauth/callback}: the authorization server's redirect, completed
    by the broker -> a page saying who is now authorized, or why not.

Nothing here logs or shows a code, a C{state}, a token or an
authorization URL; on a failed C{iss} check the authorization server's
C{error_description} is not shown either (only a refused consent's is, to
the person in the browser).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.server import NOT_DONE_YET

from twisted_mcp.backends.oauth.broker import Authorized
from twisted_mcp.backends.oauth.problems import AuthorizationFailed, OAuthProblem
from twisted_mcp.backends.oauth.registration import CALLBACK_PATH, CLIENT_DOCUMENT_PATH, client_metadata_document
from twisted_mcp.dispatch.authorization import CONNECT_PATH, Consent
from twisted_mcp.frontends.oauth_pages import no_store, page

log = Logger()

PREFIX = b"/oauth/"


def client_document(consent: Consent) -> dict[str, Any]:
    """
    The CIMD served at C{<publicUrl>/oauth/client.json}: the broker's own
    (an https public URL); for a loopback http public URL (development, the
    tests) the same document, which the broker never offers an
    authorization server (CIMD needs https).
    """
    settings = consent.broker.settings
    document = client_metadata_document(settings)
    if document is not None:
        return document
    return {
        "client_id": consent.public_url + CLIENT_DOCUMENT_PATH,
        "client_name": settings.clientName,
        "redirect_uris": [consent.callback_url],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "web",
    }


class OAuthRoutes:
    """The C{/oauth/*} routes of one HTTP listener, toward the gateway's L{Consent}."""

    def __init__(self, consent: Consent) -> None:
        self.consent = consent

    def handles(self, path: bytes) -> bool:
        return path.startswith(PREFIX)

    def render(self, request: Request) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET")
            return page(request, 405, "Method not allowed", "These pages are read with GET.")
        path = request.path.decode("latin-1")
        if path == CLIENT_DOCUMENT_PATH:
            return self._document(request)
        if not self.consent.connect:
            return page(request, 404, "Not found", "This gateway offers no authorization pages: run `twisted-mcp login`.")
        if request.method == b"HEAD":
            # Link checkers and previews: nothing single-use is spent on them.
            return page(request, 200, "twisted-mcp", "Open this page with a browser.")
        if path.startswith(CONNECT_PATH):
            return self._connect(request, path[len(CONNECT_PATH) :])
        if path == CALLBACK_PATH:
            return self._callback(request)
        return page(request, 404, "Not found", "There is no such page.")

    def _document(self, request: Request) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"max-age=3600")
        return json.dumps(client_document(self.consent), indent=2).encode("utf-8") + b"\n"

    def _connect(self, request: Request, link_id: str) -> bytes:
        link = self.consent.links.take(link_id) if link_id and "/" not in link_id else None
        if link is None:
            return page(
                request, 404, "Link unknown or expired", "This authorization link was already used, has expired, or never existed.",
                "Call the tool again to get a new one, or run `twisted-mcp login`.",
            )
        log.info("backend {backend}: the connect page of {principal} was opened", backend=link.backend, principal=link.principal)
        request.setResponseCode(302)
        no_store(request)
        request.setHeader(b"location", link.url.encode("ascii"))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"continue at the authorization server\n"

    def _callback(self, request: Request) -> Any:
        params: dict[str, str] = {}
        args: dict[bytes, list[bytes]] = request.args or {}
        for key, values in args.items():
            if len(values) != 1:
                return page(request, 400, "Authorization failed", "The callback repeats a parameter: it is refused (state-mismatch).")
            params[key.decode("utf-8", "replace")] = values[0].decode("utf-8", "replace")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def done(authorized: Authorized) -> None:
            if gone:
                return
            text = page(
                request, 200, "Authorized", f"{authorized.backend} is now authorized for {authorized.principal}; you can close this tab."
            )
            request.write(text)
            request.finish()

        def failed(failure: Failure) -> None:
            if gone:
                return
            e = failure.value
            if isinstance(e, OAuthProblem):
                shown = [e.message, f"Reason: {e.reason}."]
                description = getattr(e, "description", None)
                if e.reason == "consent-refused" and description:
                    shown.append(f"The authorization server said: {description}")
                status = 400 if isinstance(e, AuthorizationFailed) else 503
            else:
                log.failure("the OAuth callback failed", failure)
                shown, status = ["The gateway could not complete the authorization (see its log)."], 500
            request.write(page(request, status, "Authorization failed", *shown))
            request.finish()

        self.consent.broker.complete(params, self.consent.callback_url).addCallbacks(done, failed).addErrback(
            lambda f: log.failure("answering the OAuth callback failed", f)
        )
        return NOT_DONE_YET


__all__ = ["OAuthRoutes", "client_document"]
