"""
The OAuth broker, built from the configuration at start: its HTTP client
toward authorization servers, its stores (sealed with the configured key)
and the backends that use it.

A token store that cannot be used (its directory open to others, the key
unreadable at start) does not stop the gateway: the backends with
C{auth: oauth} answer -31042 C{store-unavailable} with the reason, and every
other backend serves as usual.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from twisted_mcp.backends.oauth.broker import OAuthBroker
from twisted_mcp.backends.oauth.fetch import AuthHttp
from twisted_mcp.backends.oauth.file_store import FileStore
from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable
from twisted_mcp.backends.oauth.sealing import KeyRing
from twisted_mcp.backends.oauth.store import ClientStore, MemoryStore, PendingStore, StoreUnusable, TokenStore
from twisted_mcp.config import Config
from twisted_mcp.config.keys import load_key, read_key
from twisted_mcp.config.models import OAuthAuth

log = Logger()

#: The shortest store key accepted (AES-256).
STORE_KEY_BYTES = 32


def auth_servers(config: Config) -> list[Any]:
    """The backends of C{config} that authorize with OAuth (C{auth:} set)."""
    return [s for s in config.servers if getattr(s, "auth", None) is not None]


def build_broker(config: Config, reactor: Any, environ: Mapping[str, str] | None = None) -> OAuthBroker | None:
    """The broker for C{config}'s C{auth} backends; None when there are none."""
    servers = auth_servers(config)
    settings = config.oauth
    if not servers or settings is None:
        return None
    environ = os.environ if environ is None else environ
    http = AuthHttp(reactor, settings.requestTimeout, settings.maxMetadataBytes)
    records: Any
    if any(isinstance(s.auth, OAuthAuth) for s in servers):
        try:
            ring = _key_ring(settings.store, environ)
            store = FileStore(settings.store.path, reactor)
            store.check()
            records = store
        except (StoreUnusable, ValueError, OSError) as e:
            why = str(e)
            log.error("the OAuth token store cannot be used; backends with auth: oauth are unavailable: {why}", why=why)
            records, ring = UnusableStore(why), KeyRing(os.urandom(STORE_KEY_BYTES))
    else:
        # Client credentials only: their tokens are kept in memory.
        records, ring = MemoryStore(reactor), KeyRing(os.urandom(STORE_KEY_BYTES))
    tokens = TokenStore(records, ring)
    # Principals' tokens (auth: oauth) are meant for the disk, even when the store could not be opened.
    tokens.durable = any(isinstance(s.auth, OAuthAuth) for s in servers)
    broker = OAuthBroker(reactor, http, tokens, ClientStore(records, ring), PendingStore(records, ring, clock=reactor), settings)
    for server in servers:
        broker.add_backend(server.name, server.url, server.auth)
    return broker


def _key_ring(store: Any, environ: Mapping[str, str]) -> KeyRing:
    current = load_key(store, "oauth.store", environ=environ, min_bytes=STORE_KEY_BYTES)
    old = [read_key("keyFile", path, environ, min_bytes=STORE_KEY_BYTES) for path in store.oldKeyFiles]
    return KeyRing(current, old)


class UnusableStore:
    """A record store that refuses everything with the reason the real one could not be opened."""

    def __init__(self, why: str) -> None:
        self.why = why

    def _refuse(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return fail(AuthorizationUnavailable("store-unavailable", f"the OAuth token store cannot be used: {self.why}"))

    get = put = delete = take = keys = lease = release = _refuse

    def watch(self, callback: Any) -> None:
        pass


__all__ = ["UnusableStore", "auth_servers", "build_broker"]
