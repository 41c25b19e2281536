"""
The C{state:} section: where replicas of one deployment share their state.

    state:
      redis: redis://[:PASSWORD@]HOST[:PORT][/DB]   # or unix:///path/to.sock[?db=N]
      namespace: twisted-mcp
      replica: ""              # default "<hostname>-<pid>"
      timeout: 0.5
      resyncInterval: 1.0
      leaseSeconds: 15
      breakers: local          # local | shared
      onUnavailable: {limits: refuse, killSwitch: refuse, sessions: local}

Absent: every kind of state stays in this process (L{parse_state} returns
None).  The URL may hold a password: it is kept out of C{repr}, and shown
only through L{StateSettings.describe_url}; no error quotes it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from typing import Any, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from twisted_mcp.config._check import _Checker, _describe, _join
from twisted_mcp.state.base import UNAVAILABLE_CHOICES, UNAVAILABLE_KINDS

_KEYS = (
    "redis",
    "namespace",
    "replica",
    "timeout",
    "resyncInterval",
    "leaseSeconds",
    "breakers",
    "onUnavailable",
)
_URL_FORMS = "redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:///path/to.sock[?db=N]"
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_REPLICA_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
#: Redis's own limit on the database number is its config (16 by default); this only refuses nonsense.
_MAX_DB = 1 << 20
DEFAULT_ON_UNAVAILABLE: Mapping[str, str] = {"limits": "refuse", "killSwitch": "refuse", "sessions": "local"}


@attrs.frozen
class RedisAddress:
    """Where a Redis listens, read from the C{redis:} URL: TCP (C{host}, C{port}) or a Unix socket (C{path})."""

    host: str | None
    port: int
    path: str | None
    db: int
    password: str | None = attrs.field(default=None, repr=False)

    def describe(self) -> str:
        """C{HOST:PORT} or C{unix:PATH}, for messages (no password)."""
        return f"unix:{self.path}" if self.path is not None else f"{self.host}:{self.port}"


@attrs.frozen
class StateSettings:
    """The C{state:} section, checked (see the module docstring)."""

    #: The URL, password and all: never log it, show L{describe_url}.
    redis: str = attrs.field(repr=False)
    namespace: str = "twisted-mcp"
    replica: str = ""
    timeout: float = 0.5
    resyncInterval: float = 1.0
    leaseSeconds: float = 15.0
    breakers: str = "local"
    onUnavailable: Mapping[str, str] = attrs.field(factory=lambda: dict(DEFAULT_ON_UNAVAILABLE))

    def address(self) -> RedisAddress:
        """Where the Redis is; raises C{ValueError} (no secret in it) for a URL L{parse_state} would refuse."""
        address, problem = _read_url(self.redis)
        if address is None:
            raise ValueError(problem)
        return address

    def describe_url(self) -> str:
        """The URL without its password: C{redis://HOST:PORT/DB} or C{unix:///PATH?db=N}."""
        address, _ = _read_url(self.redis)
        if address is None:
            return "[an unreadable Redis address]"
        if address.path is not None:
            return f"unix://{address.path}?db={address.db}"
        host = f"[{address.host}]" if address.host and ":" in address.host else address.host
        return f"redis://{host}:{address.port}/{address.db}"


def _read_url(url: str) -> tuple[RedisAddress | None, str]:
    """The address C{url} names, or None and why not (the URL itself never quoted: it may hold a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None, f"expected {_URL_FORMS}; the URL given cannot be read (its port or host is malformed)"
    if parts.fragment:
        return None, f"expected {_URL_FORMS}; the URL given has a #fragment"
    password = unquote(parts.password) if parts.password is not None else None
    if parts.username:
        return None, (
            "a user name in the URL is not supported (Redis ACL users): give only a password, redis://:PASSWORD@HOST:PORT/DB"
        )
    if parts.scheme == "redis":
        if not parts.hostname:
            return None, f"expected {_URL_FORMS}; the URL given has no host"
        if parts.query:
            return None, "a redis:// URL takes no ?query (the database is its path: redis://HOST:PORT/DB)"
        db_text = parts.path.strip("/")
        if db_text and not db_text.isdigit():
            return None, "the path of a redis:// URL is the database number (redis://HOST:PORT/0), and this one is not a number"
        db = int(db_text) if db_text else 0
        host = parts.hostname
        address = RedisAddress(host=host, port=port or 6379, path=None, db=db, password=password or None)
    elif parts.scheme == "unix":
        if parts.hostname:
            return None, "a unix:// URL has no host: unix:///path/to/redis.sock (three slashes)"
        if not parts.path.startswith("/"):
            return None, "a unix:// URL needs the absolute path of the socket: unix:///path/to/redis.sock"
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"db"})
        if unknown:
            return None, "a unix:// URL takes only ?db=N"
        db_values = query.get("db", ["0"])
        if len(db_values) != 1 or not db_values[0].isdigit():
            return None, "?db= of a unix:// URL must be one database number, e.g. ?db=0"
        db = int(db_values[0])
        address = RedisAddress(host=None, port=0, path=unquote(parts.path), db=db, password=password or None)
    elif parts.scheme == "rediss":
        return None, "rediss:// (Redis over TLS) is not supported yet: use redis:// on a trusted network or a unix:// socket"
    else:
        return None, f"expected {_URL_FORMS}; the URL given starts with neither redis:// nor unix://"
    if address.db > _MAX_DB:
        return None, f"the database number must be from 0 to {_MAX_DB}"
    return address, ""


def _redis_client_installed() -> bool:
    """Whether the optional Redis client (txredisapi) can be imported."""
    return importlib.util.find_spec("txredisapi") is not None


def default_replica() -> str:
    """C{"<hostname>-<pid>"}, made safe for a replica name."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


def parse_state(check: _Checker, value: Any) -> StateSettings | None:
    """
    The C{state:} section (C{value}), or None when it is absent (C{None}:
    in-process state).  Every problem goes to C{check}, under C{state.}.
    """
    if value is None:
        return None
    path = "state"
    section = check.mapping(path, value)
    if section is None:
        return None
    check.unknown_keys(path, section, _KEYS)
    fields: dict[str, Any] = {}
    ok = True
    if "redis" not in section:
        check.problem(path, f"redis is required: the URL of the Redis every replica shares ({_URL_FORMS})")
        ok = False
    else:
        url = section["redis"]
        if not isinstance(url, str) or not url:
            check.problem(
                _join(path, "redis"),
                f"expected a URL ({_URL_FORMS}), got {_describe(url) if not isinstance(url, str) else 'an empty string'}",
            )
            ok = False
        else:
            address, problem = _read_url(url)
            if address is None:
                check.problem(_join(path, "redis"), problem)
                ok = False
            else:
                fields["redis"] = url
    if "namespace" in section:
        namespace = check.string(_join(path, "namespace"), section["namespace"])
        if namespace is not None and not _NAMESPACE_RE.match(namespace):
            check.problem(
                _join(path, "namespace"),
                f"expected 1 to 64 letters, digits and _ . : - (a key prefix), got {_describe(namespace)}",
            )
            ok = False
        elif namespace is None:
            ok = False
        else:
            fields["namespace"] = namespace
    replica = section.get("replica", "")
    if replica is None:
        replica = ""
    if not isinstance(replica, str):
        check.problem(_join(path, "replica"), f"expected a string (this process's name), got {_describe(replica)}")
        ok = False
    elif replica and not _REPLICA_RE.match(replica):
        check.problem(
            _join(path, "replica"),
            f"expected 1 to 64 letters, digits and _ . @ - (this process's name among the replicas), got {_describe(replica)}",
        )
        ok = False
    else:
        fields["replica"] = replica or default_replica()
    for key, low, high in (("timeout", 0.01, 60.0), ("resyncInterval", 0.05, 3600.0), ("leaseSeconds", 1.0, 86400.0)):
        if key in section:
            number = check.number(_join(path, key), section[key], low, high)
            if number is None:
                ok = False
            else:
                fields[key] = number
    if "leaseSeconds" in fields and "timeout" in fields and fields["leaseSeconds"] < 3 * fields["timeout"]:
        check.problem(
            _join(path, "leaseSeconds"),
            f"must be at least 3 times state.timeout ({fields['timeout']:g} s): leases are renewed every leaseSeconds/3",
        )
        ok = False
    if "breakers" in section:
        breakers = section["breakers"]
        if breakers not in ("local", "shared"):
            check.problem(
                _join(path, "breakers"),
                f"expected local (each replica keeps its own circuit breakers) or shared (opened on one, open on all), got {_describe(breakers)}",
            )
            ok = False
        else:
            fields["breakers"] = breakers
    choices = dict(DEFAULT_ON_UNAVAILABLE)
    if "onUnavailable" in section:
        on_path = _join(path, "onUnavailable")
        mapping = check.mapping(on_path, section["onUnavailable"])
        if mapping is None:
            ok = False
        else:
            for kind, choice in mapping.items():
                if kind not in UNAVAILABLE_KINDS:
                    check.problem(on_path, f"unknown key {_describe(kind)} (expected {', '.join(UNAVAILABLE_KINDS)})")
                    ok = False
                elif choice not in UNAVAILABLE_CHOICES:
                    check.problem(
                        _join(on_path, kind),
                        f"expected refuse (fail closed while Redis is unreachable) or local (go on with this replica's own state), got {_describe(choice)}",
                    )
                    ok = False
                else:
                    choices[kind] = choice
    fields["onUnavailable"] = choices
    if ok and not _redis_client_installed():
        check.problem(
            path,
            "needs the Redis client txredisapi, which is not installed: pip install 'twisted-mcp[redis]'",
        )
        ok = False
    if not ok or "redis" not in fields:
        return None
    return StateSettings(**fields)


__all__ = ["DEFAULT_ON_UNAVAILABLE", "RedisAddress", "StateSettings", "default_replica", "parse_state"]
