"""
The reactor is imported without pyOpenSSL (twisted_mcp.tls_on_demand), and
TLS still works whenever it is first used: reactor.listenSSL and connectSSL,
the C{ssl:} front endpoint, an https client with the HTTP backends' TLS
options.

The reactor is imported once per process (this one's already has it), so
each test runs a child process and reads what it printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.certs import make
from twisted_mcp.tls_on_demand import ImportedOnFirstUse

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "tests" / "servers" / "echo_fast.py"
TLS_MODULES = ("OpenSSL", "cryptography", "service_identity", "twisted.internet.ssl", "twisted.protocols.tls")

#: Imports the reactor as tap.makeService does, then prints which TLS modules it loaded.
LEAN = """
import json, sys
from twisted_mcp.tls_on_demand import lean_reactor_import

with lean_reactor_import():
    from twisted.internet import reactor

TLS_MODULES = %r
loaded_with_the_reactor = [m for m in TLS_MODULES if m in sys.modules]
certs = json.loads(sys.argv[1])
results = {"loaded_with_the_reactor": loaded_with_the_reactor}

def done(key, value):
    results[key] = value
    if reactor.running:
        reactor.stop()

reactor.callLater(20, done, "timeout", True)
""" % (TLS_MODULES,)

LISTEN_AND_CONNECT_SSL = """
from twisted.internet import protocol, ssl
from twisted.internet.interfaces import IReactorSSL

results["IReactorSSL"] = IReactorSSL.providedBy(reactor)


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Ping(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"ping over tls")

    def dataReceived(self, data):
        done("answer", data.decode())


with open(certs["server.pem"], "rb") as f, open(certs["server-key.pem"], "rb") as k:
    server = ssl.PrivateCertificate.loadPEM(f.read() + b"\\n" + k.read())
with open(certs["ca.pem"], "rb") as f:
    ca = ssl.Certificate.loadPEM(f.read())
port = reactor.listenSSL(0, protocol.Factory.forProtocol(Echo), server.options(), interface="127.0.0.1")
client = ssl.optionsForClientTLS("localhost", trustRoot=ca)
reactor.connectSSL("127.0.0.1", port.getHost().port, protocol.ClientFactory.forProtocol(Ping), client)
reactor.run()
print(json.dumps(results))
"""

SSL_FRONT_AND_HTTPS_CLIENT = """
from treq.client import HTTPClient
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from twisted_mcp.backends.http import TLSPolicy
from twisted_mcp.frontends.endpoints import server_endpoint

root = Resource()
root.putChild(b"mcp", Data(b"answered over tls", "text/plain"))
description = (
    f"ssl:0:interface=127.0.0.1:privateKey={certs['server-key.pem']}:certKey={certs['server.pem']}:clientCA={certs['ca.pem']}"
)



async def get(port):
    agent = Agent(reactor, contextFactory=TLSPolicy(certs["ca.pem"], certs["client.pem"], certs["client-key.pem"]))
    response = await HTTPClient(agent).get(f"https://localhost:{port.getHost().port}/mcp")
    return (await response.content()).decode()


def fetch(port):
    from twisted.internet.defer import Deferred

    d = Deferred.fromCoroutine(get(port))
    d.addCallbacks(lambda body: done("body", body), lambda f: done("error", f.getErrorMessage()))


def start():
    listening = server_endpoint(reactor, description).listen(Site(root))
    listening.addCallbacks(fetch, lambda f: done("error", f.getErrorMessage()))


reactor.callWhenRunning(start)
reactor.run()
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make(str(tmp_path_factory.mktemp("certs")))


def run_child(script: str, certs: dict[str, str]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", LEAN + script, json.dumps(certs)], capture_output=True, env=env, timeout=60, cwd=str(ROOT)
    )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.timeout(90)
def test_listen_ssl_and_connect_ssl_work_after_a_lean_import(certs: dict[str, str]) -> None:
    results = run_child(LISTEN_AND_CONNECT_SSL, certs)
    assert results["loaded_with_the_reactor"] == []
    assert results["IReactorSSL"] is True
    assert results.get("answer") == "ping over tls", results
    assert "timeout" not in results


@pytest.mark.timeout(90)
def test_the_ssl_front_endpoint_and_an_https_client_work_after_a_lean_import(certs: dict[str, str]) -> None:
    results = run_child(SSL_FRONT_AND_HTTPS_CLIENT, certs)
    assert results["loaded_with_the_reactor"] == []
    assert results.get("body") == "answered over tls", results


#: twistd itself, as an MCP client runs it; the modules it held are written at exit.
TWISTD = """
import atexit, json, os, sys
atexit.register(lambda: json.dump(sorted(sys.modules), open(os.environ["MODULES_OUT"], "w")))
from twisted.scripts.twistd import run
run()
"""


@pytest.mark.timeout(120)
def test_the_twistd_command_does_not_load_openssl(tmp_path: Path) -> None:
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"mcpServers": {"echo": {"command": sys.executable, "args": [str(ECHO)]}}}))
    modules = tmp_path / "modules.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MODULES_OUT=str(modules))
    argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "mcp-gateway", "--config", str(config)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "tls-on-demand", "version": "1"}}
        request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        proc.stdin.flush()
        assert b'"id":1' in proc.stdout.readline().replace(b" ", b"")
        deadline = time.monotonic() + 30
        names: list[str] = []
        for rid in range(2, 1000):  # until the backend is up
            proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/list"}).encode() + b"\n")
            proc.stdin.flush()
            names = [t["name"] for t in json.loads(proc.stdout.readline())["result"]["tools"]]
            if names or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert names == ["echo__echo"]
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    loaded = set(json.loads(modules.read_text()))
    assert "twisted_mcp.dispatch.gateway" in loaded and "twisted.internet.epollreactor" in loaded
    assert [m for m in TLS_MODULES if m in loaded] == []


def test_a_module_imported_at_its_first_use() -> None:
    stand_in = ImportedOnFirstUse("json")
    assert stand_in.dumps([1]) == "[1]"
    assert "'json'" in repr(stand_in)
    with pytest.raises(ModuleNotFoundError):
        ImportedOnFirstUse("tests.unit.no_such_module").anything
