"""
Redis for tests: the machine's Redis (skip or fail when it is not there),
and private C{redis-server} processes a test may stop and restart.

API (plain functions and context managers, no pytest fixtures):

  - C{redis_url_or_skip() -> str}: the URL of the test Redis, from the
    environment variable C{TWISTED_MCP_TEST_REDIS} (default
    C{redis://127.0.0.1:6379/0}; C{unix:///path?db=N} works too).  When
    nothing answers a PING there, the calling test is skipped with the
    reason (never the password), or fails when
    C{TWISTED_MCP_REQUIRE_REDIS=1}.  Call it at the start of a test (or in
    C{setUp}); it is a blocking check, made before the reactor runs.

  - C{unique_namespace(prefix="test") -> str}: C{"<prefix>-<uuid hex>"}, a key
    namespace no other test uses.

  - C{delete_namespace(url, namespace) -> int}: delete every key
    C{namespace + ":*"} (and C{namespace} itself) from the Redis at C{url}
    (blocking, for C{tearDown}/C{addCleanup}); returns how many it deleted.

  - C{private_redis(password=None, unix_socket=None, workdir=None) -> ContextManager[PrivateRedis]}: start
    C{redis-server --port <free port> --save "" --appendonly no} (with
    C{--requirepass} when C{password} is given, C{--unixsocket PATH} too
    when C{unix_socket} is, and its working directory and log file
    C{redis.log} in C{workdir} when that is given), wait until it answers,
    and kill it (and wait for it) on exit.  Skips (or fails under
    C{TWISTED_MCP_REQUIRE_REDIS=1}) when C{redis-server} is not installed.
    The L{PrivateRedis} has C{.port}, C{.password}, C{.url}
    (C{redis://[:password@]127.0.0.1:PORT/0}), C{.stop()} (SIGKILL, waits,
    returns the C{time.monotonic()} at which the kill was sent; the port
    stays reserved for this object) and C{.start()} (again on the
    same port, waits until it answers).

Everything here talks to Redis with a few raw RESP lines over a blocking
socket, so it needs no client library and never touches the reactor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _required() -> bool:
    return os.environ.get("TWISTED_MCP_REQUIRE_REDIS", "") == "1"


def _unusable(reason: str) -> None:
    if _required():
        pytest.fail(f"{reason} (TWISTED_MCP_REQUIRE_REDIS=1 makes this a failure)")
    pytest.skip(reason + ", or set TWISTED_MCP_REQUIRE_REDIS=1 to fail instead of skipping")


#: Where a Redis listens: (host, port), or the path of its unix socket.
Address = tuple[str, int] | str


def _parse(url: str) -> tuple[Address, str | None, int]:
    """(address, password, database) of a C{redis://} or C{unix://} URL."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    if parts.scheme == "unix":
        return parts.path, password, int(parse_qs(parts.query).get("db", ["0"])[0])
    db = int(parts.path.strip("/") or 0)
    return (parts.hostname or "127.0.0.1", parts.port or 6379), password, db


def _shown(address: Address) -> str:
    """An address as an operator reads it (a URL's password is never part of it)."""
    return f"unix:{address}" if isinstance(address, str) else f"{address[0]}:{address[1]}"


def _encode(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Conn:
    """A blocking RESP connection, just enough for tests' set-up and clean-up."""

    def __init__(self, address: Address, timeout: float = 2.0) -> None:
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(address)
            except BaseException:
                self.sock.close()
                raise
        else:
            self.sock = socket.create_connection(address, timeout=timeout)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def command(self, *args: str | bytes) -> object:
        self.sock.sendall(_encode(*args))
        return self._read()

    def _read(self) -> object:
        line = self.file.readline()
        if not line:
            raise ConnectionError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._read() for _ in range(count)]
        raise RuntimeError(f"unexpected reply {line!r}")


def _connect(url: str) -> _Conn:
    address, password, db = _parse(url)
    conn = _Conn(address)
    try:
        if password:
            conn.command("AUTH", password)
        if db:
            conn.command("SELECT", str(db))
    except BaseException:
        conn.close()
        raise
    return conn


def _ping(url: str) -> str | None:
    """None when the Redis at C{url} answers, else why not (no password in it)."""
    where = _shown(_parse(url)[0])
    try:
        conn = _connect(url)
    except (OSError, RuntimeError) as e:
        return f"no Redis answers at {where} ({type(e).__name__}: {e})"
    try:
        conn.command("PING")
    except (OSError, RuntimeError) as e:
        return f"the Redis at {where} does not answer PING ({e})"
    finally:
        conn.close()
    return None


def redis_url_or_skip() -> str:
    """The test Redis's URL; skips the test (fails under TWISTED_MCP_REQUIRE_REDIS=1) when it does not answer."""
    url = os.environ.get("TWISTED_MCP_TEST_REDIS", DEFAULT_URL)
    problem = _ping(url)
    if problem is not None:
        _unusable(f"{problem}; set TWISTED_MCP_TEST_REDIS to a reachable Redis")
    return url


def unique_namespace(prefix: str = "test") -> str:
    """A key namespace no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex}"


def delete_namespace(url: str, namespace: str) -> int:
    """Delete every key under C{namespace} (C{namespace:*}, and C{namespace} itself); how many."""
    conn = _connect(url)
    deleted = 0
    try:
        cursor = b"0"
        while True:
            reply = conn.command("SCAN", cursor, "MATCH", namespace + ":*", "COUNT", "1000")
            assert isinstance(reply, list)
            cursor, keys = reply[0], reply[1]
            if keys:
                result = conn.command("DEL", *keys)
                assert isinstance(result, int)
                deleted += result
            if cursor in (b"0", "0"):
                break
        result = conn.command("DEL", namespace)
        assert isinstance(result, int)
        deleted += result
    finally:
        conn.close()
    return deleted


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A C{redis-server} of this test's own, on a free loopback port; see the module docstring."""

    def __init__(self, password: str | None = None, unix_socket: str | None = None, workdir: Path | None = None) -> None:
        self.password = password
        self.unix_socket = unix_socket
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, wait: float = 10.0) -> None:
        """Start it (again, on the same port) and wait until it answers a PING."""
        if self.process is not None:
            return
        binary = shutil.which("redis-server")
        if binary is None:
            _unusable("redis-server is not installed (apt-get install redis-server)")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.unix_socket:
            args += ["--unixsocket", self.unix_socket, "--unixsocketperm", "700"]
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            args += ["--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + wait
        while _ping(self.url) is not None:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"redis-server on port {self.port} exited at start")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer within {wait} s")
            time.sleep(0.02)

    def stop(self) -> float:
        """
        Kill it (SIGKILL: as a crash or a partition looks to its clients) and
        wait for it to exit.

        @return: the C{time.monotonic()} at which the kill was sent (now, when
            it was not running).
        """
        sent = time.monotonic()
        if self.process is None:
            return sent
        self.process.kill()
        sent = time.monotonic()
        self.process.wait(timeout=10)
        self.process = None
        return sent


@contextlib.contextmanager
def private_redis(
    password: str | None = None, unix_socket: str | None = None, workdir: Path | None = None
) -> Iterator[PrivateRedis]:
    """A started L{PrivateRedis}, killed on exit whatever happens."""
    server = PrivateRedis(password, unix_socket, workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


__all__ = [
    "PrivateRedis",
    "delete_namespace",
    "private_redis",
    "redis_url_or_skip",
    "unique_namespace",
]
