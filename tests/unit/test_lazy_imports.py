"""
A plain stdio gateway does not load what its configuration leaves out: the
libraries of the HTTP transports, OAuth, the audit trail, identity, YAML,
argument checks, URI templates and TLS load when configured (at start-up, where
their errors belong) or when first used, not with every gateway.

Each test starts the gateway in a child process (the service C{twistd
mcp-gateway} makes, on the stdio front, in front of one echo backend),
lists its tools over stdin and stdout, and reads the child's C{sys.modules}
once it stopped.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "tests" / "servers" / "echo_fast.py"

#: What a stdio gateway without these features must not import.
LAZY = (
    "yaml",
    "jsonschema",
    "referencing",
    "re2",
    "treq",
    "twisted.web",
    "sqlite3",
    "jwt",
    "twisted_mcp.config.yaml_text",
    "twisted_mcp.backends.http",
    "twisted_mcp.backends.oauth",
    "twisted_mcp.frontends.http",
    "twisted_mcp.ops.admin",
    "twisted_mcp.ops.admin_oauth",
    "twisted_mcp.policy.arguments",
    "twisted_mcp.policy.audit.log",
    "twisted_mcp.policy.audit.sinks",
    "twisted_mcp.policy.identity.authenticator",
    "twisted_mcp.policy.identity.keys",
    # TLS: the reactor is imported without it (twisted_mcp.tls_on_demand).
    "OpenSSL",
    "cryptography",
    "service_identity",
    "twisted.internet.ssl",
    "twisted.internet._sslverify",
    "twisted.protocols.tls",
    "twisted.internet._newtls",
)

CHILD = """
import json, sys
from twisted_mcp.tap import Options, makeService

options = Options()
options.parseOptions(["--config", sys.argv[1]])
service = makeService(options)  # imports the reactor, as under twistd
from twisted.internet import reactor
service.startService()
reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
reactor.run()
with open(sys.argv[2], "w") as f:
    json.dump(sorted(sys.modules), f)
"""


class Gateway:
    """The child: requests written to its stdin, answers read from its stdout."""

    def __init__(self, config: Path, modules: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(config), str(modules)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=config.parent,
        )
        self.buffer = b""

    def request(self, id_: int, method: str, params: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params}).encode() + b"\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + 30
        while True:
            line, newline, rest = self.buffer.partition(b"\n")
            if newline:
                self.buffer = rest
                message = json.loads(line)
                if message.get("id") == id_:
                    return message
                continue
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no answer to {method} within 30 s"
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            assert chunk, "the gateway exited"
            self.buffer += chunk

    def tools(self) -> list[str]:
        """Initialize, then list the tools until the backend's is there."""
        init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "lazy-imports", "version": "1"}}
        assert "result" in self.request(1, "initialize", init)
        deadline = time.monotonic() + 30
        for i in range(2, 1000):
            names = [t["name"] for t in self.request(i, "tools/list", {})["result"]["tools"]]
            if names or time.monotonic() > deadline:
                return names
            time.sleep(0.05)
        return []

    def stop(self) -> None:
        """Close stdin (the client went away): the gateway stops and exits."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            assert self.proc.wait(30) == 0
        finally:
            self.proc.stdout.close()


def started(tmp_path: Path, name: str, text: str) -> set[str]:
    """The modules the gateway held after starting with config C{text} and listing its tools."""
    config = tmp_path / name
    config.write_text(text)
    modules = tmp_path / "modules.json"
    gateway = Gateway(config, modules)
    try:
        assert gateway.tools() == ["echo__echo"]
    finally:
        if gateway.proc.poll() is None:
            gateway.stop()
    return set(json.loads(modules.read_text()))


def loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def echo_server() -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(ECHO)]}


@pytest.mark.timeout(120)
def test_a_plain_stdio_gateway_loads_none_of_the_optional_libraries(tmp_path: Path) -> None:
    modules = started(tmp_path, "gateway.json", json.dumps({"mcpServers": {"echo": echo_server()}}))
    assert "twisted_mcp.dispatch.gateway" in modules  # the child did run the gateway
    assert [name for name in LAZY if loaded(modules, name)] == []


@pytest.mark.timeout(120)
def test_a_configured_feature_loads_at_start_up(tmp_path: Path) -> None:
    # YAML, and an audit trail in SQLite: both are read and opened at start-up.
    text = (
        "mcpServers:\n"
        f"  echo: {json.dumps(echo_server())}\n"
        "audit:\n"
        "  sink: sqlite\n"
        f"  path: {json.dumps(str(tmp_path / 'audit.sqlite'))}\n"
    )
    modules = started(tmp_path, "gateway.yaml", text)
    for name in ("yaml", "twisted_mcp.config.yaml_text", "sqlite3", "twisted_mcp.policy.audit.log"):
        assert loaded(modules, name), name
    assert (tmp_path / "audit.sqlite").exists()


def test_argument_checks_load_with_the_first_call_checked() -> None:
    from twisted_mcp.policy import argument_checks, arguments

    validators = argument_checks.Validators()
    validators.forget({"t"})  # nothing kept yet: nothing to forget
    assert validators._validators is None
    tool = {"name": "t", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}
    validators.check("t", tool, {"n": 1})
    with pytest.raises(arguments.ArgumentError) as e:
        validators.check("t", tool, {"n": "one"})
    assert e.value.path == "/n"
    assert arguments.ArgumentError is argument_checks.ArgumentError
    # From the first check on, the checks are the real validators' own.
    assert validators.check == validators._validators.check
    assert isinstance(validators._validators, arguments.Validators)
