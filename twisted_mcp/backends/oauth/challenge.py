"""
C{WWW-Authenticate} read as RFC 9110 §11.6.1 writes it: one or more
headers, each a comma-separated list of challenges, each an auth scheme
followed by a C{token68} or by C{name=value} parameters whose values are
tokens or quoted strings (RFC 6750 §3 for what a C{Bearer} challenge
carries: C{resource_metadata}, C{scope}, C{error}).

What a backend sends is not trusted to be well formed: L{parse_challenges}
keeps what it can read and never raises.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from attrs import field, frozen

__all__ = ["Challenge", "bearer_challenge", "parse_challenges"]

# RFC 9110 §5.6.2 tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §11.2 token68, ending the challenge (only spaces before a comma or the end).
_TOKEN68 = re.compile(r"([A-Za-z0-9\-._~+/]+=*)[ \t]*(?=,|$)")
_SPACE = " \t"


@frozen
class Challenge:
    """
    One challenge of a C{WWW-Authenticate} header.

    @ivar scheme: the auth scheme, in lower case (C{bearer}).
    @ivar params: its parameters, names in lower case, quoted values
        unquoted; when a name repeats, the first value is kept.
    @ivar token68: the C{token68} form's value, when the challenge has one
        instead of parameters.
    """

    scheme: str
    params: Mapping[str, str] = field(factory=dict)
    token68: str | None = None

    @property
    def resource_metadata(self) -> str | None:
        """The URL of the protected resource metadata (RFC 9728 §5.1), if named."""
        return self.params.get("resource_metadata")

    @property
    def scope(self) -> tuple[str, ...] | None:
        """The scopes the resource asks for (space-separated), or C{None} when absent."""
        scope = self.params.get("scope")
        return None if scope is None else tuple(scope.split())

    @property
    def error(self) -> str | None:
        """The RFC 6750 §3.1 error code (C{invalid_token}, C{insufficient_scope}), if any."""
        return self.params.get("error")


def parse_challenges(values: Sequence[bytes | str]) -> list[Challenge]:
    """
    Every challenge of the C{WWW-Authenticate} header values C{values}, in
    order; what cannot be read is skipped.
    """
    challenges: list[Challenge] = []
    for value in values:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        challenges.extend(_Reader(text).challenges())
    return challenges


def bearer_challenge(values: Sequence[bytes | str]) -> Challenge | None:
    """The first C{Bearer} challenge of C{values}, or C{None}."""
    for challenge in parse_challenges(values):
        if challenge.scheme == "bearer":
            return challenge
    return None


class _Reader:
    """A single pass over one header value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def challenges(self) -> list[Challenge]:
        found: list[Challenge] = []
        scheme: str | None = None
        params: dict[str, str] = {}
        token68: str | None = None
        while self._skip(_SPACE + ","):
            name = self._token()
            if name is None:
                self._skip_element()
                continue
            self._skip(_SPACE)
            if self._peek() == "=":
                # name=value: a parameter of the current challenge (none yet: garbage)
                self.pos += 1
                self._skip(_SPACE)
                value = self._value()
                if scheme is not None and value is not None:
                    params.setdefault(name.lower(), value)
                self._skip_element()
                continue
            if scheme is not None:
                found.append(Challenge(scheme, params, token68))
            scheme, params, token68 = name.lower(), {}, None
            match = _TOKEN68.match(self.text, self.pos)
            if match is not None:
                token68 = match.group(1)
                self.pos = match.end()
        if scheme is not None:
            found.append(Challenge(scheme, params, token68))
        return found

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _skip(self, chars: str) -> bool:
        """Skip C{chars}; whether anything is left."""
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1
        return self.pos < len(self.text)

    def _token(self) -> str | None:
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group()

    def _value(self) -> str | None:
        if self._peek() == '"':
            return self._quoted()
        return self._token()

    def _quoted(self) -> str:
        """A quoted string (RFC 9110 §5.6.4); an unclosed one runs to the end."""
        out: list[str] = []
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                break
            if char == "\\" and self.pos < len(self.text):
                char = self.text[self.pos]
                self.pos += 1
            out.append(char)
        return "".join(out)

    def _skip_element(self) -> None:
        """Skip to the next comma that is not inside a quoted string."""
        while self.pos < len(self.text) and self.text[self.pos] != ",":
            if self.text[self.pos] == '"':
                self._quoted()
            else:
                self.pos += 1
