"""
The reactor without pyOpenSSL: TLS support loads at its first use.

Importing Twisted's reactor loads pyOpenSSL and cryptography (about 13 MB
resident, a quarter of an idle gateway) whatever the configuration:
C{twisted.internet.posixbase} imports C{twisted.protocols.tls} and
C{twisted.internet.ssl} only to offer C{reactor.listenSSL} and
C{connectSSL}, and C{twisted.internet.tcp} imports
C{twisted.internet._newtls} only to offer C{startTLS} on TCP and Unix
connections.  Both imports are guarded: without OpenSSL, Twisted leaves
that TLS support out.

The reactor imported inside L{lean_reactor_import} finds OpenSSL
unavailable; after the block, posixbase's C{tls} and C{ssl} are back, as
modules imported at their first use: C{listenSSL} and C{connectSSL} (the
C{ssl:} endpoints) import them the first time they are called, and the
reactor provides C{IReactorSSL} as before.  Everything else that uses TLS
(C{twisted.internet.ssl}, C{twisted.internet.endpoints}, treq and
C{twisted.web.client} for https) imports OpenSSL itself, normally, when it
is first imported: a configuration or a reload that brings TLS in loads it
then.

The one thing left out: TCP and Unix connections do not offer C{startTLS}
(C{ITLSTransport}: a plain connection switched to TLS midway, as SMTP's
STARTTLS does), since C{twisted.internet.tcp} chose its classes' bases when
it was imported.  Nothing in the gateway does that: its TLS wraps the
protocol (C{TLSMemoryBIOFactory}) from the start of a connection.

A shared leaf: it imports nothing of the package.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from contextlib import contextmanager
from typing import Any, Iterator

_OPENSSL = "OpenSSL"


class ImportedOnFirstUse:
    """Stands for the module C{name}: the first attribute asked for imports it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported at its first use>"


@contextmanager
def lean_reactor_import() -> Iterator[None]:
    """
    Import the reactor inside this block: OpenSSL cannot be imported in it;
    after it, the reactor's TLS support is imported at its first use.  Does
    nothing when the reactor or OpenSSL is imported already, or when
    OpenSSL is not installed.
    """
    if "twisted.internet.reactor" in sys.modules or _OPENSSL in sys.modules or importlib.util.find_spec(_OPENSSL) is None:
        yield
        return
    sys.modules[_OPENSSL] = None  # type: ignore[assignment]  # `import OpenSSL` raises ImportError
    try:
        yield
    finally:
        if _OPENSSL in sys.modules and sys.modules[_OPENSSL] is None:
            del sys.modules[_OPENSSL]
    _tls_on_first_use()


def _tls_on_first_use() -> None:
    """Give posixbase its C{tls} and C{ssl} back, if it was imported without them."""
    posixbase: Any = sys.modules.get("twisted.internet.posixbase")
    if posixbase is None or posixbase.tls is not None or posixbase.ssl is not None:
        return
    from twisted.internet.interfaces import IReactorSSL
    from twisted.internet.posixbase import PosixReactorBase
    from zope.interface import classImplements

    posixbase.tls = ImportedOnFirstUse("twisted.protocols.tls")
    posixbase.ssl = ImportedOnFirstUse("twisted.internet.ssl")
    classImplements(PosixReactorBase, IReactorSSL)
