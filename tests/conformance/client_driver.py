"""The client the conformance suite's client scenarios run: the gateway, driven by a minimal SDK client.

The suite starts a test server for a scenario and runs this command with the
server's URL as the last argument and the scenario's name in
MCP_CONFORMANCE_SCENARIO.  This driver writes a gateway configuration with that
URL as the one HTTP backend, `conformance`, starts the real gateway
(`twistd -n --pidfile= mcp-gateway --config FILE`, stdio front) under the
official `mcp` SDK client, and does through the gateway what the scenario asks
of a client:

  initialize                            the handshake, then list the tools
  tools_call                            call add_numbers(a=5, b=3)
  sse-retry                             call test_reconnection (its stream is cut; the
                                        gateway must resume it with Last-Event-ID)
  elicitation-sep1034-client-defaults   call test_client_elicitation_defaults, accepting the
                                        elicitation with the schema's defaults filled in
  auth/*                                the scenario's server as an OAuth-protected backend
                                        (`auth: oauth`, or `auth: {clientCredentials}` for
                                        auth/client-credentials-*): log in with `twisted-mcp
                                        login` through the gateway's admin socket, the
                                        "browser" following the authorization URL's redirects
                                        to the CLI's loopback listener, then call test-tool;
                                        -31040 (a principal without a token, or
                                        insufficient-scope: step-up) means log in again and
                                        call again, -31041 step-up-limit means stop
                                        (tests/conformance/auth_driver.py)

What the suite checks is what the gateway sent to the scenario's server (and, for
auth/*, to the scenario's authorization server).  The
driver exits 0 when its part went as expected, 1 otherwise (with the reason on
stderr).  The gateway's log goes to stderr.

Usage: python tests/conformance/client_driver.py URL   (MCP_CONFORMANCE_SCENARIO set)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
from mcp_types import ElicitResult  # noqa: E402

from tests import mcpclient  # noqa: E402
from tests.conformance import auth_driver  # noqa: E402

BACKEND = "conformance"
SEPARATOR = "__"
DISCOVERY_SECONDS = 30

# The tool each scenario's server offers, and the arguments the driver calls it with.
CALLS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "initialize": None,
    "tools_call": ("add_numbers", {"a": 5, "b": 3}),
    "sse-retry": ("test_reconnection", {}),
    "elicitation-sep1034-client-defaults": ("test_client_elicitation_defaults", {}),
}


def gateway_command(config: Path) -> list[str]:
    twistd = Path(sys.executable).with_name("twistd")
    return [str(twistd), "-n", "--pidfile=", "mcp-gateway", "--config", str(config)]


def write_config(directory: Path, url: str) -> Path:
    config = directory / "gateway.json"
    config.write_text(json.dumps({"mcpServers": {BACKEND: {"type": "http", "url": url}}}))
    return config


def with_defaults(schema: dict[str, Any], content: dict[str, Any] | None) -> dict[str, Any]:
    """The user's answer with every field it leaves out set to the schema's default (SEP-1034)."""
    filled = dict(content or {})
    for name, field in (schema.get("properties") or {}).items():
        if name not in filled and isinstance(field, dict) and "default" in field:
            filled[name] = field["default"]
    return filled


async def accept_with_defaults(context: Any, params: Any) -> ElicitResult:
    schema = getattr(params, "requested_schema", None) or {}
    return ElicitResult(action="accept", content=with_defaults(schema, {}))


async def wait_for_tool(client: Any, name: str) -> None:
    """The gateway lists a backend's tools once it is up: wait for `name` to appear."""
    with anyio.fail_after(DISCOVERY_SECONDS):
        while name not in await mcpclient.tool_names(client):
            await anyio.sleep(0.1)


async def drive(scenario: str, url: str) -> None:
    call = CALLS[scenario]
    with tempfile.TemporaryDirectory(prefix="twisted-mcp-conformance-") as tmp:
        config = write_config(Path(tmp), url)
        async with mcpclient.connect(
            gateway_command(config), errlog=sys.stderr, mode="legacy", elicitation_callback=accept_with_defaults
        ) as client:
            if call is None:
                await mcpclient.tool_names(client)
                return
            tool, arguments = call
            exposed = f"{BACKEND}{SEPARATOR}{tool}"
            await wait_for_tool(client, exposed)
            text = await mcpclient.call_text(client, exposed, arguments)
            print(f"client_driver: {exposed} answered: {text}", file=sys.stderr)


def main() -> int:
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    if auth_driver.is_auth(scenario) and len(sys.argv) >= 2:
        return auth_driver.main(scenario, sys.argv[-1], os.environ.get("MCP_CONFORMANCE_CONTEXT"))
    if scenario not in CALLS or len(sys.argv) < 2:
        print(
            f"client_driver: run by the conformance suite with a URL and MCP_CONFORMANCE_SCENARIO set to one of "
            f"{', '.join(CALLS)} or auth/* (got {scenario!r})",
            file=sys.stderr,
        )
        return 2
    try:
        mcpclient.run(drive, scenario, sys.argv[-1], timeout=60)
    except Exception as exc:  # noqa: BLE001 - reported to the suite as the client's failure
        print(f"client_driver: {scenario} failed through the gateway: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
