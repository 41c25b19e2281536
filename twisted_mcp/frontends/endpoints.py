"""
Listening endpoints from Twisted endpoint strings, plus one parameter
Twisted's C{ssl:} parser does not have: C{clientCA=PATH}, a PEM bundle of
the certificate authorities whose client certificates the listener
accepts.  With it, a client must present a certificate signed by one of
them (the TLS handshake fails otherwise), and the certificate names the
client's principal (C{identity.certificates}).

    ssl:8443:privateKey=server-key.pem:certKey=server.pem:clientCA=clients-ca.pem
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
from typing import Any

from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString

_SSL_KEYS = {"port", "privateKey", "certKey", "interface", "backlog", "extraCertChain", "clientCA"}
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def server_endpoint(reactor: Any, description: str) -> Any:
    """
    An L{IStreamServerEndpoint} for C{description}; raises ValueError for a
    bad one and L{OSError} when a Unix socket's path is in use.
    """
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
