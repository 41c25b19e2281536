"""
A scripted "browser" for the OAuth tests: it walks an authorization URL of C{tests/oauth/as.mjs}
through login and consent the way a person would, with nothing but HTTP requests.

It has its own cookie jar (the AS's login session lives in it), follows redirects itself, never
parses HTML: at an interaction of as.mjs it asks which prompt it is (C{GET /interaction/<uid>}
answers JSON) and posts the matching form. The redirect to the client's C{redirect_uri} is requested
too (so a loopback listener gets its callback), and that URL is the result. It may start anywhere
that redirects to the AS (a gateway's connect page), and a callback that redirects on (an OIDC
browser check handing over to the backend's authorization) is followed too. Blocking; usable from
any thread (each L{Browser} is its own client; share one between threads only with care).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2

#: More hops than any authorization takes (authorize, login, resume, consent, resume, callback).
MAX_HOPS = 20


class BrowserError(Exception):
    """The authorization did not reach the client's redirect URI (the AS showed an error page, ...)."""


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _interaction_uid(url: str) -> str | None:
    segments = urlsplit(url).path.split("/")
    if len(segments) == 3 and segments[1] == "interaction":
        return segments[2]
    return None


class Browser:
    """
    One browser profile: a cookie jar that outlives single authorizations (so a second authorization
    finds the AS's login session and skips the login, as a real browser would).

    @ivar visited: every URL requested, in order (for tests that look at the path taken).
    """

    def __init__(self, timeout: float = 10.0) -> None:
        self.client = httpx2.Client(follow_redirects=False, timeout=timeout)
        self.visited: list[str] = []

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def authorize(self, url: str, account: str = "alice", consent: bool = True) -> str:
        """
        Open C{url} (an authorization URL, or any page that redirects to one), log in as C{account}
        when asked, consent (or refuse when C{consent} is false) when asked, and follow the redirects
        like a browser. A redirect to the C{redirect_uri} of an authorization request seen on the way
        is requested too; when its answer is not one more redirect, the walk ends there.

        @return: the last such redirect URL (C{redirect_uri?code=...&state=...&iss=...}, or
            C{?error=...}).
        @raise BrowserError: when the walk ends anywhere else (an error page of the AS, ...).
        """
        walk = _Walk(self)
        response = walk.visit(url)
        for _ in range(MAX_HOPS):
            if response.is_redirect:
                response = walk.visit(urljoin(str(response.url), response.headers["location"]))
                continue
            if response.status_code == 200 and _interaction_uid(str(response.url)) is not None:
                response = self._answer(str(response.url), response.json()["prompt"], account, consent)
                continue
            if walk.delivered is not None:
                return walk.delivered
            raise BrowserError(
                f"the walk ended with {response.status_code} at {_without_query(str(response.url))}: {response.text[:500]}"
            )
        raise BrowserError(f"no end within {MAX_HOPS} hops: {self.visited[-3:]}")

    def _answer(self, interaction: str, prompt: str, account: str, consent: bool) -> httpx2.Response:
        if prompt == "login":
            return self.post(f"{interaction}/login", {"login": account})
        if prompt == "consent":
            return self.post(f"{interaction}/confirm", {"consent": "yes" if consent else "no"})
        raise BrowserError(f"the AS asks for {prompt!r}, which this browser cannot answer")

    def get(self, url: str) -> httpx2.Response:
        """One GET with this browser's cookies, no redirect followed; recorded in L{visited}."""
        self.visited.append(url)
        return self.client.get(url)

    def post(self, url: str, form: dict[str, str]) -> httpx2.Response:
        """One form POST with this browser's cookies, no redirect followed; recorded in L{visited}."""
        self.visited.append(url)
        return self.client.post(url, data=form)


class _Walk:
    """One authorization walk: the redirect URIs seen in authorization requests, the last one reached."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.redirect_uris: set[str] = set()
        self.delivered: str | None = None

    def visit(self, url: str) -> httpx2.Response:
        query = parse_qs(urlsplit(url).query)
        if "client_id" in query and "redirect_uri" in query:
            self.redirect_uris.add(_without_query(query["redirect_uri"][0]))
        if _without_query(url) not in self.redirect_uris:
            return self.browser.get(url)
        self.delivered = url
        try:
            return self.browser.get(url)
        except (httpx2.ReadError, httpx2.RemoteProtocolError):
            # The listener took the request and hung up (a CLI that exits once it has its code).
            return httpx2.Response(204, request=httpx2.Request("GET", url))


def authorize(url: str, account: str = "alice", consent: bool = True) -> str:
    """L{Browser.authorize} in a fresh browser (no login session from before)."""
    with Browser() as browser:
        return browser.authorize(url, account=account, consent=consent)
