"""A dual-era MCP server over Streamable HTTP (SDK 2.3 `MCPServer` + uvicorn).

Usage:
  python tests/servers/http_dual_era.py --port N

The SDK's app routes each POST on its `MCP-Protocol-Version` header: a
2026-07-28 request (no session, the request's own headers checked against
its body: `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) or the handshake era
(`initialize`, `Mcp-Session-Id`).  So under `protocol: auto` the gateway
finds it modern; pinned `protocol: legacy` it is a handshake-era server.
Startup and shutdown as tests/servers/http_sdk.py (LISTENING <port>).

Tools: those of tests/servers/dual_era.py (echo, what_i_got; its resource
dual://greeting and prompt greet), and
  region(region, text)  returns "<region>: <text>"; `region` carries
                        `x-mcp-header: Region`, so a 2026-07-28 call must
                        mirror it in `Mcp-Param-Region` (the SDK refuses the
                        call with -32020 otherwise)
  slow(seconds)         sleeps; appends "started" when it starts and
                        "cancelled" when its request is cancelled (its POST
                        closed, or notifications/cancelled) to the file named
                        by DUAL_CANCEL_LOG
"""

from __future__ import annotations

import argparse
import os
from typing import Annotated

import anyio
import http_sdk  # first: it keeps the real stdout for the LISTENING line
from dual_era import mcp
from pydantic import Field


@mcp.tool(description="Returns '<region>: <text>'; region travels in the Mcp-Param-Region header")
def region(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], text: str) -> str:
    return f"{region}: {text}"


def _note(line: str) -> None:
    path = os.environ.get("DUAL_CANCEL_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@mcp.tool(description="Sleeps; notes when it starts and when it is cancelled")
async def slow(seconds: float) -> str:
    _note("started")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _note("cancelled")
        raise
    return f"slept {seconds:g}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    http_sdk.serve(mcp.streamable_http_app(host=http_sdk.HOST), args.port, "WARNING", False)


if __name__ == "__main__":
    main()
