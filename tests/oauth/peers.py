"""
The real peers of the OAuth tests as child processes: the authorization server
(C{tests/oauth/as.mjs}, oidc-provider) and the protected MCP server (C{tests/servers/protected.py}).

Each starts on a free loopback port, is waited for (bounded), and is stopped by closing its stdin
(both exit on stdin EOF, so a test run that dies leaves no orphan), then killed if it lingers. Use
the fixtures from an integration test by importing them::

    from tests.oauth.peers import authorization_server, protected_server, oauth_peers  # noqa: F401

C{authorization_server} and C{protected_server} are one of each with the defaults;
C{oauth_peers} is a L{Peers} for tests that want other settings (short token lifetimes) or more
than one of each. Everything they write (stderr, the AS's events, the server's request log) lands
in the test's C{tmp_path}.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
AS_SCRIPT = HERE / "as.mjs"
PROTECTED_SCRIPT = TESTS / "servers" / "protected.py"
OIDC_PROVIDER = TESTS / "node" / "node_modules" / "oidc-provider"

#: Bounds, in seconds: start-up (the protected server imports the SDK and registers at the AS), stop.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Child:
    """A peer process: started, waited for until it prints its ready line, stopped."""

    def __init__(self, name: str, argv: list[str], directory: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.stderr_path = directory / f"{name}.stderr"
        self._stderr: IO[bytes] = open(self.stderr_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=full_env)
        try:
            self.ready_line = self._ready_line()
        except BaseException:
            self.stop()
            raise

    def _ready_line(self) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(START_TIMEOUT):
                raise TimeoutError(f"{self.name} did not start within {START_TIMEOUT} s; stderr:\n{self.stderr_text()}")
        line = self.proc.stdout.readline().decode()
        if not line:
            self.proc.wait(STOP_TIMEOUT)
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode} before it was ready; stderr:\n{self.stderr_text()}"
            )
        return line

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        """Close stdin (the peer exits on EOF), wait, kill if it lingers; the exit status."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode


class AuthorizationServer(Child):
    """
    C{tests/oauth/as.mjs} (see its header for the routes and the events).

    @ivar issuer: its issuer identifier, C{http://127.0.0.1:<port>} (no trailing slash).
    @ivar events_path: the file its events are appended to.
    """

    def __init__(
        self, directory: Path, access_ttl: int | None = None, refresh_ttl: int | None = None, port: int = 0, name: str = "as"
    ) -> None:
        if not (OIDC_PROVIDER / "package.json").exists():
            pytest.fail("oidc-provider is not installed: run `make tests/node/node_modules/.installed`")
        self.events_path = directory / f"{name}.events.jsonl"
        env = {"AS_EVENTS": str(self.events_path)}
        if access_ttl is not None:
            env["AS_ACCESS_TTL"] = str(access_ttl)
        if refresh_ttl is not None:
            env["AS_REFRESH_TTL"] = str(refresh_ttl)
        super().__init__(name, ["node", str(AS_SCRIPT), "--port", str(port)], directory, env)
        ready = json.loads(self.ready_line)
        self.issuer: str = ready["issuer"]
        self.port: int = ready["port"]

    def events(self, *names: str) -> list[dict[str, Any]]:
        """The events logged so far, in order; only those named when names are given."""
        found = _read_json_lines(self.events_path)
        return [e for e in found if e["event"] in names] if names else found

    def metadata(self) -> dict[str, Any]:
        """Its authorization server metadata (RFC 8414)."""
        with urllib.request.urlopen(f"{self.issuer}/.well-known/oauth-authorization-server", timeout=10) as r:
            metadata: dict[str, Any] = json.loads(r.read())
        return metadata

    def revoke(self, account: str) -> int:
        """Destroy every grant of C{account} (and so their tokens); how many there were."""
        request = urllib.request.Request(f"{self.issuer}/test/revoke?account={account}", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(json.loads(r.read())["grants"])


class ProtectedServer(Child):
    """
    C{tests/servers/protected.py} (see its docstring).

    @ivar url: its MCP endpoint, which is also its resource identifier.
    @ivar log_path: its request log (raw Authorization headers included, on purpose).
    """

    def __init__(
        self, directory: Path, issuer: str, port: int = 0, introspect_client: str | None = None, name: str = "protected"
    ) -> None:
        self.log_path = directory / f"{name}.requests.jsonl"
        argv = [sys.executable, str(PROTECTED_SCRIPT), "--port", str(port), "--issuer", issuer, "--log", str(self.log_path)]
        if introspect_client is not None:
            argv += ["--introspect-client", introspect_client]
        super().__init__(name, argv, directory)
        if not self.ready_line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"{name} said {self.ready_line!r}")
        self.port = int(self.ready_line.split()[1])
        self.origin = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.origin}/mcp"
        self.metadata_url = f"{self.origin}/.well-known/oauth-protected-resource/mcp"

    def requests(self) -> list[dict[str, Any]]:
        """Every request it has answered so far, in order (see C{--log})."""
        return _read_json_lines(self.log_path)

    def authorizations_seen(self) -> set[str]:
        """Every Authorization header value that reached it."""
        return {r["authorization"] for r in self.requests() if r["authorization"] is not None}


class Peers:
    """Starts peers in one directory and stops them all at the end of the test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Child] = []

    def authorization_server(self, **options: Any) -> AuthorizationServer:
        options.setdefault("name", f"as{len(self.started)}")
        server = AuthorizationServer(self.directory, **options)
        self.started.append(server)
        return server

    def protected_server(self, issuer: str, **options: Any) -> ProtectedServer:
        options.setdefault("name", f"protected{len(self.started)}")
        server = ProtectedServer(self.directory, issuer, **options)
        self.started.append(server)
        return server

    def stop(self) -> None:
        for child in reversed(self.started):
            child.stop()
        self.started.clear()


@pytest.fixture
def oauth_peers(tmp_path: Path) -> Iterator[Peers]:
    peers = Peers(tmp_path)
    try:
        yield peers
    finally:
        peers.stop()


@pytest.fixture
def authorization_server(oauth_peers: Peers) -> AuthorizationServer:
    return oauth_peers.authorization_server(name="as")


@pytest.fixture
def protected_server(oauth_peers: Peers, authorization_server: AuthorizationServer) -> ProtectedServer:
    return oauth_peers.protected_server(authorization_server.issuer, name="protected")
