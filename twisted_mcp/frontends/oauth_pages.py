"""
The small HTML pages of the HTTP front's C{/oauth/*} routes
(C{docs/design/oauth.md} §4.4): escaped text only, no script, never cached
(C{Cache-Control: no-store}) and never leaking their URL, which may carry a
code, through a C{Referer} (C{Referrer-Policy: no-referrer}).
"""

from __future__ import annotations

from html import escape

from twisted.web.http import Request

#: Headers of every page (and of the connect page's redirect).
PAGE_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


def render_page(title: str, *paragraphs: str) -> bytes:
    """A page of C{title} and C{paragraphs}, every one escaped."""
    body = "".join(f"<p>{escape(p)}</p>\n" for p in paragraphs)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title></head>\n<body>\n<h1>{escape(title)}</h1>\n{body}</body></html>\n"
    ).encode("utf-8")


def no_store(request: Request) -> None:
    """The headers every C{/oauth/*} answer carries."""
    for name, value in PAGE_HEADERS:
        request.setHeader(name, value)


def page(request: Request, status: int, title: str, *paragraphs: str) -> bytes:
    """Answer C{request} with a page: C{status}, the headers, the body."""
    request.setResponseCode(status)
    no_store(request)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    return render_page(title, *paragraphs)


__all__ = ["PAGE_HEADERS", "no_store", "page", "render_page"]
