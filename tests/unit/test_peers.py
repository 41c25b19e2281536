"""
Tests for L{twisted_mcp.policy.peers}: matching socket peers and TLS client
certificates to principals, the order of resolution, reading a connection's
credentials, and the C{identity:} keys that configure it.
"""

from __future__ import annotations

import datetime
import grp
import os
import pwd
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock

from twisted_mcp.config import ConfigError
from twisted_mcp.config.loader import load
from twisted_mcp.mcp import errors
from twisted_mcp.policy import peers
from twisted_mcp.policy.identity import IdentityConfig, IdentityError, JwtConfig, Principal
from twisted_mcp.policy.peers import (
    STDIO,
    CertificateRule,
    ConnectionIdentity,
    Peer,
    PeerRule,
    peer_of,
    with_certificate,
)
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig
from twisted_mcp.wire.jsonrpc import JsonRpcError

UID, GID = os.getuid(), os.getgid()
ME = pwd.getpwuid(UID).pw_name


def _unused_uid() -> int:
    uid = 54321
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


def _other_user() -> pwd.struct_passwd:
    """A user of this machine other than the one running the tests."""
    for entry in pwd.getpwall():
        if entry.pw_uid != UID:
            return pwd.getpwuid(entry.pw_uid)  # the name the uid maps back to
    pytest.skip("only one user on this machine")


def _unused_gid() -> int:
    gid = 54321
    while True:
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
        gid += 1


def _other_group() -> grp.struct_group:
    """A group of this machine that the test user's primary group is not."""
    for entry in grp.getgrall():
        if entry.gr_gid != GID:
            return entry
    pytest.skip("only one group on this machine")


@pytest.fixture(autouse=True)
def _fresh_lookups() -> None:
    peers._user_name.cache_clear()
    peers._group_id.cache_clear()
    peers._groups.cache_clear()


def unix(uid: int | None = UID, gid: int | None = GID, pid: int = 77, listener: str | None = "unix:/run/gw.sock") -> Peer:
    return Peer(transport="unix", listener=listener, uid=uid, gid=gid, pid=pid)


def tls(cn: str | None = None, fp: str | None = None, listener: str | None = "ssl:8443", address: str = "10.0.0.7:40000") -> Peer:
    return Peer(transport="tls", listener=listener, address=address, common_name=cn, fingerprint=fp)


FP_HEX = "0123456789abcdef" * 4  # 64 hex digits
FP_COLONS = ":".join(FP_HEX[i : i + 2] for i in range(0, 64, 2)).upper()


# -- PeerRule ------------------------------------------------------------------


class TestPeerRule:
    def test_uid(self) -> None:
        rule = PeerRule(kind="uid", value=UID)
        assert rule.matches(unix())
        assert not rule.matches(unix(uid=UID + 1))

    def test_no_credentials_never_match(self) -> None:
        for rule in (
            PeerRule(kind="uid", value=UID),
            PeerRule(kind="user", value=ME),
            PeerRule(kind="gid", value=GID),
            PeerRule(kind="group", value=grp.getgrgid(GID).gr_name),
        ):
            assert rule.matches(unix())
            assert not rule.matches(unix(uid=None, gid=GID))
            assert not rule.matches(tls(cn="x"))

    def test_user(self) -> None:
        other = _other_user()
        rule = PeerRule(kind="user", value=ME)
        assert rule.matches(unix())
        assert not rule.matches(unix(uid=other.pw_uid))
        assert not rule.matches(unix(uid=_unused_uid()))
        assert PeerRule(kind="user", value=other.pw_name).matches(unix(uid=other.pw_uid, gid=other.pw_gid))

    def test_gid_primary(self) -> None:
        assert PeerRule(kind="gid", value=GID).matches(unix())
        assert not PeerRule(kind="gid", value=_unused_gid()).matches(unix())

    def test_gid_supplementary(self, monkeypatch: pytest.MonkeyPatch) -> None:
        extra = _unused_gid()
        rule = PeerRule(kind="gid", value=extra)
        assert not rule.matches(unix())
        peers._groups.cache_clear()
        asked: list[tuple[str, int]] = []

        def getgrouplist(user: str, gid: int) -> list[int]:
            asked.append((user, gid))
            return [gid, extra]

        monkeypatch.setattr(peers.os, "getgrouplist", getgrouplist)
        assert rule.matches(unix())
        assert asked == [(ME, GID)]

    def test_group_by_name(self, monkeypatch: pytest.MonkeyPatch) -> None:
        other = _other_group()
        rule = PeerRule(kind="group", value=other.gr_name)
        assert rule.matches(unix(gid=other.gr_gid))
        if other.gr_gid not in os.getgrouplist(ME, GID):
            assert not rule.matches(unix())
        monkeypatch.setattr(peers.os, "getgrouplist", lambda user, gid: [gid, other.gr_gid])
        peers._groups.cache_clear()
        assert rule.matches(unix())
        assert not PeerRule(kind="group", value="no-such-group-twisted-mcp").matches(unix())

    def test_groups_of_an_unknown_user(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A uid without a passwd entry has only its primary group."""
        extra = _unused_gid()

        def getgrouplist(user: str, gid: int) -> list[int]:
            raise AssertionError("no user name to ask about")

        monkeypatch.setattr(peers.os, "getgrouplist", getgrouplist)
        nobody = _unused_uid()
        assert PeerRule(kind="gid", value=GID).matches(unix(uid=nobody))
        assert not PeerRule(kind="gid", value=extra).matches(unix(uid=nobody))

    def test_grouplist_fails(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def getgrouplist(user: str, gid: int) -> list[int]:
            raise OSError("nss is broken")

        monkeypatch.setattr(peers.os, "getgrouplist", getgrouplist)
        assert PeerRule(kind="gid", value=GID).matches(unix())
        assert not PeerRule(kind="gid", value=_unused_gid()).matches(unix())

    def test_principal(self) -> None:
        assert PeerRule(kind="uid", value=UID, name="ci-bot", roles=("ci",)).principal(unix()) == Principal(
            name="ci-bot", roles=("ci",), source="peer"
        )
        assert PeerRule(kind="uid", value=UID, roles=("dev",)).principal(unix()) == Principal(name=ME, roles=("dev",), source="peer")
        nobody = _unused_uid()
        assert PeerRule(kind="uid", value=nobody).principal(unix(uid=nobody)).name == f"uid-{nobody}"


# -- CertificateRule ---------------------------------------------------------


class TestCertificateRule:
    def test_common_name_glob(self) -> None:
        rule = CertificateRule(commonName="*.ops.example.com", roles=("admin",))
        assert rule.matches(tls("alice.ops.example.com"))
        assert rule.matches(tls("a.b.ops.example.com"))
        assert not rule.matches(tls("ops.example.com"))
        assert not rule.matches(tls("alice.ops.example.com.evil.org"))
        assert not rule.matches(tls("ALICE.OPS.EXAMPLE.COM"))  # case-sensitive
        assert not rule.matches(tls(None, FP_COLONS))
        assert CertificateRule(commonName="client").matches(tls("client"))
        assert not CertificateRule(commonName="client").matches(tls("client2"))

    @pytest.mark.parametrize(
        "written",
        [
            FP_COLONS,
            FP_COLONS.lower(),
            FP_HEX,
            FP_HEX.upper(),
            "sha256:" + FP_COLONS,
            "SHA256:" + FP_HEX,
            "sha256:" + FP_COLONS.lower(),
        ],
    )
    def test_fingerprint_normalised(self, written: str) -> None:
        rule = CertificateRule(fingerprint=written)
        assert rule.matches(tls("anyone", FP_COLONS))
        assert rule.matches(tls(None, FP_HEX))
        other = FP_COLONS[:-1] + ("0" if FP_COLONS[-1] != "0" else "1")
        assert not rule.matches(tls("anyone", other))
        assert not rule.matches(tls("anyone", None))

    def test_fingerprint_rule_ignores_common_name(self) -> None:
        rule = CertificateRule(fingerprint=FP_HEX)
        assert not rule.matches(tls(FP_HEX))

    def test_principal(self) -> None:
        assert CertificateRule(commonName="*", name="backup", roles=("b",)).principal(tls("host1")) == Principal(
            name="backup", roles=("b",), source="certificate"
        )
        assert CertificateRule(commonName="*").principal(tls("host1")).name == "host1"
        assert CertificateRule(fingerprint=FP_HEX).principal(tls(None, FP_COLONS)).name == "certificate"


# -- ConnectionIdentity -------------------------------------------------------

DEFAULT = Principal(name="guest", roles=("viewer",), source="config")
AT_LISTENER = Principal(name="unix-listener", roles=("l",), source="listener")
AT_TLS_LISTENER = Principal(name="tls-listener", roles=("t",), source="listener")


def identity(default: Principal | None = DEFAULT, **kw: Any) -> ConnectionIdentity:
    fields: dict[str, Any] = {
        "principal": default,
        "peers": (PeerRule(kind="uid", value=UID, name="by-uid", roles=("p",)),),
        "certificates": (CertificateRule(commonName="client", name="by-cert", roles=("c",)),),
        "listeners": (("unix:/run/gw.sock", AT_LISTENER), ("ssl:8443", AT_TLS_LISTENER)),
    }
    fields.update(kw)
    return ConnectionIdentity(IdentityConfig(**fields), None)


class TestResolveOrder:
    def test_peer_rule_first(self) -> None:
        assert identity().resolve(unix()).name == "by-uid"
        both = Peer(transport="tls", listener="ssl:8443", uid=UID, gid=GID, pid=1, common_name="client")
        assert identity().resolve(both).name == "by-uid"

    def test_then_certificate(self) -> None:
        assert identity().resolve(tls("client")).name == "by-cert"
        assert identity().resolve(tls("client")).source == "certificate"

    def test_then_listener(self) -> None:
        other = _unused_uid()
        assert identity().resolve(unix(uid=other)) is AT_LISTENER
        assert identity().resolve(tls("stranger")) is AT_TLS_LISTENER
        assert identity().resolve(tls(None, None)) is AT_TLS_LISTENER
        assert identity().resolve(Peer(transport="tcp", listener="ssl:8443", address="1.2.3.4:5")) is AT_TLS_LISTENER

    def test_then_default(self) -> None:
        other = _unused_uid()
        assert identity().resolve(unix(uid=other, listener="unix:/elsewhere")) is DEFAULT
        assert identity().resolve(tls("stranger", listener="ssl:9999")) is DEFAULT
        assert identity().resolve(Peer(transport="tcp", listener="tcp:1", address="1.2.3.4:5")) is DEFAULT

    def test_unknown_unix_peer(self) -> None:
        user = _other_user()
        with pytest.raises(IdentityError) as e:
            identity(default=None).resolve(unix(uid=user.pw_uid, gid=user.pw_gid, pid=4321, listener="unix:/elsewhere"))
        assert e.value.reason == "unknown-peer"
        message = e.value.message
        assert f"uid {user.pw_uid} ({user.pw_name}), gid {user.pw_gid}, pid 4321" in message
        assert message.endswith("add it to identity.peers")

    def test_unknown_uid_without_a_name(self) -> None:
        nobody = _unused_uid()
        with pytest.raises(IdentityError) as e:
            identity(default=None).resolve(unix(uid=nobody, gid=5, pid=6, listener=None))
        assert f"(uid {nobody}, gid 5, pid 6)" in e.value.message

    def test_unknown_tls_peer(self) -> None:
        with pytest.raises(IdentityError) as e:
            identity(default=None).resolve(tls("mallory", FP_COLONS, listener="ssl:9999"))
        assert e.value.reason == "unknown-peer"
        assert f"TLS client 10.0.0.7:40000 with certificate CN='mallory' ({FP_COLONS})" in e.value.message
        assert e.value.message.endswith("add it to identity.certificates or identity.listeners")
        with pytest.raises(IdentityError) as e:
            identity(default=None).resolve(tls(None, None, listener="ssl:9999"))
        assert "TLS client 10.0.0.7:40000 without a certificate" in e.value.message

    def test_unknown_tcp_peer(self) -> None:
        with pytest.raises(IdentityError) as e:
            identity(default=None).resolve(Peer(transport="tcp", listener="tcp:1", address="127.0.0.1:5555"))
        assert "(tcp client 127.0.0.1:5555)" in e.value.message
        assert "identity.certificates or identity.listeners" in e.value.message

    def test_policy_refuses_with_the_reason(self) -> None:
        policy = Policy(PolicyConfig(), "__", Clock(), identity(default=None).resolve)
        with pytest.raises(JsonRpcError) as e:
            policy.principal(unix(uid=_unused_uid(), listener=None))
        assert e.value.code == errors.AUTHENTICATION_FAILED
        assert "identity.peers" in e.value.message

    def test_per_connection(self) -> None:
        assert not ConnectionIdentity(None, None).per_connection
        assert not ConnectionIdentity(IdentityConfig(jwt=JwtConfig(tokenEnv="T", algorithms=("HS256",))), None).per_connection
        assert ConnectionIdentity(IdentityConfig(principal=DEFAULT), None).per_connection
        assert ConnectionIdentity(IdentityConfig(peers=(PeerRule(kind="uid", value=1),)), None).per_connection
        assert ConnectionIdentity(IdentityConfig(certificates=(CertificateRule(commonName="x"),)), None).per_connection
        assert ConnectionIdentity(IdentityConfig(listeners=(("tcp:1", DEFAULT),)), None).per_connection


class CountingRule:
    """Duck-types a PeerRule, counting how often it is asked."""

    def __init__(self, principal: Principal) -> None:
        self.asked = 0
        self._principal = principal

    def matches(self, peer: Peer) -> bool:
        self.asked += 1
        return True

    def principal(self, peer: Peer) -> Principal:
        return self._principal


class TestCache:
    def test_once_per_user(self) -> None:
        rule = CountingRule(Principal(name="p", source="peer"))
        ident = ConnectionIdentity(IdentityConfig(peers=(rule,)), None)  # type: ignore[arg-type]
        first = ident.resolve(unix())
        assert ident.resolve(unix()) is first
        assert rule.asked == 1
        ident.resolve(unix(pid=78))  # another process of the same user: no new lookup
        assert rule.asked == 1
        ident.resolve(unix(uid=4242))
        assert rule.asked == 2
        ident.resolve(unix(uid=4242, pid=79))
        assert rule.asked == 2

    def test_bounded(self) -> None:
        rule = CountingRule(Principal(name="p", source="peer"))
        ident = ConnectionIdentity(IdentityConfig(peers=(rule,)), None)  # type: ignore[arg-type]
        for uid in range(10005):
            ident.resolve(unix(uid=uid))
        assert len(ident._cache) <= 10001


class TestStdio:
    jwt = JwtConfig(tokenEnv="T", algorithms=("HS256",), secret="s" * 32)

    def test_jwt_authenticator_on_every_call(self) -> None:
        names = iter(["first", "second", "third"])
        calls: list[str] = []

        def authenticate() -> Principal:
            calls.append("x")
            return Principal(name=next(names), source="jwt")

        own = PeerRule(kind="uid", value=UID, name="by-uid")
        ident = ConnectionIdentity(IdentityConfig(jwt=self.jwt, peers=(own,)), authenticate)
        assert ident.uses_token
        assert ident.resolve(None).name == "first"
        assert ident.resolve(None).name == "second"  # not cached: expiry is checked every time
        assert ident.resolve(Peer(transport="stdio")).name == "third"
        assert len(calls) == 3

    def test_jwt_failure_propagates(self) -> None:
        def authenticate() -> Principal:
            raise IdentityError("the token has expired", "expired")

        ident = ConnectionIdentity(IdentityConfig(jwt=self.jwt, principal=None), authenticate)
        with pytest.raises(IdentityError) as e:
            ident.resolve(None)
        assert e.value.reason == "expired"

    def test_default_principal(self) -> None:
        def authenticate() -> Principal:
            raise AssertionError("no token is configured")

        own = PeerRule(kind="uid", value=UID, name="by-uid")
        ident = ConnectionIdentity(IdentityConfig(principal=DEFAULT, peers=(own,)), authenticate)
        assert ident.resolve(None) is DEFAULT
        assert ident.resolve(STDIO) is DEFAULT

    def test_own_uid_against_peers(self) -> None:
        ident = ConnectionIdentity(IdentityConfig(peers=(PeerRule(kind="user", value=ME, roles=("dev",)),)), None)
        assert ident.resolve(None) == Principal(name=ME, roles=("dev",), source="peer")
        assert STDIO.uid == UID and STDIO.gid == GID and STDIO.pid == os.getppid()

    def test_nothing_for_stdio(self) -> None:
        ident = ConnectionIdentity(IdentityConfig(peers=(PeerRule(kind="uid", value=_unused_uid()),)), None)
        with pytest.raises(IdentityError) as e:
            ident.resolve(None)
        assert e.value.reason == "unknown-peer"
        assert f"uid {UID} ({ME})" in e.value.message
        assert e.value.message.endswith("add it to identity.principal or an identity.peers entry")


# -- reading a connection -----------------------------------------------------


class FakeTransport:
    """What peer_of reads: getPeer() and socket (or transport.socket under TLS)."""

    def __init__(self, sock: Any = None, peer: Any = None, inner: Any = None) -> None:
        if sock is not None:
            self.socket = sock
        if inner is not None:
            self.transport = inner
        self._peer = peer

    def getPeer(self) -> Any:
        if isinstance(self._peer, Exception):
            raise self._peer
        return self._peer


class FakeTLSTransport(FakeTransport):
    def __init__(self, cert: Any = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.cert = cert

    def getPeerCertificate(self) -> Any:
        if isinstance(self.cert, Exception):
            raise self.cert
        return self.cert


@pytest.fixture
def socketpair() -> Any:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a
    a.close()
    b.close()


class TestPeerOf:
    def test_unix_credentials(self, socketpair: socket.socket) -> None:
        peer = peer_of(FakeTransport(socketpair, UNIXAddress(None)), "unix:/run/gw.sock")
        assert peer == Peer(transport="unix", listener="unix:/run/gw.sock", uid=UID, gid=GID, pid=os.getpid())

    def test_unix_under_tls(self, socketpair: socket.socket) -> None:
        inner = FakeTransport(socketpair, UNIXAddress(None))
        peer = peer_of(FakeTLSTransport(inner=inner, peer=UNIXAddress(None)), "unix:/s")
        assert (peer.transport, peer.uid, peer.gid, peer.pid) == ("unix", UID, GID, os.getpid())

    def test_unix_credentials_unreadable(self) -> None:
        a, b = socket.socketpair(socket.AF_UNIX)
        b.close()
        a.close()  # getsockopt on a closed socket raises OSError
        peer = peer_of(FakeTransport(a, UNIXAddress(None)), "unix:/s")
        assert peer == Peer(transport="unix", listener="unix:/s")

    def test_tcp(self) -> None:
        with socket.socket(socket.AF_INET) as sock:
            peer = peer_of(FakeTransport(sock, IPv4Address("TCP", "127.0.0.1", 5555)), "tcp:8765")
        assert peer == Peer(transport="tcp", listener="tcp:8765", address="127.0.0.1:5555")

    def test_tls(self) -> None:
        with socket.socket(socket.AF_INET) as sock:
            transport = FakeTLSTransport(inner=FakeTransport(sock), peer=IPv4Address("TCP", "10.1.2.3", 443))
            peer = peer_of(transport, "ssl:8443")
        assert peer == Peer(transport="tls", listener="ssl:8443", address="10.1.2.3:443")

    def test_never_raises(self) -> None:
        peer = peer_of(FakeTransport(peer=RuntimeError("gone")), None)
        assert peer == Peer(transport="tcp", listener=None, address=None)

    def test_large_uid(self) -> None:
        class Sock:
            family = socket.AF_UNIX

            def getsockopt(self, level: int, option: int, size: int) -> bytes:
                assert (level, option) == (socket.SOL_SOCKET, socket.SO_PEERCRED)
                return struct.pack("iII", 42, 3_000_000_000, 3_000_000_001)

        peer = peer_of(FakeTransport(Sock()), "unix:/s")
        assert (peer.pid, peer.uid, peer.gid) == (42, 3_000_000_000, 3_000_000_001)
        assert PeerRule(kind="uid", value=3_000_000_000).matches(peer)


def make_cert(cn: str | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "twisted-mcp tests")]
    if cn is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    name = x509.Name(attributes)
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )


class TestWithCertificate:
    def test_common_name_and_fingerprint(self) -> None:
        cert = make_cert("alice.ops.example.com")
        openssl_cert = crypto.X509.from_cryptography(cert)
        before = tls(None, None)
        peer = with_certificate(before, FakeTLSTransport(cert=openssl_cert))
        expected = ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
        assert peer.common_name == "alice.ops.example.com"
        assert peer.fingerprint == expected
        assert peer.fingerprint == openssl_cert.digest("sha256").decode()
        assert (peer.transport, peer.listener, peer.address) == (before.transport, before.listener, before.address)
        # Either way of writing the fingerprint in the config names this client.
        hexed = cert.fingerprint(hashes.SHA256()).hex()
        ident = ConnectionIdentity(IdentityConfig(certificates=(CertificateRule(fingerprint=f"sha256:{hexed}", name="backup"),)), None)
        assert ident.resolve(peer).name == "backup"
        assert ConnectionIdentity(IdentityConfig(certificates=(CertificateRule(commonName="*.ops.example.com"),)), None).resolve(
            peer
        ).name == "alice.ops.example.com"

    def test_without_common_name(self) -> None:
        cert = make_cert(None)
        peer = with_certificate(tls(), FakeTLSTransport(cert=crypto.X509.from_cryptography(cert)))
        assert peer.common_name is None
        assert peer.fingerprint == crypto.X509.from_cryptography(cert).digest("sha256").decode()

    @pytest.mark.parametrize("cert", [None, RuntimeError("no handshake yet"), object()])
    def test_nothing_to_add(self, cert: Any) -> None:
        before = tls()
        assert with_certificate(before, FakeTLSTransport(cert=cert)) is before


# -- configuration ------------------------------------------------------------


def write(tmp_path: Path, identity_section: Any) -> str:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"mcpServers": {}, "identity": identity_section}))
    return str(path)


def problems(tmp_path: Path, identity_section: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, identity_section), environ={})
    return e.value.problems


def has(found: list[str], path: str, *words: str) -> None:
    for p in found:
        if p.startswith(path + ": ") and all(w in p for w in words):
            return
    raise AssertionError(f"no problem about {path!r} mentioning {words!r} in {found!r}")


class TestConfig:
    def test_valid(self, tmp_path: Path) -> None:
        group = grp.getgrgid(GID).gr_name
        config = load(
            write(
                tmp_path,
                {
                    "peers": [
                        {"user": ME, "roles": ["admin"]},
                        {"uid": 1001, "name": "ci-bot", "roles": ["ci", "ci", "deploy"]},
                        {"group": group},
                        {"gid": 0, "roles": []},
                    ],
                    "certificates": [
                        {"commonName": "*.ops.example.com", "roles": ["admin"]},
                        {"fingerprint": "sha256:" + FP_COLONS, "name": "backup", "roles": ["backup"]},
                    ],
                    "listeners": {"tcp:8765:interface=127.0.0.1": {"name": "ci", "roles": ["ci"]}},
                },
            ),
            environ={},
        )
        ident = config.identity
        assert ident.principal is None and ident.jwt is None
        assert ident.peers == (
            PeerRule(kind="user", value=ME, roles=("admin",)),
            PeerRule(kind="uid", value=1001, name="ci-bot", roles=("ci", "deploy")),
            PeerRule(kind="group", value=group),
            PeerRule(kind="gid", value=0),
        )
        assert ident.certificates == (
            CertificateRule(commonName="*.ops.example.com", roles=("admin",)),
            CertificateRule(fingerprint="sha256:" + FP_COLONS, name="backup", roles=("backup",)),
        )
        assert ident.listeners == (("tcp:8765:interface=127.0.0.1", Principal(name="ci", roles=("ci",), source="listener")),)

    def test_peer_problems(self, tmp_path: Path) -> None:
        found = problems(
            tmp_path,
            {
                "peers": [
                    {"user": "no-such-user-twisted-mcp", "roles": ["x"]},
                    {"uid": 1, "user": ME},
                    {"name": "nobody-at-all"},
                    {"group": "no-such-group-twisted-mcp"},
                    {"uid": -1},
                    {"gid": "wheel"},
                    {"uid": 5, "colour": "red"},
                    {"uid": 6, "roles": "dev"},
                    "root",
                ]
            },
        )
        has(found, "identity.peers[0].user", "no such user on this machine", "'no-such-user-twisted-mcp'")
        has(found, "identity.peers[1]", "expected exactly one of uid, user, gid or group")
        has(found, "identity.peers[2]", "expected exactly one of uid, user, gid or group")
        has(found, "identity.peers[3].group", "no such group on this machine", "'no-such-group-twisted-mcp'")
        has(found, "identity.peers[4].uid", "whole number from 0 to 4294967295")
        has(found, "identity.peers[5].gid", "whole number")
        has(found, "identity.peers[6].colour", "unknown key")
        has(found, "identity.peers[7].roles", "list of strings")
        has(found, "identity.peers[8]", "expected a mapping")
        has(problems(tmp_path, {"peers": {"uid": 1}}), "identity.peers", "expected a list")

    def test_certificate_problems(self, tmp_path: Path) -> None:
        found = problems(
            tmp_path,
            {
                "certificates": [
                    {"commonName": "a", "fingerprint": FP_HEX},
                    {"fingerprint": "sha256:AB:CD"},
                    {"fingerprint": "zz" * 32},
                    {"name": "x"},
                    {"commonName": ""},
                    {"commonName": "b", "cn": "c"},
                ]
            },
        )
        has(found, "identity.certificates[0]", "exactly one of commonName", "fingerprint")
        has(found, "identity.certificates[1].fingerprint", "64 hex digits")
        has(found, "identity.certificates[2].fingerprint", "64 hex digits")
        has(found, "identity.certificates[3]", "exactly one of commonName")
        has(found, "identity.certificates[4].commonName", "non-empty")
        has(found, "identity.certificates[5].cn", "unknown key")
        has(problems(tmp_path, {"certificates": "CN=x"}), "identity.certificates", "expected a list")

    def test_listener_problems(self, tmp_path: Path) -> None:
        has(problems(tmp_path, {"listeners": ["tcp:8765"]}), "identity.listeners", "expected a mapping")
        found = problems(tmp_path, {"listeners": {"tcp:8765:interface=127.0.0.1": {"roles": ["ci"]}, "unix:/s": "ci"}})
        has(found, 'identity.listeners["tcp:8765:interface=127.0.0.1"].name', "missing")
        has(found, 'identity.listeners["unix:/s"]', "expected a mapping")
