"""
URLs as the gateway shows them, and the credentials a URL may carry.

A backend's address can hold secrets in three places: its userinfo
(C{https://user:password@host/}), its path (C{https://host/mcp/<token>})
and its query (C{?key=...}).  Every log line, error message, C{/status}
page and C{check-config} listing shows an address through L{shown_url},
which keeps only what identifies the server: scheme, host and port, a
short digest of the path (so that two addresses can still be told apart)
and a mark where a query was.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, Iterable
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def split_url(url: str) -> SplitResult | None:
    """
    C{url}'s parts, or C{None} when it cannot be read: C{urlsplit} refuses
    an unclosed C{[} or a bad IPv6 host, reading C{.port} refuses a port
    that is not a number from 0 to 65535, and a host name that IDNA cannot
    encode could never be sent in a C{Host} header.  Every URL from a
    config file goes through here, so a bad one is a config error, not a
    traceback.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (reading it is the port's check)
        if parts.hostname and not parts.hostname.isascii():
            parts.hostname.encode("idna")  # UnicodeError is a ValueError
    except ValueError:
        return None
    return parts


def shown_url(url: str) -> str:
    """
    C{url} without anything that may be a secret:
    C{https://u:pw@host:8443/mcp/tok?k=v} is shown as
    C{https://host:8443/[path 1a2b3c4d]?…} (the first 8 hex digits of the
    SHA-256 of the path); a path of C{/} or nothing is shown as it is.
    """
    parts = split_url(url)
    if parts is None:
        return "[an unreadable address]"
    host = parts.netloc.rpartition("@")[2]
    path = parts.path
    if path not in ("", "/"):
        digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        path = f"/[path {digest}]"
    origin = f"{parts.scheme}://{host}" if parts.scheme or host else ""
    return origin + path + ("?…" if parts.query else "")


def shown_text(text: str) -> str:
    """C{text} with every URL in it shown through L{shown_url} (an error
    message may quote the address it failed on)."""
    return _URL_IN_TEXT.sub(lambda m: shown_url(m.group(0)), text)


def shown_args(args: Iterable[Any]) -> str:
    """Command-line arguments as shown to people: every URL in them
    through L{shown_url} (C{postgresql://app:secret@db/app})."""
    return " ".join(shown_text(str(a)) for a in args)


def split_credentials(url: str) -> tuple[str, str | None]:
    """
    C{url} without its userinfo, and the C{Authorization: Basic} value the
    userinfo stands for (C{None} when there is none).  User name and
    password are percent-decoded, as RFC 3986 writes them.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode("utf-8")).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


__all__ = ["shown_args", "shown_url", "split_credentials", "split_url"]
