"""
What a C{--listen} value asks for: an optional C{profile:<name>:} prefix
(the listener serves only that profile, design of issue 14 section 2.3),
then an optional C{http:} prefix (the Streamable HTTP transport), then a
Twisted endpoint string.  The profile prefix is peeled first, so both
combine: C{profile:ops:http:tcp:8081:interface=127.0.0.1}.

The whole value stays the listener's name (C{identity.listeners} keys,
logs), so a profile listener can be bound to a principal as any other.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import attrs

PROFILE_PREFIX = "profile:"
HTTP_PREFIX = "http:"


@attrs.frozen
class Listen:
    """One C{--listen} value, taken apart."""

    #: The value as given (the listener's name).
    description: str
    #: The profile it serves; None: every profile (HTTP paths) and the default view.
    profile: str | None
    #: Whether it serves the Streamable HTTP transport.
    http: bool
    #: The Twisted endpoint string.
    endpoint: str


def parse_listen(description: str) -> Listen:
    """
    C{description} taken apart.

    @raise ValueError: a C{profile:} prefix without a name or an endpoint,
        with a message that names the value.
    """
    profile = None
    rest = description
    if rest.startswith(PROFILE_PREFIX):
        name, sep, rest = rest[len(PROFILE_PREFIX) :].partition(":")
        if not name or not sep or not rest:
            raise ValueError(f"--listen {description}: expected profile:<name>:<endpoint>, e.g. profile:dev:unix:/run/twisted-mcp/dev.sock")
        profile = name
    http = rest.startswith(HTTP_PREFIX)
    endpoint = rest[len(HTTP_PREFIX) :] if http else rest
    return Listen(description, profile, http, endpoint)


def profile_refusal(listen: Listen, profiles: Mapping[str, object]) -> str | None:
    """Why C{listen} cannot be served with C{profiles} (its profile is not among them); None when it can."""
    if listen.profile is None or listen.profile in profiles:
        return None
    known = ", ".join(sorted(profiles)) or "none"
    return f'--listen {listen.description}: no profile "{listen.profile}" in the config (profiles: {known})'


def listeners_by_profile(listens: Iterable[Listen]) -> dict[str, tuple[str, ...]]:
    """The C{--listen} values bound to each profile."""
    out: dict[str, tuple[str, ...]] = {}
    for listen in listens:
        if listen.profile is not None:
            out[listen.profile] = out.get(listen.profile, ()) + (listen.description,)
    return out


__all__ = ["HTTP_PREFIX", "PROFILE_PREFIX", "Listen", "listeners_by_profile", "parse_listen", "profile_refusal"]
