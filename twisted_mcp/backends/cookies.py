"""A cookie policy for HTTP clients that must carry no state between requests."""

from __future__ import annotations

from http.cookiejar import CookiePolicy
from typing import Any


class NoCookies(CookiePolicy):
    """
    Neither keeps nor sends a cookie: an MCP session is carried by
    C{Mcp-Session-Id}, and nothing an authorization server sets may reach
    another request.
    """

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: Any) -> bool:
        return False

    def path_return_ok(self, path: str, request: Any) -> bool:
        return False


__all__ = ["NoCookies"]
