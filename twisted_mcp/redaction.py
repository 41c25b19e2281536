"""
The one rule for which names hold secrets.

Both the log observer's safety net (L{twisted_mcp.ops.logs}) and the audit
trail's argument redaction (L{twisted_mcp.policy.audit}) ask
L{is_secret_name} whether the value under a field name or argument key must
be hidden.

A name is split into words at every character that is not an ASCII letter
or digit (C{-}, C{_}, C{.}, spaces...) and at camelCase boundaries
(C{apiKey}, C{APIKey}, C{X-Api-Key} all give C{api key}), and compared in
lower case.  Words are compared whole, so that C{keyword}, C{monkey},
C{passage}, C{spinner} and C{opinion} stay visible; a final C{s} is
ignored (C{tokens}, C{credentials}).  A name is secret when one of its words
is in L{SECRET_WORDS}, or ends with one of L{SECRET_ENDINGS} (names run
together in lower case: C{githubtoken}, C{dbpassword}, C{myapikey}), unless
its first or last word is in L{DESCRIPTIVE_WORDS}: such a name describes a
secret rather than holding one (C{max_tokens}, C{token_count},
C{session_count}, C{key_name}, C{password_file}).
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["DESCRIPTIVE_WORDS", "SECRET_ENDINGS", "SECRET_WORDS", "is_secret_name"]

SECRET_WORDS = frozenset(
    {
        "password", "passwd", "passphrase", "passcode", "pass", "pwd",
        "secret", "token", "authtoken",
        "key", "apikey", "accesskey", "privatekey", "secretkey", "sshkey",
        "auth", "authorization", "bearer", "jwt", "cookie",
        "session", "sessionid", "credential", "creds",
        "pin", "otp", "totp", "hotp", "mfa", "cvv",
        "private", "signature", "verifier", "assertion",
    }
)  # fmt: skip

SECRET_ENDINGS = (
    "password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "privatekey",
    "secretkey", "authorization", "credential", "cookie", "sessionid", "signature",
)  # fmt: skip

DESCRIPTIVE_WORDS = frozenset(
    {
        "count", "num", "number", "total", "max", "min", "limit", "length", "len", "size",
        "used", "remaining", "type", "kind", "name", "file", "path", "dir", "url", "uri",
        "endpoint", "ttl", "timeout", "expiry", "expires", "expiration", "at", "in",
        "enabled", "required", "is", "has",
    }
)  # fmt: skip

# Words of a name: an upper-case run not followed by lower case (the API of
# APIKey), a capitalised or lower-case word, or digits.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_CACHED_LENGTH = 64


def is_secret_name(name: str) -> bool:
    """Whether the value under C{name} must be hidden (see the module's docstring)."""
    # The same few names come back on every event and call; a client's long
    # made-up keys are not kept.
    return _cached(name) if len(name) <= _CACHED_LENGTH else _judge(name)


def _judge(name: str) -> bool:
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words or words[0] in DESCRIPTIVE_WORDS or words[-1] in DESCRIPTIVE_WORDS:
        return False
    return any(_secret_word(w) for w in words)


def _secret_word(word: str) -> bool:
    for form in (word, word[:-1]) if word.endswith("s") else (word,):
        if form in SECRET_WORDS or form.endswith(SECRET_ENDINGS):
            return True
    return False


_cached = lru_cache(maxsize=4096)(_judge)
