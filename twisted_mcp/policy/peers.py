"""
Identity per connection: who is on the other end of a socket.

A daemon serves many callers, so the principal of a socket client comes
from the connection itself, configured under C{identity:}:

    identity:
      peers:                     # Unix-socket clients, by their credentials
        - {user: alice, roles: [dev]}              # name: the user's name
        - {uid: 1001, name: ci-bot, roles: [ci]}
        - {group: ops, roles: [admin]}             # any member of ops
      certificates:              # ssl: clients, by their verified certificate
        - {commonName: "*.ops.example.com", roles: [admin]}
        - {fingerprint: "sha256:AB:CD:...", name: backup, roles: [backup]}
      listeners:                 # one principal for every client of a listener
        "tcp:8765:interface=127.0.0.1": {name: ci, roles: [ci]}
      principal: {name: guest, roles: [viewer]}    # anyone else (optional)

On a Unix socket the kernel's peer credentials (C{SO_PEERCRED}: uid, gid,
pid) are matched against C{peers}, first match wins.  On an C{ssl:}
listener the client certificate (verified against the listener's
C{clientCA}) is matched against C{certificates}.  Then a principal bound to
the listener, then C{principal}.  A client matching nothing is refused on
every request (C{AUTHENTICATION_FAILED}) with what it was seen as, so the
operator can add it.

On stdio the caller is whoever launched the gateway: C{jwt} or
C{principal} name it, and otherwise the gateway's own uid is matched
against C{peers}.
"""

from __future__ import annotations

import fnmatch
import functools
import grp
import os
import pwd
import socket
import struct
from typing import Any, Callable, Iterator

import attrs

from twisted_mcp.config._check import _join
from twisted_mcp.policy.principal import IdentityError, Principal


@attrs.frozen
class Peer:
    """
    What the gateway knows of a connection's other end.

    @ivar transport: C{stdio}, C{unix}, C{tcp} or C{tls}.
    @ivar listener: the C{--listen} endpoint it came in on (None on stdio).
    """

    transport: str
    listener: str | None = None
    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    address: str | None = None
    #: The certificate's subject common name and SHA-256 fingerprint
    #: (C{AB:CD:...}), for a TLS client that presented one.
    common_name: str | None = None
    fingerprint: str | None = None
    #: The principal a bearer token established for this request (HTTP),
    #: already verified; it takes precedence over every other rule.
    principal: Principal | None = None

    def describe(self) -> str:
        """How the peer was seen, for the operator (no secrets)."""
        if self.uid is not None:
            user = _user_name(self.uid)
            return f"uid {self.uid}{f' ({user})' if user else ''}, gid {self.gid}, pid {self.pid}"
        if self.transport == "tls":
            if self.common_name is None and self.fingerprint is None:
                return f"TLS client {self.address} without a certificate"
            return f"TLS client {self.address} with certificate CN={self.common_name!r} ({self.fingerprint})"
        return f"{self.transport} client {self.address or ''}".rstrip()


STDIO = Peer(transport="stdio", uid=os.getuid(), gid=os.getgid(), pid=os.getppid())


@attrs.frozen
class PeerRule:
    """One entry of C{identity.peers}: exactly one of uid, user, gid, group."""

    kind: str
    value: str | int
    name: str | None = None
    roles: tuple[str, ...] = ()

    def matches(self, peer: Peer) -> bool:
        if peer.uid is None:
            return False
        if self.kind == "uid":
            return peer.uid == self.value
        if self.kind == "user":
            return _user_name(peer.uid) == self.value
        if self.kind == "gid":
            return peer.gid == self.value or self.value in _groups(peer.uid, peer.gid)
        gid = _group_id(str(self.value))
        return gid is not None and (peer.gid == gid or gid in _groups(peer.uid, peer.gid))

    def principal(self, peer: Peer) -> Principal:
        name = self.name or _user_name(peer.uid) or f"uid-{peer.uid}"
        return Principal(name=name, roles=self.roles, source="peer")


@attrs.frozen
class CertificateRule:
    """One entry of C{identity.certificates}: a common-name glob or a fingerprint."""

    commonName: str | None = None
    fingerprint: str | None = None
    name: str | None = None
    roles: tuple[str, ...] = ()

    def matches(self, peer: Peer) -> bool:
        if self.fingerprint is not None:
            return peer.fingerprint is not None and _norm_fp(peer.fingerprint) == _norm_fp(self.fingerprint)
        return peer.common_name is not None and fnmatch.fnmatchcase(peer.common_name, self.commonName or "")

    def principal(self, peer: Peer) -> Principal:
        return Principal(name=self.name or peer.common_name or "certificate", roles=self.roles, source="certificate")


def _norm_fp(value: str) -> str:
    value = value.lower()
    if value.startswith("sha256:"):
        value = value[7:]
    return value.replace(":", "")


@functools.lru_cache(maxsize=4096)
def _user_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@functools.lru_cache(maxsize=1024)
def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


@functools.lru_cache(maxsize=4096)
def _groups(uid: int, gid: int | None) -> list[int]:
    """The peer's groups (primary and supplementary, from the group database)."""
    user = _user_name(uid)
    if user is None:
        return [gid] if gid is not None else []
    try:
        return os.getgrouplist(user, gid if gid is not None else -1)
    except OSError:
        return [gid] if gid is not None else []


class ConnectionIdentity:
    """
    Resolves the principal of a session from its L{Peer}.

    @param config: the C{identity:} section (an C{IdentityConfig}), or None.
    @param authenticate: the stdio caller's authenticator (token or fixed
        principal), or None.
    """

    def __init__(self, config: Any, authenticate: Callable[[], Principal] | None) -> None:
        self.config = config
        self._authenticate = authenticate
        self.peers: tuple[PeerRule, ...] = getattr(config, "peers", ()) or ()
        self.certificates: tuple[CertificateRule, ...] = getattr(config, "certificates", ()) or ()
        self.listeners: dict[str, Principal] = dict(getattr(config, "listeners", ()) or ())
        self.default: Principal | None = getattr(config, "principal", None)
        self.uses_token = getattr(config, "jwt", None) is not None
        self._cache: dict[tuple[Any, ...], Principal] = {}
        # The user and group databases are read again after a reload.
        _user_name.cache_clear()
        _group_id.cache_clear()
        _groups.cache_clear()

    @property
    def per_connection(self) -> bool:
        """Whether anything identifies socket clients."""
        return bool(self.peers or self.certificates or self.listeners or self.default)

    def resolve(self, peer: Peer | None) -> Principal:
        """The principal for C{peer}; L{IdentityError} when none applies."""
        if peer is not None and peer.principal is not None:
            return peer.principal
        if peer is None or peer.transport == "stdio":
            if self.uses_token and self._authenticate is not None:
                return self._authenticate()  # checks expiry on every call: not cached
            if self.default is not None:
                return self.default
            peer = STDIO
        # Who it is, not which process or port: one lookup per user, not per connection.
        key = (peer.transport, peer.listener, peer.uid, peer.gid, peer.common_name, peer.fingerprint)
        try:
            return self._cache[key]
        except KeyError:
            pass
        principal = self._resolve(peer)
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[key] = principal
        return principal

    def _resolve(self, peer: Peer) -> Principal:
        if peer.uid is not None:
            for rule in self.peers:
                if rule.matches(peer):
                    return rule.principal(peer)
        if peer.common_name is not None or peer.fingerprint is not None:
            for cert in self.certificates:
                if cert.matches(peer):
                    return cert.principal(peer)
        if peer.listener is not None:
            bound = self.listeners.get(peer.listener)
            if bound is not None:
                return bound
        if self.default is not None:
            return self.default
        if peer.transport == "stdio":
            where = "identity.principal or an identity.peers entry"
        elif peer.uid is not None:
            where = "identity.peers"
        else:
            where = "identity.certificates or identity.listeners"
        raise IdentityError(f"no principal is configured for this client ({peer.describe()}): add it to {where}", "unknown-peer")


# -- reading a connection ----------------------------------------------------


def peer_of(transport: Any, listener: str | None) -> Peer:
    """The L{Peer} of a connected transport (never raises)."""
    host = None
    try:
        host = transport.getPeer()
    except Exception:
        pass
    address = None
    if host is not None and hasattr(host, "host"):
        address = f"{host.host}:{host.port}"
    sock = getattr(transport, "socket", None)
    if sock is None:
        inner = getattr(transport, "transport", None)  # TLS over TCP
        sock = getattr(inner, "socket", None)
    if sock is not None and getattr(sock, "family", None) == socket.AF_UNIX and hasattr(socket, "SO_PEERCRED"):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, gid = struct.unpack("iII", raw)  # struct ucred: pid_t, uid_t, gid_t
            return Peer(transport="unix", listener=listener, uid=uid, gid=gid, pid=pid)
        except OSError:
            return Peer(transport="unix", listener=listener)
    if hasattr(transport, "getPeerCertificate"):
        return Peer(transport="tls", listener=listener, address=address)
    return Peer(transport="tcp", listener=listener, address=address)


def with_certificate(peer: Peer, transport: Any) -> Peer:
    """Add the TLS client certificate's CN and fingerprint (after the handshake)."""
    try:
        cert = transport.getPeerCertificate()
    except Exception:
        cert = None
    if cert is None:
        return peer
    try:
        crypto = cert.to_cryptography()
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        names = crypto.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(names[0].value) if names else None
        fp = crypto.fingerprint(hashes.SHA256()).hex().upper()
        fp = ":".join(fp[i : i + 2] for i in range(0, len(fp), 2))
    except Exception:
        return peer
    return attrs.evolve(peer, common_name=cn, fingerprint=fp)


# -- configuration ---------------------------------------------------------

_PEER_KEYS = {"uid", "user", "gid", "group", "name", "roles"}
_CERT_KEYS = {"commonName", "fingerprint", "name", "roles"}


def _entries(
    check: Any, path: str, value: Any, keys: set[str], kinds: tuple[str, ...], one_of: str
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """The well-formed entries of a list of rules: (path, entry, which of C{kinds} it uses)."""
    if not isinstance(value, list):
        check.problem(path, f"expected a list of entries, each with one of {one_of}, and name and roles")
        return
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        spec = check.mapping(p, item)
        if spec is None:
            continue
        check.unknown(p, spec, keys)
        present = [k for k in kinds if k in spec]
        if len(present) != 1:
            check.problem(p, f"expected exactly one of {one_of}")
            continue
        yield p, spec, present[0]


def parse_peers(check: Any, path: str, value: Any) -> tuple[PeerRule, ...]:
    rules = []
    for p, spec, kind in _entries(check, path, value, _PEER_KEYS, ("uid", "user", "gid", "group"), "uid, user, gid or group"):
        raw = spec[kind]
        match: str | int | None
        if kind in ("uid", "gid"):
            match = check.integer(_join(p, kind), raw, 0, 2**32 - 1)
        else:
            match = check.string(_join(p, kind), raw)
            if match is not None:
                known = _known_user(match) if kind == "user" else _group_id(match) is not None
                if not known:
                    check.problem(_join(p, kind), f"no such {kind} on this machine: {match!r}")
        name = check.string(_join(p, "name"), spec["name"]) if "name" in spec else None
        roles = _roles(check, p, spec)
        if match is None or roles is None:
            continue
        rules.append(PeerRule(kind=kind, value=match, name=name, roles=roles))
    return tuple(rules)


def parse_certificates(check: Any, path: str, value: Any) -> tuple[CertificateRule, ...]:
    rules = []
    for p, spec, kind in _entries(
        check, path, value, _CERT_KEYS, ("commonName", "fingerprint"), "commonName (a glob) or fingerprint (sha256:AB:CD:...)"
    ):
        text = check.string(_join(p, kind), spec[kind])
        if text is not None and kind == "fingerprint":
            hexed = _norm_fp(text)
            if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
                check.problem(_join(p, "fingerprint"), "expected a SHA-256 fingerprint: 64 hex digits, colons allowed")
                text = None
        name = check.string(_join(p, "name"), spec["name"]) if "name" in spec else None
        roles = _roles(check, p, spec)
        if text is None or roles is None:
            continue
        rules.append(CertificateRule(name=name, roles=roles, **{kind: text}))
    return tuple(rules)


def parse_listeners(check: Any, path: str, value: Any, parse_principal: Callable[..., Any]) -> tuple[tuple[str, Principal], ...]:
    spec = check.mapping(path, value)
    if spec is None:
        return ()
    out = []
    for endpoint, item in spec.items():
        principal = parse_principal(check, _join(path, str(endpoint)), item)
        if principal is not None:
            out.append((str(endpoint), attrs.evolve(principal, source="listener")))
    return tuple(out)


def _roles(check: Any, path: str, spec: dict[str, Any]) -> tuple[str, ...] | None:
    if "roles" not in spec:
        return ()
    roles = check.string_list(_join(path, "roles"), spec["roles"])
    return None if roles is None else tuple(dict.fromkeys(roles))


def _known_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
