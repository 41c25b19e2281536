#!/usr/bin/env python3
"""
The stored catalog of real MCP servers' tools that the search-quality evaluation ranks
(docs/design/surface.md §8.1, §8.3): C{bench/data/real_tools.json}, C{{server: {"package",
"version", "tools": [definition, ...]}}}, the definitions as each server lists them.

    python bench/surface_catalog.py            # summary of the stored catalog
    python bench/surface_catalog.py --refresh  # start every server, list its tools, rewrite the file

C{--refresh} needs the servers installed by C{bench/surface_servers.sh}. Each server is started over
stdio with dummy credentials (listing tools needs none of them: no request reaches a real service),
and listed with the official C{mcp} SDK client (C{tools/list}, every page). A server that does not
start is reported and left out; the file is written only if at least C{--min-tools} tools were
listed. The server keys are the gateway's backend names, so a tool's shaped name is
C{<key>__<own name>}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
CATALOG = os.path.join(HERE, "data", "real_tools.json")
NODE_MODULES = os.path.join(HERE, "surface-node", "node_modules")
VENVS = os.path.join(HERE, ".venvs")

#: Dummy credentials: enough for each server to start and list; never valid anywhere.
DUMMY = "dummy-not-a-real-credential"


def _npm(package: str, *args: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"npm": package, "args": list(args), "env": dict(env or {})}


def _pypi(venv: str, distribution: str, script: str, *args: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"venv": venv, "pypi": distribution, "script": script, "args": list(args), "env": dict(env or {})}


def servers(scratch: str, redis_url: str) -> dict[str, dict[str, Any]]:
    """The servers of §8.1 by backend key.

    @param scratch: a directory for the servers that want a path.
    @param redis_url: where C{server-redis} connects before it answers anything (L{FakeRedis}).
    """
    return {
        "github": _npm("@modelcontextprotocol/server-github", env={"GITHUB_PERSONAL_ACCESS_TOKEN": DUMMY}),
        "fs": _npm("@modelcontextprotocol/server-filesystem", scratch),
        "memory": _npm("@modelcontextprotocol/server-memory", env={"MEMORY_FILE_PATH": os.path.join(scratch, "memory.jsonl")}),
        "everything": _npm("@modelcontextprotocol/server-everything", "stdio"),
        "gitlab": _npm(
            "@modelcontextprotocol/server-gitlab",
            env={"GITLAB_PERSONAL_ACCESS_TOKEN": DUMMY, "GITLAB_API_URL": "http://127.0.0.1:9/api/v4"},
        ),
        "slack": _npm("@modelcontextprotocol/server-slack", env={"SLACK_BOT_TOKEN": DUMMY, "SLACK_TEAM_ID": "T0DUMMY"}),
        "maps": _npm("@modelcontextprotocol/server-google-maps", env={"GOOGLE_MAPS_API_KEY": DUMMY}),
        "playwright": _npm("@playwright/mcp", "--headless"),
        "notion": _npm("@notionhq/notion-mcp-server", env={"NOTION_TOKEN": DUMMY}),
        "desktop": _npm("@wonderwhy-er/desktop-commander"),
        "k8s": _npm("mcp-server-kubernetes"),  # no kubeconfig in its HOME: the default (unreachable) cluster
        "git": _pypi("git", "mcp-server-git", "mcp-server-git"),
        "time": _pypi("time", "mcp-server-time", "mcp-server-time", "--local-timezone", "UTC"),
        "atlassian": _pypi(
            "atlassian",
            "mcp-atlassian",
            "mcp-atlassian",
            env={
                "JIRA_URL": "http://127.0.0.1:9/jira",
                "JIRA_USERNAME": "bench@example.invalid",
                "JIRA_API_TOKEN": DUMMY,
                "CONFLUENCE_URL": "http://127.0.0.1:9/wiki",
                "CONFLUENCE_USERNAME": "bench@example.invalid",
                "CONFLUENCE_API_TOKEN": DUMMY,
            },
        ),
        "firecrawl": _npm("firecrawl-mcp", env={"FIRECRAWL_API_KEY": "fc-" + DUMMY}),
        "hubspot": _npm("@hubspot/mcp-server", env={"PRIVATE_APP_ACCESS_TOKEN": DUMMY}),
        "sentry": _npm("@sentry/mcp-server", "--access-token", DUMMY),
        "puppeteer": _npm("@modelcontextprotocol/server-puppeteer"),
        "redis": _npm("@modelcontextprotocol/server-redis", redis_url),
        "brave": _npm("@modelcontextprotocol/server-brave-search", env={"BRAVE_API_KEY": DUMMY}),
        "thinking": _npm("@modelcontextprotocol/server-sequential-thinking"),
    }


class FakeRedis:
    """A loopback listener that answers C{+OK} to every RESP command: enough for C{server-redis},
    which connects (and gives up, exiting) before it serves C{tools/list}."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = "redis://127.0.0.1:%d" % self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="fake-redis", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    @staticmethod
    def _serve(connection: socket.socket) -> None:
        buffer = b""
        with connection:
            while chunk := connection.recv(65536):
                buffer += chunk
                while True:
                    end = FakeRedis._command_end(buffer)
                    if end is None:
                        break
                    buffer = buffer[end:]
                    connection.sendall(b"+OK\r\n")

    @staticmethod
    def _command_end(buffer: bytes) -> int | None:
        """The end of the first complete RESP array of bulk strings in C{buffer}, or None."""
        line_end = buffer.find(b"\r\n")
        if line_end < 0 or not buffer.startswith(b"*"):
            return None if line_end < 0 else line_end + 2  # an inline command: one line
        position = line_end + 2
        for _ in range(int(buffer[1:line_end])):
            header_end = buffer.find(b"\r\n", position)
            if header_end < 0:
                return None
            position = header_end + 2 + int(buffer[position + 1 : header_end]) + 2
            if position > len(buffer):
                return None
        return position

    def close(self) -> None:
        self._listener.close()


def _npm_command(package: str) -> tuple[list[str], str]:
    """C{node <the package's bin>} and the installed version."""
    root = os.path.join(NODE_MODULES, *package.split("/"))
    with open(os.path.join(root, "package.json")) as f:
        meta = json.load(f)
    bins = meta["bin"]
    script = bins if isinstance(bins, str) else next(iter(bins.values()))
    return ["node", os.path.join(root, script)], meta["version"]


def _pypi_command(venv: str, distribution: str, script: str) -> tuple[list[str], str]:
    """The venv's console script and the installed version of C{distribution}."""
    python = os.path.join(VENVS, venv, "bin", "python")
    version = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return [os.path.join(VENVS, venv, "bin", script)], version


async def _list_tools(command: list[str], env: Mapping[str, str], cwd: str, errlog: Any) -> list[dict[str, Any]]:
    """Every tool definition the server at C{command} lists (all pages), as JSON."""
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp_types import Implementation

    full_env = {key: value for key, value in os.environ.items() if key in ("PATH", "LANG", "LC_ALL", "TERM", "USER", "LOGNAME")}
    full_env["HOME"] = cwd  # servers that keep a config file (desktop-commander) keep it here
    full_env["PYTHONHASHSEED"] = "0"  # mcp-atlassian writes defaults from sets: the same order every refresh
    full_env.update(env)
    params = StdioServerParameters(command=command[0], args=command[1:], env=full_env, cwd=cwd)
    client = Client(
        stdio_client(params, errlog=errlog),
        mode="legacy",
        client_info=Implementation(name="twisted-mcp-bench", version="0"),
        cache=None,
        read_timeout_seconds=60,
    )
    tools: list[dict[str, Any]] = []
    async with client:
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            tools.extend(tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools


def refresh(only: list[str] | None, timeout: float) -> dict[str, dict[str, Any]]:
    """List every server (or those in C{only}); the servers that failed are reported on stderr."""
    import anyio

    catalog: dict[str, dict[str, Any]] = {}
    redis = FakeRedis()
    with tempfile.TemporaryDirectory(prefix="surface-catalog-") as scratch:
        for key, spec in servers(scratch, redis.url).items():
            if only and key not in only:
                continue
            try:
                if "npm" in spec:
                    command, version = _npm_command(spec["npm"])
                    package = f"npm {spec['npm']}"
                else:
                    command, version = _pypi_command(spec["venv"], spec["pypi"], spec["script"])
                    package = f"PyPI {spec['pypi']}"
            except (OSError, KeyError, subprocess.CalledProcessError) as exc:
                print(f"{key}: not installed ({exc}); run bench/surface_servers.sh", file=sys.stderr)
                continue
            home = os.path.join(scratch, "home-" + key)
            os.makedirs(home)
            errpath = os.path.join(scratch, key + ".stderr")

            async def listed(command: list[str] = command, spec: dict[str, Any] = spec, home: str = home, errpath: str = errpath) -> list[dict[str, Any]]:
                with open(errpath, "w") as errlog, anyio.fail_after(timeout):
                    return await _list_tools(command + spec["args"], spec["env"], home, errlog)

            try:
                tools = anyio.run(listed)
            except BaseException as exc:  # noqa: BLE001 - any failure leaves this server out
                if isinstance(exc, KeyboardInterrupt):
                    raise
                with open(errpath) as f:
                    tail = f.read()[-600:]
                print(f"{key}: did not list ({exc!r}); its stderr ends:\n{tail}", file=sys.stderr)
                continue
            catalog[key] = {"package": package, "version": version, "tools": tools}
            print(f"{key}: {package} {version}: {len(tools)} tools", file=sys.stderr)
    redis.close()
    return catalog


def load(path: str = CATALOG) -> dict[str, dict[str, Any]]:
    """The stored catalog."""
    with open(path) as f:
        catalog: dict[str, dict[str, Any]] = json.load(f)
    return catalog


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refresh", action="store_true", help="start the servers and list them again")
    parser.add_argument("--only", nargs="*", help="with --refresh: list only these server keys (merged into the stored file)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for one server to start and list")
    parser.add_argument("--min-tools", type=int, default=300, help="refuse to write a catalog smaller than this")
    parser.add_argument("--output", default=CATALOG)
    args = parser.parse_args()
    if args.refresh:
        catalog = refresh(args.only, args.timeout)
        if args.only and os.path.exists(args.output):
            catalog = {**load(args.output), **catalog}
        total = sum(len(server["tools"]) for server in catalog.values())
        if total < args.min_tools:
            print(f"only {total} tools listed (< {args.min_tools}); {args.output} left as it was", file=sys.stderr)
            return 1
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(dict(sorted(catalog.items())), f, indent=1, sort_keys=True)
            f.write("\n")
    catalog = load(args.output)
    for key, server in sorted(catalog.items()):
        print(f"{key:12} {server['package']} {server['version']}: {len(server['tools'])} tools")
    print(f"total: {len(catalog)} servers, {sum(len(s['tools']) for s in catalog.values())} tools")
    return 0


if __name__ == "__main__":
    sys.exit(main())
