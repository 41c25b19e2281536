"""
OAuth toward remote MCP servers when the other side misbehaves (C{docs/design/oauth.md} §12.2
"Hostile"): the real gateway daemon with a stdio backend and a static-header HTTP backend beside
the OAuth ones, and for each hostile case a clear error with its C{reason}, no code or token in
any output (the gateway's log, C{/status}, the CLI's output, the admin endpoint's answers), and the
other backends still answering.

The misbehaving authorization servers are L{tests.oauth.fake_as} (one per mode, in this process);
the callback and store cases run against the real peers (oidc-provider and the protected server).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2
import pytest
from mcp import MCPError

from tests import mcpclient as mc
from tests.oauth.browser import Browser
from tests.oauth.fake_as import ERROR_BAIT, FakeAuthorizationServer
from tests.oauth.peers import Child, Peers, oauth_peers  # noqa: F401  (fixture)

from .conftest import SERVERS, bin_path, gateway_env, server
from .test_oauth_gateway import Gateway, front_token, wait_until

pytestmark = [pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning"), pytest.mark.timeout(240)]

#: The static header of the HTTP backend beside: it must never show either.
STATIC_KEY = "static-header-k3y-static-header"


class BesideGateway(Gateway):
    """L{Gateway} with any set of backends and its own C{requestTimeout}."""

    def __init__(self, tmp_path: Path, servers: dict[str, Any], request_timeout: float = 5) -> None:
        super().__init__(tmp_path, "http://127.0.0.1:9/unused")
        # Gateway writes 32 raw random bytes, which the key reader strips of surrounding whitespace
        # (about one start in twenty fails with "the key is 31 byte(s)"): write it as the docs say.
        (tmp_path / "oauth.key").write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
        config = json.loads(self.config.read_text())
        config["mcpServers"] = servers
        config["oauth"]["requestTimeout"] = request_timeout
        config["roles"] = {"dev": {"allow": [f"{name}__*" for name in servers]}}
        self.config.write_text(json.dumps(config, indent=1))

    def backend_named(self, name: str) -> dict[str, Any]:
        (backend,) = [b for b in self.status()["backends"] if b["name"] == name]
        return backend

    def admin_post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """One POST to the admin endpoint (a unix socket) and its JSON answer."""
        conn = _UnixConnection(self.admin.removeprefix("unix:"))
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def start_login(self, backend: str, principal: str, wait: float = 30) -> tuple[subprocess.Popen[str], str]:
        """C{twisted-mcp login BACKEND --as PRINCIPAL} running, and the URL it printed."""
        proc = subprocess.Popen(
            [bin_path("twisted-mcp"), "login", backend, "--as", principal, "--admin", self.admin, "--wait", str(wait)],
            env=gateway_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("  http"):
                return proc, line.strip()
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"login printed no URL: {out}\n{err}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


class Listener:
    """A loopback HTTP listener standing in for a login's redirect URI: it records each query."""

    def __init__(self) -> None:
        queries: list[dict[str, str]] = []
        self.queries = queries

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                queries.append(dict(parse_qsl(urlsplit(self.path).query)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.redirect_uri = f"http://127.0.0.1:{self.server.server_address[1]}/oauth/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def static_backend(peers: Peers) -> Child:
    """C{tests/servers/http_sdk.py}, reached with a static header (no OAuth)."""
    child = Child("static", [sys.executable, os.path.join(SERVERS, "http_sdk.py"), "--port", "0"], peers.directory)
    peers.started.append(child)
    return child


def beside(static: Child) -> dict[str, Any]:
    """The two backends that run beside the OAuth ones."""
    port = int(static.ready_line.split()[1])
    return {
        "stdio": server("echo_fast"),
        "static": {"url": f"http://127.0.0.1:{port}/mcp", "headers": {"X-Api-Key": STATIC_KEY}},
    }


async def call(url: str, sub: str, tool: str, arguments: dict[str, Any]) -> str:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {front_token(sub)}"}, timeout=30) as http_client:
        async with mc.connect_http(url, http_client=http_client) as client:
            return await mc.call_text(client, tool, arguments)


async def refused(url: str, sub: str, tool: str) -> MCPError:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {front_token(sub)}"}, timeout=30) as http_client:
        async with mc.connect_http(url, http_client=http_client) as client:
            with pytest.raises(MCPError) as e:
                await client.call_tool(tool, {})
            return e.value


def neighbours_answer(gateway: Gateway) -> None:
    """The stdio and the static-header backends answer through the gateway."""
    assert mc.run(call, gateway.url, "carol", "stdio__echo", {"text": "still here"}) == "still here"
    assert mc.run(call, gateway.url, "carol", "static__echo", {"text": "also here"}) == "also here"


def assert_nowhere(secrets: list[str], *outputs: str) -> None:
    """
    None of C{secrets} (codes, tokens, the static header) appears in any of C{outputs}, and none of
    them shows a traceback (every failure here is expected, and must be handled as such).
    """
    everything = "\n".join(outputs)
    assert "Traceback" not in everything and "Unhandled error" not in everything, everything[-3000:]
    for secret in [*secrets, STATIC_KEY]:
        assert secret not in everything, f"a secret ({secret[:10]}...) leaked"


# -- misbehaving authorization servers -----------------------------------

#: Each mode of the fake authorization server that fails the login at its start, and the reason.
AT_BEGIN = {
    "prm-other-resource": "resource-mismatch",
    "prm-other-origin": "metadata-origin",
    "issuer-mismatch": "issuer-mismatch",
    "no-s256": "pkce-unsupported",
    "metadata-302": "metadata-unavailable",
    "metadata-html": "metadata-invalid",
    "metadata-array": "metadata-invalid",
    "metadata-huge": "metadata-invalid",
}
#: The modes that fail once the browser comes back, the reason and the login's exit status.
AT_CALLBACK = {
    "wrong-iss": ("iss-mismatch", 77),
    "wrong-iss-error": ("iss-mismatch", 77),
    "no-iss": ("iss-mismatch", 77),
    "token-html": ("token-request-failed", 77),
    "token-array": ("token-request-failed", 77),
    "token-huge": ("as-unavailable", 69),
    "token-hang": ("as-timeout", 69),
    "token-mac": ("unsupported-token-type", 69),
}


def backend_of(mode: str) -> str:
    return mode.replace("-", "_")


@pytest.fixture
def hostile(tmp_path: Path, oauth_peers: Peers) -> Iterator[tuple[BesideGateway, dict[str, FakeAuthorizationServer]]]:  # noqa: F811
    """A gateway with one OAuth backend per misbehaving server, requestTimeout 1 s, and the two beside."""
    fakes: dict[str, FakeAuthorizationServer] = {}
    gateway = None
    try:
        for mode in [*AT_BEGIN, *AT_CALLBACK, "hang"]:
            fakes[mode] = FakeAuthorizationServer(mode)
        servers = beside(static_backend(oauth_peers))
        for mode, fake in fakes.items():
            servers[backend_of(mode)] = {"url": fake.url, "auth": "oauth"}
        gateway = BesideGateway(tmp_path, servers, request_timeout=1)
        gateway.start()
        yield gateway, fakes
    finally:
        if gateway is not None:
            gateway.stop()
        for fake in fakes.values():
            fake.stop()


def test_metadata_that_cannot_be_trusted_fails_the_login_with_its_reason(hostile) -> None:
    gateway, fakes = hostile
    outputs = []
    # Each backend's first 401 names where its resource metadata is (prm-other-origin's on
    # another origin): a login begun before that 401 came back would look on the backend's
    # own origin and find good metadata there, as it should.  Each has answered once it has an error.
    deadline = time.monotonic() + 30
    for mode in AT_BEGIN:
        while not gateway.backend_named(backend_of(mode))["lastError"]:
            assert time.monotonic() < deadline, f"{mode}: the gateway never heard from the backend"
            time.sleep(0.05)
    for mode, reason in AT_BEGIN.items():
        done = gateway.cli("login", backend_of(mode), "--as", "alice", "--wait", "5")
        outputs += [done.stdout, done.stderr]
        assert done.returncode == 69, (mode, done.stdout, done.stderr)
        assert f"({reason})" in done.stderr, (mode, done.stderr)
        assert "Open this URL" not in done.stdout, mode
    # The redirect was not followed (its target is the discard port, where nothing answers anyway),
    # and the fakes saw no registration: nothing went past the metadata.
    assert "redirect" in gateway.cli("login", "metadata_302", "--as", "alice").stderr
    for mode in AT_BEGIN:
        assert ("POST", "/reg") not in fakes[mode].seen, mode
    status = json.dumps(gateway.status())
    # /status says why the backend is down, with the code clients get.
    last_error = gateway.backend_named("no_s256")["lastError"] or ""
    assert "S256" in last_error and "-31042" in last_error, last_error
    neighbours_answer(gateway)
    assert_nowhere([], gateway.log(), status, *outputs)


def test_a_callback_that_fails_its_checks_or_a_token_endpoint_that_misbehaves_fails_the_login(hostile) -> None:
    gateway, fakes = hostile
    outputs = []
    for mode, (reason, exit_status) in AT_CALLBACK.items():
        login, url = gateway.start_login(backend_of(mode), "alice")
        answer = httpx2.get(url, follow_redirects=False, timeout=10)
        assert answer.status_code == 302, (mode, answer.status_code)
        callback = answer.headers["location"]
        assert callback.startswith("http://127.0.0.1:")
        # The "browser" lands on the CLI's loopback listener, which hands the query to the gateway.
        try:
            httpx2.get(callback, timeout=10)
        except httpx2.HTTPError:
            pass
        out, err = login.communicate(timeout=30)
        outputs += [url, out, err]
        assert login.returncode == exit_status, (mode, out, err)
        assert f"({reason})" in err, (mode, err)
        if reason == "iss-mismatch":
            # The code was never sent anywhere: the fake saw no token request.
            assert ("POST", "/token") not in fakes[mode].seen, mode
    rows = gateway.cli("tokens", "--json")
    assert json.loads(rows.stdout) == []
    neighbours_answer(gateway)
    issued = [value for fake in fakes.values() for value in fake.issued]
    assert any(v.startswith("fake-access-") for v in issued) and any(v.startswith("fake-code-") for v in issued)
    # The error_description of a response that failed the iss check is not shown (nor logged).
    assert_nowhere([*issued, ERROR_BAIT, "evil.example"], gateway.log(), json.dumps(gateway.status()), rows.stdout, *outputs)


def test_an_authorization_server_that_never_answers_times_out_while_the_others_serve(hostile) -> None:
    gateway, fakes = hostile
    results: dict[str, Any] = {}

    def login() -> None:
        started = time.monotonic()
        results["done"] = gateway.cli("login", "hang", "--as", "alice", "--wait", "5", timeout=60)
        results["took"] = time.monotonic() - started

    thread = threading.Thread(target=login)
    thread.start()
    served = []
    while thread.is_alive():
        started = time.monotonic()
        neighbours_answer(gateway)
        served.append(time.monotonic() - started)
    thread.join()
    done = results["done"]
    assert done.returncode == 69, (done.stdout, done.stderr)
    assert "(as-timeout)" in done.stderr, done.stderr
    assert "did not answer within 1 s" in done.stderr
    # About requestTimeout (1 s): a few metadata URLs at most, never the 30 s of a stuck request.
    assert 1 <= results["took"] < 10, results
    assert served and max(served) < 5, served
    assert ("GET", "/.well-known/oauth-authorization-server") in fakes["hang"].seen
    neighbours_answer(gateway)
    assert_nowhere([], gateway.log(), json.dumps(gateway.status()), done.stdout, done.stderr)


# -- the callback, against the real authorization server ---------------------


@pytest.fixture
def real(tmp_path: Path, oauth_peers: Peers):  # noqa: F811
    """oidc-provider, the protected server, the two beside, the gateway in front."""
    authorization = oauth_peers.authorization_server(name="as")
    protected = oauth_peers.protected_server(authorization.issuer, name="protected")
    servers = beside(static_backend(oauth_peers))
    servers["protected"] = {"url": protected.url, "auth": "oauth", "restartMaxDelay": 2}
    gateway = BesideGateway(tmp_path, servers)
    try:
        gateway.start()
        yield authorization, protected, gateway
    finally:
        gateway.stop()


def test_a_forged_or_replayed_callback_is_refused_and_the_real_one_still_completes(real) -> None:
    authorization, protected, gateway = real
    outputs: list[str] = []

    # Through the CLI: its loopback gets a forged query before the real redirect.
    login, url = gateway.start_login("protected", "alice")
    callback = f"http://127.0.0.1:{login_port(url)}/oauth/callback"
    forged = {"code": "forged-code-0123456789", "state": "forged-state-0123456789", "iss": authorization.issuer}
    try:
        httpx2.get(f"{callback}?{urlencode(forged)}", timeout=10)
    except httpx2.HTTPError:
        pass
    out, err = login.communicate(timeout=30)
    outputs += [out, err]
    assert login.returncode == 77, (out, err)
    assert "(state-mismatch)" in err, err

    # Through the admin endpoint, the way the CLI does it: begin, the browser consents, and the
    # callback's query is completed with a forged state, then for real, then replayed.
    listener = Listener()
    try:
        status, begun = gateway.admin_post(
            "/oauth/begin", {"backend": "protected", "principal": "alice", "redirectUri": listener.redirect_uri}
        )
        assert status == 200, begun
        with Browser() as browser:
            browser.authorize(begun["url"], account="alice")
        (params,) = listener.queries
    finally:
        listener.stop()
    assert params["code"] and params["state"] and params["iss"] == authorization.issuer

    answers = []
    status, answer = gateway.admin_post(
        "/oauth/complete", {"params": {**params, "state": "forged-" + params["state"][7:]}, "redirectUri": listener.redirect_uri}
    )
    answers.append(answer)
    assert (status, answer["reason"], answer["code"]) == (409, "state-mismatch", -31041), answer
    neighbours_answer(gateway)

    status, answer = gateway.admin_post("/oauth/complete", {"params": params, "redirectUri": listener.redirect_uri})
    answers.append(answer)
    assert status == 200, answer
    assert answer["principal"] == "jwt:alice"
    wait_until(lambda: gateway.backend_named("protected")["state"] == "up", what="the backend to come up")
    assert mc.run(call, gateway.url, "alice", "protected__whoami", {}) == "alice"

    status, answer = gateway.admin_post("/oauth/complete", {"params": params, "redirectUri": listener.redirect_uri})
    answers.append(answer)
    assert (status, answer["reason"]) == (409, "state-mismatch"), answer
    assert len(authorization.events("authorization_code.consumed")) == 1

    neighbours_answer(gateway)
    tokens = [v.split()[-1] for v in protected.authorizations_seen()]
    assert tokens
    assert_nowhere(
        [params["code"], forged["code"], forged["state"], *tokens],
        gateway.log(),
        json.dumps(gateway.status()),
        json.dumps(answers),
        gateway.cli("tokens", "--json").stdout,
        *outputs,
    )
    assert params["state"] not in json.dumps(answers) + gateway.log()


def login_port(url: str) -> int:
    """The port of the CLI's loopback listener, from the redirect_uri of the URL it printed."""
    redirect = dict(parse_qsl(urlsplit(url).query))["redirect_uri"]
    port = urlsplit(redirect).port
    assert port is not None
    return port


# -- the store ----------------------------------------------------------------


def test_a_tampered_token_file_and_an_open_store_directory(real) -> None:
    authorization, protected, gateway = real
    for who in ("alice", "bob"):
        with Browser() as browser:
            done = gateway.login(who, who, browser)
        assert done.returncode == 0, done.stderr
    wait_until(lambda: gateway.backend_named("protected")["state"] == "up", what="the backend to come up")
    assert mc.run(call, gateway.url, "alice", "protected__whoami", {}) == "alice"

    # Flip one byte of alice's sealed record while the gateway is stopped.
    gateway.stop()
    alice_file = None
    for path in sorted((gateway.store / "tokens").glob("*.json")):
        if "jwt:alice" in path.read_text():
            alice_file = path
    assert alice_file is not None
    ciphertext = json.loads(alice_file.read_text())["record"]["c"]
    raw = bytearray(alice_file.read_bytes())
    # One byte in the middle of the ciphertext (its base64: one letter for another of the alphabet).
    where = raw.index(ciphertext.encode()) + len(ciphertext) // 2
    raw[where] = ord("A") if raw[where] != ord("A") else ord("B")
    alice_file.write_bytes(bytes(raw))
    gateway.start()
    wait_until(lambda: gateway.backend_named("protected")["state"] == "up", what="the backend to come up after the restart")

    error = mc.run(refused, gateway.url, "alice", "protected__whoami")
    assert error.code == -31040, error
    assert error.data["reason"] in ("authorization-required", "reauthorization-required"), error.data
    assert mc.run(call, gateway.url, "bob", "protected__whoami", {}) == "bob"
    assert not alice_file.exists()
    assert list(alice_file.parent.glob(alice_file.name + ".bad-*")), list(alice_file.parent.iterdir())
    assert "failed authentication" in gateway.log()
    refusal = json.dumps(error.data) + error.message
    neighbours_answer(gateway)

    # The store directory opened to others: the OAuth backend is unavailable with the hint.
    gateway.stop()
    gateway.store.chmod(0o755)
    gateway.start()
    wait_until(lambda: "chmod 700" in (gateway.backend_named("protected")["lastError"] or ""), what="the chmod hint")
    down = gateway.backend_named("protected")
    assert down["state"] != "up", down
    assert "0755" in down["lastError"] and f"chmod 700 {gateway.store}" in down["lastError"], down
    assert "-31042" in down["lastError"], down
    # Bob's token is in the store, but the store is not to be trusted: his call is not served.
    error = mc.run(refused, gateway.url, "bob", "protected__whoami")
    assert error.code in (-31042, -32602), error
    listed = gateway.cli("tokens")
    assert listed.returncode == 69, (listed.stdout, listed.stderr)
    assert "chmod 700" in listed.stderr and listed.stderr.rstrip().endswith("(store-unavailable)"), listed.stderr
    neighbours_answer(gateway)

    tokens = [v.split()[-1] for v in protected.authorizations_seen()]
    assert tokens
    assert_nowhere(tokens, gateway.log(), json.dumps(gateway.status()), listed.stdout, listed.stderr, refusal)
