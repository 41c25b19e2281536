"""
Tests for L{twisted_mcp.frontends.endpoints}: endpoint-string escapes, Unix sockets
without a lock file (stale ones removed, live ones refused), and C{ssl:}
with C{clientCA} (a client certificate is required, checked here with an
in-memory TLS handshake).
"""

from __future__ import annotations

import datetime
import errno
import os
import socket
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.endpoints import SSL4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor

from tests.integration.certs import make
from twisted_mcp.frontends.endpoints import _parse, _split, server_endpoint

# The unit tests run in a scratch directory (conftest.py): relative socket
# paths stay well under the 108-byte limit of sun_path.


class TestParse:
    def test_args_and_keywords(self) -> None:
        assert _parse("8443:privateKey=k.pem:interface=127.0.0.1") == (["8443"], {"privateKey": "k.pem", "interface": "127.0.0.1"})

    def test_escaped_colons(self) -> None:
        assert _parse(r"8443:certKey=C\:\\certs\\a.pem:interface=\:\:1") == (
            ["8443"],
            {"certKey": "C:\\certs\\a.pem", "interface": "::1"},
        )
        assert _parse(r"/run/a\:b.sock") == (["/run/a:b.sock"], {})

    def test_equals_in_a_value(self) -> None:
        assert _parse("x=a=b") == ([], {"x": "a=b"})

    def test_trailing_backslash_kept(self) -> None:
        assert _parse("path\\") == (["path\\"], {})

    def test_empty_parts(self) -> None:
        assert _parse("") == ([""], {})
        assert _parse("a::b") == (["a", "", "b"], {})

    def test_split_keeps_escapes(self) -> None:
        assert _split(r"/run/a\:b.sock:mode=600:lockfile=1") == [r"/run/a\:b.sock", "mode=600", "lockfile=1"]
        assert _split(r"a\\:b") == [r"a\\", "b"]
        assert _split("path\\") == ["path\\"]


def listen_unix(description: str) -> tuple[Any, tuple[Any, ...]]:
    reactor = MemoryReactor()
    endpoint = server_endpoint(reactor, description)
    factory = Factory.forProtocol(Protocol)
    endpoint.listen(factory)
    ((address, got_factory, backlog, mode, want_pid),) = reactor.unixServers
    assert got_factory is factory
    return endpoint, (address, backlog, mode, want_pid)


def stale_socket(path: str, listen: bool = False) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    if listen:
        s.listen(1)
    s.close()
    assert os.path.exists(path)


class TestUnix:
    def test_no_lock_file(self) -> None:
        endpoint, listened = listen_unix("unix:gw.sock")
        assert isinstance(endpoint, UNIXServerEndpoint)
        assert listened == ("gw.sock", 50, 0o666, False)
        assert not os.path.exists("gw.sock")  # MemoryReactor binds nothing

    def test_lockfile_given_is_overridden(self) -> None:
        _, listened = listen_unix("unix:gw.sock:lockfile=1:mode=600:backlog=7")
        assert listened == ("gw.sock", 7, 0o600, False)
        _, listened = listen_unix("unix:address=gw.sock:lockfile=1")
        assert listened == ("gw.sock", 50, 0o666, False)

    @pytest.mark.parametrize("listened_once", [False, True])
    def test_stale_socket_removed(self, listened_once: bool) -> None:
        stale_socket("gw.sock", listen=listened_once)
        _, listened = listen_unix("unix:gw.sock")
        assert not os.path.exists("gw.sock")
        assert listened[0] == "gw.sock"

    def test_stale_socket_by_address_keyword(self) -> None:
        stale_socket("gw.sock")
        listen_unix("unix:address=gw.sock:mode=600")
        assert not os.path.exists("gw.sock")

    def test_escaped_colon_in_the_path(self) -> None:
        stale_socket("a:b.sock")
        _, listened = listen_unix(r"unix:a\:b.sock:mode=600")
        assert not os.path.exists("a:b.sock")
        assert listened == ("a:b.sock", 50, 0o600, False)

    def test_live_socket_refused(self) -> None:
        live = socket.socket(socket.AF_UNIX)
        try:
            live.bind("gw.sock")
            live.listen(1)
            with pytest.raises(OSError) as e:
                server_endpoint(MemoryReactor(), "unix:gw.sock:mode=600")
            assert e.value.errno == errno.EADDRINUSE
            assert "gw.sock" in str(e.value)
            assert os.path.exists("gw.sock")
        finally:
            live.close()

    def test_regular_file_refused(self) -> None:
        with open("gw.sock", "w") as f:
            f.write("precious\n")
        with pytest.raises(OSError) as e:
            server_endpoint(MemoryReactor(), "unix:gw.sock")
        assert e.value.errno == errno.EEXIST
        assert "gw.sock" in str(e.value) and "not a socket" in str(e.value)
        with open("gw.sock") as f:
            assert f.read() == "precious\n"

    def test_directory_refused(self) -> None:
        os.mkdir("gw.sock")
        with pytest.raises(OSError) as e:
            server_endpoint(MemoryReactor(), "unix:gw.sock")
        assert e.value.errno == errno.EEXIST
        assert os.path.isdir("gw.sock")

    def test_other_kinds_pass_through(self) -> None:
        reactor = MemoryReactor()
        server_endpoint(reactor, "tcp:8765:interface=127.0.0.1").listen(Factory.forProtocol(Protocol))
        ((port, _, backlog, interface),) = reactor.tcpServers
        assert (port, backlog, interface) == (8765, 50, "127.0.0.1")


# -- ssl: with clientCA -------------------------------------------------------


def other_ca(directory: str) -> dict[str, str]:
    """A second CA (its own name: OpenSSL finds issuers by name) and a client of it."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, issuer: str, key: Any, signer: Any, ca: bool) -> x509.Certificate:
        name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = {
        "ca.pem": build("another test CA", "another test CA", ca_key, ca_key, True).public_bytes(serialization.Encoding.PEM),
        "client.pem": build("other-client", "another test CA", client_key, ca_key, False).public_bytes(serialization.Encoding.PEM),
        "client-key.pem": client_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    out = {}
    for name, data in files.items():
        out[name] = os.path.join(directory, name)
        with open(out[name], "wb") as f:
            f.write(data)
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """A throwaway CA with a server and a client certificate, and another CA with a client."""
    return {"one": make(str(tmp_path_factory.mktemp("one"))), "two": other_ca(str(tmp_path_factory.mktemp("two")))}


def ssl_description(certs: dict[str, str], ca: str | None = None, extra: str = "") -> str:
    def esc(path: str) -> str:
        return path.replace("\\", "\\\\").replace(":", "\\:")

    d = f"ssl:0:privateKey={esc(certs['server-key.pem'])}:certKey={esc(certs['server.pem'])}"
    if ca is not None:
        d += f":clientCA={esc(ca)}"
    return d + extra


def client_context(trust: str, cert: str | None = None, key: str | None = None) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(trust)
    ctx.set_verify(SSL.VERIFY_PEER, lambda conn, x509, errnum, depth, ok: bool(ok))
    if cert is not None:
        ctx.use_certificate_file(cert)
        ctx.use_privatekey_file(key)
    return ctx


def handshake(server_ctx: SSL.Context, client_ctx: SSL.Context) -> tuple[SSL.Connection, Exception | None]:
    """Run a TLS handshake in memory; return the server side and its error, if any."""
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    client = SSL.Connection(client_ctx, None)
    client.set_connect_state()
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, conn in (("client", client), ("server", server)):
            if done[name]:
                continue
            try:
                conn.do_handshake()
                done[name] = True
            except SSL.WantReadError:
                pass
            except SSL.Error as e:
                if name == "server":
                    return server, e
                done[name] = True  # the client learns later; the server's verdict is what counts
        if done["server"]:
            # TLS 1.3: the server verifies the client's certificate as the handshake ends;
            # reading application data surfaces anything left.
            try:
                server.recv(1)
            except SSL.WantReadError:
                pass
            except SSL.Error as e:
                return server, e
            return server, None
        for src, dst in ((client, server), (server, client)):
            try:
                data = src.bio_read(65536)
            except SSL.WantReadError:
                continue
            dst.bio_write(data)
    raise AssertionError("the handshake did not finish")


# Twisted's CertificateOptions hands pyOpenSSL its own X509/PKey objects, which
# pyOpenSSL now deprecates (and pytest.ini makes warnings errors).
@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL .* objects is deprecated:DeprecationWarning")
class TestSslClientCA:
    def test_endpoint(self, pki: dict[str, dict[str, str]]) -> None:
        one = pki["one"]
        reactor = MemoryReactor()
        endpoint = server_endpoint(reactor, ssl_description(one, one["ca.pem"], ":interface=127.0.0.1:backlog=9"))
        assert isinstance(endpoint, SSL4ServerEndpoint)
        factory = Factory.forProtocol(Protocol)
        endpoint.listen(factory)
        ((port, got, context_factory, backlog, interface),) = reactor.sslServers
        assert (port, got, backlog, interface) == (0, factory, 9, "127.0.0.1")
        mode = context_factory.getContext().get_verify_mode()
        assert mode & SSL.VERIFY_PEER
        assert mode & SSL.VERIFY_FAIL_IF_NO_PEER_CERT

    def test_port_keyword_and_escaped_interface(self, pki: dict[str, dict[str, str]]) -> None:
        one = pki["one"]
        description = ssl_description(one, one["ca.pem"], r":interface=\:\:1").replace("ssl:0:", "ssl:port=8443:")
        endpoint = server_endpoint(MemoryReactor(), description)
        assert (endpoint._port, endpoint._interface, endpoint._backlog) == (8443, "::1", 50)

    def test_client_certificate_required(self, pki: dict[str, dict[str, str]]) -> None:
        one = pki["one"]
        server_ctx = server_endpoint(MemoryReactor(), ssl_description(one, one["ca.pem"]))._sslContextFactory.getContext()
        server, error = handshake(server_ctx, client_context(one["ca.pem"], one["client.pem"], one["client-key.pem"]))
        assert error is None
        peer = server.get_peer_certificate(as_cryptography=True)
        assert peer is not None
        assert peer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "client"
        _, error = handshake(server_ctx, client_context(one["ca.pem"]))
        assert isinstance(error, SSL.Error)

    def test_client_of_another_ca_refused(self, pki: dict[str, dict[str, str]]) -> None:
        one, two = pki["one"], pki["two"]
        server_ctx = server_endpoint(MemoryReactor(), ssl_description(one, one["ca.pem"]))._sslContextFactory.getContext()
        _, error = handshake(server_ctx, client_context(one["ca.pem"], two["client.pem"], two["client-key.pem"]))
        assert isinstance(error, SSL.Error)

    def test_bundle_of_authorities(self, pki: dict[str, dict[str, str]], tmp_path: Any) -> None:
        one, two = pki["one"], pki["two"]
        bundle = tmp_path / "bundle.pem"
        with open(one["ca.pem"], "rb") as a, open(two["ca.pem"], "rb") as b:
            bundle.write_bytes(b"# client CAs\n" + a.read() + b"\n" + b.read())
        server_ctx = server_endpoint(MemoryReactor(), ssl_description(one, str(bundle)))._sslContextFactory.getContext()
        for certs in (one, two):
            _, error = handshake(server_ctx, client_context(one["ca.pem"], certs["client.pem"], certs["client-key.pem"]))
            assert error is None

    def test_key_and_certificate_in_one_file(self, pki: dict[str, dict[str, str]], tmp_path: Any) -> None:
        one = pki["one"]
        combined = tmp_path / "server-combined.pem"
        with open(one["server.pem"], "rb") as c, open(one["server-key.pem"], "rb") as k:
            combined.write_bytes(c.read() + k.read())
        description = f"ssl:0:privateKey={combined}:clientCA={one['ca.pem']}"
        server_ctx = server_endpoint(MemoryReactor(), description)._sslContextFactory.getContext()
        _, error = handshake(server_ctx, client_context(one["ca.pem"], one["client.pem"], one["client-key.pem"]))
        assert error is None

    def test_without_client_ca_no_certificate_needed(self, pki: dict[str, dict[str, str]]) -> None:
        one = pki["one"]
        endpoint = server_endpoint(MemoryReactor(), ssl_description(one))
        server_ctx = endpoint._sslContextFactory.getContext()
        assert not server_ctx.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        server, error = handshake(server_ctx, client_context(one["ca.pem"]))
        assert error is None
        assert server.get_peer_certificate() is None

    def test_unknown_parameter(self, pki: dict[str, dict[str, str]]) -> None:
        one = pki["one"]
        with pytest.raises(ValueError) as e:
            server_endpoint(MemoryReactor(), ssl_description(one, one["ca.pem"], ":sslmethod=TLSv1_2_METHOD:dhParameters=x"))
        assert "dhParameters, sslmethod" in str(e.value)

    def test_needs_a_port(self, pki: dict[str, dict[str, str]]) -> None:
        one = pki["one"]
        with pytest.raises(ValueError, match="needs a port"):
            server_endpoint(MemoryReactor(), f"ssl:privateKey={one['server-key.pem']}:clientCA={one['ca.pem']}")

    def test_empty_client_ca(self, pki: dict[str, dict[str, str]], tmp_path: Any) -> None:
        empty = tmp_path / "empty.pem"
        empty.write_text("")
        with pytest.raises(ValueError) as e:
            server_endpoint(MemoryReactor(), ssl_description(pki["one"], str(empty)))
        assert "no PEM certificate" in str(e.value) and str(empty) in str(e.value)

    def test_client_ca_without_certificates(self, pki: dict[str, dict[str, str]]) -> None:
        """A key is not a certificate authority."""
        one = pki["one"]
        with pytest.raises(ValueError, match="no PEM certificate"):
            server_endpoint(MemoryReactor(), ssl_description(one, one["client-key.pem"]))


def test_a_live_socket_with_a_full_backlog_is_not_removed(tmp_path) -> None:
    import errno as _errno
    import socket as _socket

    from twisted.internet.testing import MemoryReactor

    from twisted_mcp.frontends.endpoints import server_endpoint

    path = str(tmp_path / "busy.sock")
    listener = _socket.socket(_socket.AF_UNIX)
    listener.bind(path)
    listener.listen(0)
    fillers = []
    try:
        for _ in range(4):  # fill the backlog: further connects would block (EAGAIN)
            c = _socket.socket(_socket.AF_UNIX)
            c.setblocking(False)
            try:
                c.connect(path)
            except BlockingIOError:
                pass
            fillers.append(c)
        with pytest.raises(OSError) as e:
            server_endpoint(MemoryReactor(), f"unix:{path}")
        assert e.value.errno == _errno.EADDRINUSE
        assert os.path.exists(path)
    finally:
        for c in fillers:
            c.close()
        listener.close()
