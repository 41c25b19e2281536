"""The conformance suite's client auth/* scenarios, with the gateway as the OAuth client.

The suite starts an authorization server and an MCP server that demands its
tokens, then runs tests/conformance/client_driver.py with the server's URL and,
for some scenarios, MCP_CONFORMANCE_CONTEXT (a JSON object: `client_id` and
`client_secret` of a pre-registered client).  client_driver.py hands auth/*
scenarios to `main` here, which (docs/design/oauth.md §12.2, "Conformance"):

1. writes a gateway configuration with that URL as the one backend,
   `conformance`: `auth: {oauth: {...}}` (a pre-registered `client` when the
   context names one) or, for auth/client-credentials-*, `auth:
   {clientCredentials: {...}}`; an `oauth.store` sealed with a fresh key in a
   temporary directory; for auth/basic-cimd the suite's fixed
   `oauth.clientMetadataUrl` (its AS accepts that URL as a client ID without
   fetching it);
2. starts the real gateway (`twistd -n --pidfile= mcp-gateway`, its stdio
   front, plus `--admin unix:<tmp>/admin.sock`) under the official SDK client;
3. for `auth: oauth`, runs `twisted-mcp login conformance --admin ...` and
   plays the browser: it requests the URL the command prints and follows the
   redirects, which the suite's AS answers at once with a redirect to the
   command's loopback listener;
4. calls `test-tool` through the gateway.  A -31040 answer (no token yet, or
   `insufficient-scope`: the server asked for more scope), or an "unknown
   tool" while `twisted-mcp status` says the backend needs an authorization
   (a backend that is down lists no tools), means log in again and call
   again, up to MAX_LOGINS logins; a -31041 `step-up-limit` ends the run (the
   gateway gave up on the scope the server keeps asking for), as does any
   other error or a failed login.

The gateway decides everything the suite checks (discovery, registration,
PKCE, scopes, `resource`, `iss`, step-up and its limit): the driver only logs
in when the gateway says so, and its own limit is one above the gateway's, so
auth/scope-retry-limit passes only when the gateway stops.  Nothing secret is
printed: the authorization URL carries no secret, the callback's query (the
code) never leaves the CLI and the gateway.

Exit status: 0 when the tool answered, 1 otherwise (the reason on stderr).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp import MCPError

from tests import mcpclient

BACKEND = "conformance"
TOOL = f"{BACKEND}__test-tool"
#: The client ID metadata document URL the suite's AS accepts for auth/basic-cimd without fetching it.
CIMD_URL = "https://conformance-test.local/client-metadata.json"
#: The gateway's JSON-RPC code for "authorize first" (twisted_mcp/backends/oauth/problems.py).
AUTHORIZATION_REQUIRED = -31040
#: What the gateway answers for a tool its catalog does not have (its backend is down).
INVALID_PARAMS = -32602
#: Logins the driver does at most: one more than the three authorization attempts the gateway
#: allows (one, then two step-ups), so a gateway without a step-up limit fails
#: auth/scope-retry-limit (more than 3 attempts), and few enough that the 60 s discovery
#: cache does not expire while the driver retries (a stale authorization server stays stale).
MAX_LOGINS = 4
LOGIN_WAIT_SECONDS = 20
BROWSER_SECONDS = 10
#: How long the driver waits for the gateway to list test-tool: after the first login (the
#: backend reconnects at once), and after a later one (the backend has already been seen to
#: go down after a login: waiting less keeps the retries well inside the 60 s discovery cache,
#: so a stale authorization server fails the scenario whatever the machine's load).
CATALOG_SECONDS = 10
RETRY_CATALOG_SECONDS = 3
RUN_SECONDS = 100


def is_auth(scenario: str) -> bool:
    return scenario.startswith("auth/")


def uses_client_credentials(scenario: str) -> bool:
    return scenario.startswith("auth/client-credentials-")


def parse_context(raw: str | None) -> dict[str, Any]:
    """MCP_CONFORMANCE_CONTEXT as a dict ({} when unset; a ValueError when it is not a JSON object)."""
    if not raw:
        return {}
    context = json.loads(raw)
    if not isinstance(context, dict):
        raise ValueError("MCP_CONFORMANCE_CONTEXT is not a JSON object")
    return context


def backend_auth(scenario: str, context: dict[str, Any], secret_file: Callable[[str], Path]) -> dict[str, Any]:
    """The backend's `auth:` for a scenario; `secret_file(secret)` writes a client secret where the config can name it."""
    client_id = context.get("client_id")
    secret = context.get("client_secret")
    identity: dict[str, Any] = {}
    if isinstance(client_id, str) and client_id:
        identity["id"] = client_id
        if isinstance(secret, str) and secret:
            identity["secretFile"] = str(secret_file(secret))
    if uses_client_credentials(scenario):
        return {"clientCredentials": identity}
    return {"oauth": {"client": identity} if identity else {}}


def gateway_config(scenario: str, url: str, context: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The gateway's configuration for one auth/* scenario, its key and secrets written under `directory`."""

    def secret_file(secret: str) -> Path:
        path = directory / "client.secret"
        write_private(path, secret.encode())
        return path

    key = directory / "oauth.key"
    write_private(key, base64.b64encode(os.urandom(32)))  # text: the gateway strips a key file's whitespace
    oauth: dict[str, Any] = {"store": {"path": str(directory / "oauth-store"), "keyFile": str(key)}, "requestTimeout": 5}
    if scenario == "auth/basic-cimd":
        oauth["clientMetadataUrl"] = CIMD_URL
    backend = {"type": "http", "url": url, "auth": backend_auth(scenario, context, secret_file)}
    return {"mcpServers": {BACKEND: backend}, "oauth": oauth}


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


@dataclass(frozen=True)
class Answer:
    """How a call through the gateway ended: the tool's text, or a JSON-RPC error's code and reason."""

    text: str | None = None
    code: int | None = None
    reason: str | None = None
    message: str = ""


def answer_of_error(error: MCPError) -> Answer:
    data = error.error.data if isinstance(error.error.data, dict) else {}
    reason = data.get("reason")
    return Answer(code=error.error.code, reason=reason if isinstance(reason, str) else None, message=error.error.message)


def needs_authorization(status: dict[str, Any] | None) -> bool:
    """Whether `twisted-mcp status --json` says the backend waits for a login: its OAuth state
    says so, or its last error is a -31040 (its tool listing was refused for want of a token or
    of scope)."""
    for backend in (status or {}).get("backends") or []:
        if isinstance(backend, dict) and backend.get("name") == BACKEND:
            auth = backend.get("auth")
            if isinstance(auth, dict) and auth.get("state") == "needs-authorization":
                return True
            last_error = backend.get("lastError")
            return isinstance(last_error, str) and f"({AUTHORIZATION_REQUIRED})" in last_error
    return False


def next_step(answer: Answer, logins: int, status: dict[str, Any] | None = None) -> str:
    """
    What the driver does after a call: "done" (the tool answered), "login" (then call again), or "stop".

    -31040 asks for a login.  A backend that is down has no tools in the catalog, so a call
    is answered "unknown tool" (-32602): then the gateway's `status` says whether it waits
    for a login.  Anything else (-31041 step-up-limit, -31042, ...) ends the run.
    """
    if answer.text is not None:
        return "done"
    if logins >= MAX_LOGINS:
        return "stop"
    if answer.code == AUTHORIZATION_REQUIRED:
        return "login"
    if answer.code == INVALID_PARAMS and needs_authorization(status):
        return "login"
    return "stop"


def login_url(line: str) -> str | None:
    """The authorization URL in a line `twisted-mcp login` prints (indented, alone on its line)."""
    stripped = line.strip()
    if line.startswith("  ") and stripped.startswith(("http://", "https://")) and " " not in stripped:
        return stripped
    return None


def follow(url: str) -> str:
    """Be the browser: request `url` and follow its redirects (to the CLI's loopback listener). Returns what happened."""
    try:
        with urllib.request.urlopen(url, timeout=BROWSER_SECONDS) as answer:  # noqa: S310 - the suite's AS, on loopback
            return f"the browser ended at {answer.status}"
    except urllib.error.HTTPError as e:
        return f"the browser ended at {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return f"the browser failed: {e}"


def gateway_status(admin: str) -> dict[str, Any] | None:
    """`twisted-mcp status --json`, or None when it cannot be read."""
    command = [str(Path(sys.executable).with_name("twisted-mcp")), "status", "--json", "--admin", admin]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        status = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    return status if isinstance(status, dict) else None


def login(admin: str) -> tuple[int, str]:
    """Run `twisted-mcp login conformance`, playing the browser for the URL it prints: its exit status and output."""
    command = [
        str(Path(sys.executable).with_name("twisted-mcp")),
        "login",
        BACKEND,
        "--admin",
        admin,
        "--wait",
        str(LOGIN_WAIT_SECONDS),
    ]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    printed: list[str] = []
    for line in process.stdout:
        printed.append(line)
        url = login_url(line)
        if url is not None:
            printed.append(f"[{follow(url)}]\n")
            break
    try:
        rest, _ = process.communicate(timeout=LOGIN_WAIT_SECONDS + 10)
    except subprocess.TimeoutExpired:
        process.kill()
        rest, _ = process.communicate()
    return process.returncode, "".join(printed) + (rest or "")


async def call(client: Any) -> Answer:
    try:
        return Answer(text=await mcpclient.call_text(client, TOOL, {}))
    except MCPError as e:
        return answer_of_error(e)


def catalog_wait(logins: int) -> float:
    """Seconds to wait for test-tool to be listed after `logins` logins."""
    return CATALOG_SECONDS if logins <= 1 else RETRY_CATALOG_SECONDS


async def wait_for_tool(client: Any, seconds: float) -> None:
    """Wait (a bounded time) until the gateway lists test-tool: the call says what is wrong when it does not."""
    with anyio.move_on_after(seconds):
        while True:
            try:
                if TOOL in await mcpclient.tool_names(client):
                    return
            except MCPError:
                return
            await anyio.sleep(0.1)


def say(line: str) -> None:
    print(f"auth_driver: {line}", file=sys.stderr, flush=True)


async def drive(scenario: str, url: str, context: dict[str, Any]) -> Answer:
    with tempfile.TemporaryDirectory(prefix="twisted-mcp-conformance-auth-") as tmp:
        directory = Path(tmp)
        config = directory / "gateway.json"
        config.write_text(json.dumps(gateway_config(scenario, url, context, directory), indent=1))
        admin = f"unix:{directory / 'admin.sock'}"
        twistd = Path(sys.executable).with_name("twistd")
        command = [str(twistd), "-n", "--pidfile=", "mcp-gateway", "--config", str(config), "--admin", admin]
        async with mcpclient.connect(command, errlog=sys.stderr, mode="legacy", cwd=tmp) as client:
            logins = 0
            step = "call" if uses_client_credentials(scenario) else "login"
            while True:
                if step == "login":
                    exited, output = await anyio.to_thread.run_sync(login, admin)
                    logins += 1
                    say(f"login {logins} exited {exited}:\n{output}")
                    if exited != 0:
                        return Answer(code=exited, reason="login-failed", message=f"twisted-mcp login exited {exited}")
                await wait_for_tool(client, catalog_wait(logins))
                answer = await call(client)
                status = await anyio.to_thread.run_sync(gateway_status, admin) if answer.code == INVALID_PARAMS else None
                step = next_step(answer, logins, status)
                say(f"call: {answer}; next: {step}")
                if step != "login":
                    return answer


def main(scenario: str, url: str, raw_context: str | None) -> int:
    try:
        context = parse_context(raw_context)
        answer = mcpclient.run(drive, scenario, url, context, timeout=RUN_SECONDS)
    except Exception as exc:  # noqa: BLE001 - reported to the suite as the client's failure
        say(f"{scenario} failed through the gateway: {type(exc).__name__}: {exc}")
        return 1
    if answer.text is None:
        say(f"{scenario}: the call through the gateway ended with {answer.code} ({answer.reason}): {answer.message}")
        return 1
    say(f"{scenario}: {TOOL} answered: {answer.text}")
    return 0
