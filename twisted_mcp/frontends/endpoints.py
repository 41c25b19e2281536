"""
Listening endpoints from Twisted endpoint strings, plus one parameter
Twisted's C{ssl:} parser does not have: C{clientCA=PATH}, a PEM bundle of
the certificate authorities whose client certificates the listener
accepts.  With it, a client must present a certificate signed by one of
them (the TLS handshake fails otherwise), and the certificate names the
client's principal (C{identity.certificates}).

    ssl:8443:privateKey=server-key.pem:certKey=server.pem:clientCA=clients-ca.pem

And one parameter of C{tcp:} and C{tcp6:}: C{reusePort=yes}, which sets
C{SO_REUSEPORT} (Linux) on the listening socket, so that several gateway
processes listen on one port and the kernel spreads new connections over
them (L{ReusePortEndpoint}):

    tcp:8080:interface=127.0.0.1:reusePort=yes
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import sys
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

_SSL_KEYS = {"port", "privateKey", "certKey", "interface", "backlog", "extraCertChain", "clientCA"}
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def server_endpoint(reactor: Any, description: str) -> Any:
    """
    An L{IStreamServerEndpoint} for C{description}; raises ValueError for a
    bad one and L{OSError} when a Unix socket's path is in use.
    """
    if "reusePort=" in description:
        return _reuse_port(reactor, description)
    if description.startswith("unix:"):
        return serverFromString(reactor, _unix(description))
    if not (description.startswith("ssl:") and "clientCA=" in description):
        return serverFromString(reactor, description)
    args, kw = _parse(description[4:])
    unknown = set(kw) - _SSL_KEYS
    if unknown:
        raise ValueError(f"unknown ssl: parameter(s) with clientCA: {', '.join(sorted(unknown))}")
    if args:
        kw.setdefault("port", args[0])
    if "port" not in kw:
        raise ValueError("ssl: needs a port")
    from twisted.internet import ssl

    private_key = kw.get("privateKey", "server.pem")
    cert_key = kw.get("certKey", private_key)
    with open(cert_key, "rb") as f:
        cert_pem = f.read()
    with open(private_key, "rb") as f:
        key_pem = f.read()
    with open(kw["clientCA"], "rb") as f:
        authorities = [ssl.Certificate.loadPEM(block).original for block in _PEM_CERT.findall(f.read())]
    if not authorities:
        raise ValueError(f"clientCA {kw['clientCA']}: no PEM certificate in it")
    chain = []
    if "extraCertChain" in kw:
        with open(kw["extraCertChain"], "rb") as f:
            chain = [ssl.Certificate.loadPEM(block).original for block in _PEM_CERT.findall(f.read())]
    private = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    options = ssl.CertificateOptions(
        privateKey=private.privateKey.original,
        certificate=private.original,
        extraCertChain=chain or None,
        verify=True,
        requireCertificate=True,
        caCerts=authorities,
    )
    return SSL4ServerEndpoint(
        reactor, int(kw["port"]), options, backlog=int(kw.get("backlog", 50)), interface=kw.get("interface", "")
    )


#: The parameters of C{tcp:} and C{tcp6:} with C{reusePort}.
_TCP_KEYS = {"port", "interface", "backlog", "reusePort"}
_YES, _NO = ("yes", "true", "1"), ("no", "false", "0")


def reuse_port_supported(platform: str = sys.platform) -> str | None:
    """
    Why C{reusePort=yes} cannot work here, or None when it can: only Linux
    spreads the connections of one port over the processes listening on it
    (BSD and macOS have C{SO_REUSEPORT} but give them all to one process).
    """
    if not platform.startswith("linux"):
        return (
            f"reusePort=yes needs Linux (its SO_REUSEPORT spreads one port's connections over several processes; "
            f"this system is {platform}): run one gateway per port, or several behind a load balancer"
        )
    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - a Linux Python always has it
        return "reusePort=yes needs SO_REUSEPORT, which this Python's socket module does not have"
    return None


def _reuse_port(reactor: Any, description: str, platform: str = sys.platform) -> Any:
    """
    C{tcp:} or C{tcp6:} with C{reusePort}: a L{ReusePortEndpoint} for
    C{yes}, Twisted's own endpoint for C{no}; ValueError for anything else.
    """
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"reusePort is a parameter of tcp: and tcp6: endpoints only, not of {kind}:")
    args, kw = _parse(rest)
    unknown = set(kw) - _TCP_KEYS
    if unknown:
        raise ValueError(
            f"unknown {kind}: parameter(s) with reusePort: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(_TCP_KEYS))})"
        )
    if len(args) > 1 or (args and "port" in kw):
        raise ValueError(f"{kind}: takes one port, e.g. {kind}:8080:reusePort=yes")
    flag = kw.pop("reusePort").lower()
    if flag in _NO:
        parts = [p for p in _split(rest) if not p.startswith("reusePort=")]
        return serverFromString(reactor, f"{kind}:" + ":".join(parts))
    if flag not in _YES:
        raise ValueError(f"reusePort must be yes or no, not {flag!r}")
    problem = reuse_port_supported(platform)
    if problem is not None:
        raise ValueError(problem)
    port_text = args[0] if args else kw.get("port", "")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{kind}: needs a port number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{kind}: port {port} is out of range (0 to 65535)")
    try:
        backlog = int(kw.get("backlog", "50"))
    except ValueError:
        raise ValueError(f"backlog must be a number, not {kw['backlog']!r}") from None
    if backlog < 1:
        raise ValueError(f"backlog must be at least 1, not {backlog}")
    interface = kw.get("interface", "::" if kind == "tcp6" else "")
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    return ReusePortEndpoint(reactor, port, backlog, interface, family)


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """
    A TCP listener whose socket has C{SO_REUSEADDR} and C{SO_REUSEPORT}:
    every process that listens on the same address and port this way (as
    the same user) gets a share of the new connections, the kernel
    choosing by a hash of each connection's addresses.  A process that
    did not set C{SO_REUSEPORT} holding the port still makes the bind fail
    (C{EADDRINUSE}), as for any listener.

    The socket is made here, bound and listening, and handed to the
    reactor (C{adoptStreamPort}, which keeps its own copy of the
    descriptor and closes it when the port stops listening); this
    endpoint's descriptor is closed as soon as the reactor has its copy.
    """

    def __init__(self, reactor: Any, port: int, backlog: int = 50, interface: str = "", family: int = socket.AF_INET) -> None:
        self._reactor = reactor
        self.port = port
        self.backlog = backlog
        self.interface = interface
        self.family = family

    def listen(self, factory: Any) -> Deferred[Any]:
        """Bind and listen now; fires the L{IListeningPort}, or fails with L{CannotListenError}."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.interface, self.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
            port = self._reactor.adoptStreamPort(sock.fileno(), self.family, factory)
        except OSError as e:
            return fail(CannotListenError(self.interface, self.port, e))
        finally:
            sock.close()  # the reactor listens on its own copy
        return succeed(port)


def _unix(description: str) -> str:
    """
    A Unix socket without Twisted's lock file (it would name the pid that
    bound the socket, which is not the daemon's once twistd forks), checked
    here instead: a live socket at the path is an error, a stale one (its
    server gone) is removed.
    """
    args, kw = _parse(description[5:])
    path = kw.get("address") or (args[0] if args else "")
    if path and not path.startswith("\0") and os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.settimeout(2)
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: nobody accepts on it
        except PermissionError:
            raise OSError(errno.EACCES, f"{path} exists and this user may not connect to it (another gateway's?)")
        except OSError:
            # Busy (a full backlog) or slow: someone is there.
            raise OSError(errno.EADDRINUSE, f"another process is serving on {path} (it did not accept at once)")
        else:
            raise OSError(errno.EADDRINUSE, f"another process is serving on {path}")
        finally:
            probe.close()
    parts = [p for p in _split(description[5:]) if not p.startswith("lockfile=")]
    return "unix:" + ":".join(parts) + ":lockfile=0"


def _split(text: str) -> list[str]:
    """The raw parameters (escapes kept) split on unescaped colons."""
    parts, current, i = [], "", 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current += text[i : i + 2]
            i += 2
            continue
        if c == ":":
            parts.append(current)
            current = ""
        else:
            current += c
        i += 1
    parts.append(current)
    return parts


def _parse(text: str) -> tuple[list[str], dict[str, str]]:
    """Positional and C{key=value} parameters, escapes undone (C{\\:} is a colon)."""
    args, kw = [], {}
    for raw in _split(text):
        part = re.sub(r"\\(.)", r"\1", raw)
        if "=" in part:
            k, v = part.split("=", 1)
            kw[k] = v
        else:
            args.append(part)
    return args, kw
