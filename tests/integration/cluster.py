"""
The scale-out harness (issue 15): several replicas of the real daemon
behind a real HAProxy, sharing the machine's Redis and PostgreSQL.

L{Cluster} starts N replicas, each the real command line

    twistd -n --pidfile= mcp-gateway --config FILE \\
        --listen http:tcp:PORT:interface=127.0.0.1 --admin tcp:ADMIN:interface=127.0.0.1

in a directory of its own (C{${CLUSTER_REPLICA_DIR}} and
C{${CLUSTER_REPLICA}} are set in its environment, so one config can give
each replica its own pin lock file and replica name), each with its own
stdio backend (tests/servers/cluster_server.py: C{cluster__echo},
C{cluster__sleep}, C{cluster__pid}), and an HAProxy (the Debian package)
in front of them: round robin, affinity on C{Mcp-Session-Id} (the session
id of an answer stored in a stick table, matched on later requests),
health checks on each replica's admin C{/readyz} (every 500 ms, one
failure takes it out, two successes bring it back), C{option redispatch}
and C{retries 3}; every answer says which replica served it
(C{X-Served-By}).  Replicas can be killed (SIGKILL) and restarted, and
their admin endpoints called.  Closing the cluster stops everything and
fails if any process it started (replicas, their backends, HAProxy) is
left behind.

Clients: L{Stateless} sends stateless-era (2026-07-28) requests as plain
HTTP POSTs with the C{_meta} envelope and the C{Mcp-*} headers; L{Load}
runs many of them from threads of the test process (never inside a
gateway); handshake-era sessions use the official SDK's Streamable HTTP
client (L{tests.mcpclient.connect_http}).

Redis comes from TWISTED_MCP_TEST_REDIS (default
redis://127.0.0.1:6379/0): a test that needs it is skipped with the reason
when it cannot be reached, unless TWISTED_MCP_REQUIRE_REDIS=1 (then it
fails).  Each test gets its own key namespace (C{test-<uuid>}), deleted
afterwards.  PostgreSQL (TWISTED_MCP_TEST_POSTGRES, likewise with
TWISTED_MCP_REQUIRE_POSTGRES) gives each test its own audit table,
created as C{twisted-mcp audit init-db} would and dropped afterwards.
The C{private_redis} fixture is a redis-server of the test's own, on a
free port, for tests that stop and restart it.  The Redis fixtures here are
thin wrappers of L{tests.redis_support}.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests import redis_support
from tests.redis_support import PrivateRedis, delete_namespace, redis_url_or_skip, unique_namespace

from .conftest import PYTHON, SERVERS, alive, bin_path, descendants, free_port, gateway_env, wait_gone

MODERN = "2026-07-28"
ADMIN_TOKEN = "cluster-admin-" + "x" * 24
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
JSON_AND_SSE = "application/json, text/event-stream"
#: The backend every replica runs; its tools are cluster__echo, cluster__sleep, cluster__pid.
BACKEND = "cluster"


def backend_entry() -> dict[str, Any]:
    """The config entry of the replicas' stdio backend (a handshake-era SDK server)."""
    return {"command": PYTHON, "args": [os.path.join(SERVERS, "cluster_server.py")], "protocol": "legacy"}


# -- Redis (tests/redis_support.py) ----------------------------------------------


@pytest.fixture
def redis_namespace() -> Iterator[tuple[str, str]]:
    """
    (Redis URL, a namespace of this test's own, C{test-<uuid>}); its keys
    are deleted afterwards.  Skips (fails under C{TWISTED_MCP_REQUIRE_REDIS=1})
    when the test Redis does not answer.
    """
    url = redis_url_or_skip()
    namespace = unique_namespace()
    yield url, namespace
    delete_namespace(url, namespace)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started L{PrivateRedis} (its files in C{tmp_path/redis}), killed afterwards; C{.stop()} says when it was killed."""
    with redis_support.private_redis(workdir=tmp_path / "redis") as server:
        yield server


# -- PostgreSQL -------------------------------------------------------------------


@pytest.fixture
def audit_table() -> Iterator[tuple[str, str]]:
    """(DSN, a table of this test's own, created as `audit init-db` would); dropped afterwards."""
    psycopg = pytest.importorskip("psycopg", reason="the postgres audit sink needs psycopg")
    from twisted_mcp.policy.audit import init_postgres

    dsn = os.environ.get("TWISTED_MCP_TEST_POSTGRES", DEFAULT_POSTGRES)
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as e:
        reason = f"PostgreSQL is not reachable ({' '.join(str(e).split())}); set TWISTED_MCP_TEST_POSTGRES"
        if os.environ.get("TWISTED_MCP_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (TWISTED_MCP_REQUIRE_POSTGRES=1 makes this a failure)")
        pytest.skip(reason + ", or set TWISTED_MCP_REQUIRE_POSTGRES=1 to fail instead of skipping")
    table = f"audit_scaleout_{uuid.uuid4().hex[:12]}"
    init_postgres(dsn, table)
    yield dsn, table
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.execute(f'DROP TABLE IF EXISTS "{table}_schema"')


def audit_records(dsn: str, table: str) -> list[dict[str, Any]]:
    """Every record of a trail, in order."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return [json.loads(row[0]) for row in conn.execute(f'SELECT record FROM "{table}" ORDER BY seq')]


# -- processes ----------------------------------------------------------------------


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def mentioning(text: str) -> set[int]:
    """Live processes whose command line mentions C{text} (a test's own directory)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and text in cmdline(int(entry)) and alive(int(entry)):
            out.add(int(entry))
    return out


def wait_port(port: int, what: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{what} exited with {proc.returncode} before listening on {port}") from None
            assert time.monotonic() < deadline, f"{what} never listened on {port}"
            time.sleep(0.05)


def http_request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on its own connection; (status, headers (lower-case names), body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        h = dict(headers or {})
        if data is not None:
            h.setdefault("content-type", "application/json")
        conn.request(method, path, body=data, headers=h)
        response = conn.getresponse()
        content = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, content
    finally:
        conn.close()


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


class Replica:
    """One gateway process of a cluster (it may be killed and started again on the same ports)."""

    def __init__(self, cluster: "Cluster", index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"r{index + 1}"
        self.http_port = free_port()
        self.admin_port = free_port()
        self.dir = cluster.dir / self.name
        self.dir.mkdir()
        self.config = cluster.config_path
        self.logpath = self.dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def argv(self) -> list[str]:
        return [
            bin_path("twistd"),
            "-n",
            "--pidfile=",
            "mcp-gateway",
            "--config",
            str(self.config),
            "--listen",
            f"http:tcp:{self.http_port}:interface=127.0.0.1",
            "--admin",
            f"tcp:{self.admin_port}:interface=127.0.0.1",
        ]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is already running"
        env = gateway_env()
        env.update({"CLUSTER_REPLICA": self.name, "CLUSTER_REPLICA_DIR": str(self.dir)})
        env.update(self.cluster.env)
        self.starts += 1
        with open(self.logpath, "ab") as log:
            log.write(f"\n==== start #{self.starts} of {self.name} ====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(self.dir)
            )
        self.cluster.known.add(self.proc.pid)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remember_children(self) -> None:
        if self.running():
            self.cluster.known |= descendants(self.pid)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until its admin C{/readyz} answers 200."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if not self.running():
                raise AssertionError(f"{self.name} exited before it was ready; its log:\n{self.log()[-4000:]}")
            try:
                status, body = self.admin("GET", "/readyz", timeout=2)
                if status == 200:
                    self.remember_children()
                    return
                last = f"{status} {body.strip()}"
            except OSError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready within {timeout} s ({last}); its log:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    #: When the last L{kill} found the process gone (monotonic): until then its
    #: listening socket may still take a connection (HAProxy once sent a call
    #: to it a few milliseconds after the signal).
    gone_at: float | None = None

    def kill(self) -> float:
        """SIGKILL, as a crash: the replica has no chance to end anything.  When it was sent (monotonic)."""
        assert self.proc is not None
        self.remember_children()
        self.proc.send_signal(signal.SIGKILL)
        sent = time.monotonic()
        self.proc.wait(10)
        self.gone_at = time.monotonic()
        return sent

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, as an operator stops it; SIGKILL if it does not stop in time."""
        if not self.running():
            return
        assert self.proc is not None
        self.remember_children()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.name} did not stop within {timeout} s of SIGTERM") from None

    def restart(self) -> None:
        if self.running():
            self.kill()
        self.start()
        self.wait_ready()

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 10) -> tuple[int, str]:
        """An admin endpoint request with the admin token; (status, body)."""
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "host": f"127.0.0.1:{self.admin_port}"}
        if path.startswith("/status"):
            headers["accept"] = "application/json"
        status, _, content = http_request(self.admin_port, method, path, body, headers, timeout)
        return status, content.decode("utf-8", "replace")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.admin("GET", "/metrics")
        assert status == 200, text
        return parse_metrics(text)

    def log(self) -> str:
        try:
            return self.logpath.read_text(errors="replace")
        except OSError:
            return ""


class HAProxy:
    """HAProxy from Debian in front of a cluster's replicas, with a stats socket to see their states."""

    def __init__(self, cluster: "Cluster") -> None:
        binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
        if binary is None:
            why = "haproxy is not installed (apt-get install haproxy)"
            if os.environ.get("TWISTED_MCP_REQUIRE_PROXIES") == "1":
                pytest.fail(why + "; TWISTED_MCP_REQUIRE_PROXIES=1 makes this a failure")
            pytest.skip(why + ", or set TWISTED_MCP_REQUIRE_PROXIES=1 to fail instead of skipping")
        self.binary = binary
        self.cluster = cluster
        self.port = free_port()
        self.dir = cluster.dir / "haproxy"
        self.dir.mkdir()
        # A Unix socket's path is short (HAProxy takes 97 bytes): not under the test's long tmp_path.
        self.sockdir = tempfile.mkdtemp(prefix="tmcp-haproxy-")
        self.stats = Path(self.sockdir) / "stats.sock"
        self.config = self.dir / "haproxy.cfg"
        self.proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        servers = "\n".join(
            f"    server {r.name} 127.0.0.1:{r.http_port} check port {r.admin_port} inter 500ms fall 1 rise 2"
            for r in self.cluster.replicas
        )
        return f"""
global
    maxconn 4096
    stats socket {self.stats} mode 600 level admin
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout check 1s
    retries 3
    option redispatch
    # A new connection to the replica for every request: a request is then
    # either in flight on a replica that dies (answered 502) or sent to one
    # that is alive.  (A kept-alive server connection found dead when the
    # next request goes out on it makes HAProxy close the client's
    # connection without an answer, for the client to retry, which no MCP
    # client does for a POST.)
    option http-server-close

frontend mcp
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance roundrobin
    # Affinity on the handshake era's session: the id a replica hands out in
    # an answer is stored, and requests carrying it go to that replica while
    # it is up (redispatch sends them elsewhere when it is not).
    stick-table type string len 128 size 100k expire 30m
    stick store-response res.hdr(mcp-session-id)
    stick match req.hdr(mcp-session-id)
    option httpchk
    http-check send meth GET uri /readyz hdr Authorization "Bearer {ADMIN_TOKEN}"
    http-check expect status 200
    http-after-response set-header X-Served-By %[srv_name]
{servers}
"""

    def start(self) -> None:
        self.config.write_text(self.config_text())
        check = subprocess.run([self.binary, "-c", "-f", str(self.config)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"haproxy refused its config:\n{check.stdout}{check.stderr}"
        self.errors = open(self.dir / "haproxy.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "-db", "-f", str(self.config)], stdin=subprocess.DEVNULL, stdout=self.errors, stderr=self.errors
        )
        self.cluster.known.add(self.proc.pid)
        wait_port(self.port, "haproxy", self.proc)

    def states(self) -> dict[str, str]:
        """Each replica's state as HAProxy sees it (C{UP}, C{DOWN}, C{UP 1/2}...)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "replicas" and row.get("svname") not in ("BACKEND", "FRONTEND", None):
                out[row["svname"]] = row["status"]
        return out

    def wait_state(self, name: str, up: bool, timeout: float = 15) -> float:
        """Wait until HAProxy sees replica C{name} up (or down); how long it took."""
        start = time.monotonic()
        while True:
            state = self.states().get(name, "")
            if (state == "UP") if up else state.startswith("DOWN"):
                return time.monotonic() - start
            assert time.monotonic() - start < timeout, f"HAProxy still sees {name} as {state!r} after {timeout} s"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self.errors.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)


class Cluster:
    """
    N replicas of the gateway on one config (and optionally HAProxy in front).

    @param config: the config's sections; the harness adds the backend
        (C{mcpServers}), C{gateway.adminToken}, and the proxy's Host in
        C{http.allowedHosts}.
    @param overrides: replica index -> sections replacing the config's for
        that replica only (each such replica gets its own config file).
    @param env: more environment for every replica.
    """

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        replicas: int = 3,
        haproxy: bool = True,
        overrides: dict[int, dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = workdir / f"cluster-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir()
        self.env = dict(env or {})
        self.known: set[int] = set()
        self.config_path = self.dir / "gateway.yaml"
        self.base = config
        self.overrides = overrides or {}
        self.replicas = [Replica(self, i) for i in range(replicas)]
        self.proxy = HAProxy(self) if haproxy else None
        self.closed = False

    def config_for(self, sections: dict[str, Any]) -> dict[str, Any]:
        data = json.loads(json.dumps(sections))
        data.setdefault("mcpServers", {BACKEND: backend_entry()})
        data.setdefault("gateway", {}).setdefault("adminToken", ADMIN_TOKEN)
        if self.proxy is not None:
            data.setdefault("http", {}).setdefault("allowedHosts", []).append(f"127.0.0.1:{self.proxy.port}")
        return data

    def write_configs(self) -> None:
        self.config_path.write_text(json.dumps(self.config_for(self.base), indent=2))
        for index, sections in self.overrides.items():
            replica = self.replicas[index]
            replica.config = self.dir / f"gateway-{replica.name}.yaml"
            replica.config.write_text(json.dumps(self.config_for({**self.base, **sections}), indent=2))

    def start(self) -> "Cluster":
        self.write_configs()
        for replica in self.replicas:
            replica.start()
        for replica in self.replicas:
            replica.wait_ready()
        if self.proxy is not None:
            self.proxy.start()
            for replica in self.replicas:
                self.proxy.wait_state(replica.name, up=True)
        return self

    @property
    def port(self) -> int:
        """The port clients use: HAProxy's."""
        assert self.proxy is not None, "this cluster has no proxy"
        return self.proxy.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __getitem__(self, index: int) -> Replica:
        return self.replicas[index]

    def close(self) -> None:
        """Stop HAProxy and every replica; fail if any process the cluster started is left."""
        if self.closed:
            return
        self.closed = True
        problems = []
        if self.proxy is not None:
            self.proxy.stop()
        for replica in self.replicas:
            try:
                replica.stop()
            except AssertionError as e:
                problems.append(str(e))
        left = wait_gone(self.known, 20) | {p for p in mentioning(str(self.dir)) if p not in self.known}
        self.forget_shared_state()
        left = {p for p in left if alive(p)}
        if left:
            shown = [f"{p}: {cmdline(p)}" for p in sorted(left)]
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            problems.append("processes left behind by the cluster:\n  " + "\n  ".join(shown))
        if problems:
            raise AssertionError("\n".join(problems))

    def forget_shared_state(self) -> None:
        """
        Delete the keys of every test namespace (C{test-...}) the replicas
        used, now that none of them runs: a replica that was still running
        when the test's own clean-up deleted them may have written some
        again (the flags a replica restores into an emptied Redis).  A Redis
        that is gone by now (a test's private one) has nothing to delete.
        """
        sections = [self.base, *({**self.base, **o} for o in self.overrides.values())]
        for state in {json.dumps(s.get("state")) for s in sections}:
            settings = json.loads(state)
            if not isinstance(settings, dict) or not str(settings.get("namespace", "")).startswith("test-"):
                continue
            try:
                delete_namespace(settings["redis"], settings["namespace"])
            except (OSError, RuntimeError):
                pass


@pytest.fixture
def cluster(tmp_path) -> Iterator[Callable[..., Cluster]]:
    """cluster(config, replicas=3, haproxy=True, overrides=None, env=None) -> a started L{Cluster}; closed at teardown."""
    made: list[Cluster] = []

    def make(config: dict[str, Any], **kwargs: Any) -> Cluster:
        c = Cluster(tmp_path, config, **kwargs)
        made.append(c)
        return c.start()

    yield make
    errors = []
    for c in made:
        try:
            c.close()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors))


# -- clients --------------------------------------------------------------------


def envelope(**more: Any) -> dict[str, Any]:
    """A stateless-era request's C{_meta}."""
    return {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}, **more}


def messages(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an answer's body: one JSON document, or SSE events' data."""
    if not body:
        return []
    if content_type.startswith("text/event-stream"):
        out = []
        for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
            data = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
            if data and any(data):
                out.append(json.loads(b"\n".join(data)))
        return out
    return [json.loads(body)]


class Answer:
    """One stateless-era call's outcome as its client saw it."""

    __slots__ = ("status", "served_by", "message", "problem", "sent", "done")

    def __init__(
        self, status: int, served_by: str | None, message: dict[str, Any] | None, problem: str | None, sent: float, done: float
    ) -> None:
        self.status = status
        self.served_by = served_by
        self.message = message
        self.problem = problem
        self.sent = sent
        self.done = done

    @property
    def ok(self) -> bool:
        return self.message is not None and "result" in self.message and not self.message["result"].get("isError")

    @property
    def code(self) -> int | None:
        if self.message is not None and "error" in self.message:
            return int(self.message["error"]["code"])
        return None

    @property
    def text(self) -> str | None:
        if not self.ok:
            return None
        assert self.message is not None
        return str(self.message["result"]["content"][0]["text"])

    def __repr__(self) -> str:
        return f"<Answer {self.status} by {self.served_by}: {self.problem or self.message}>"


class Stateless:
    """A stateless-era (2026-07-28) client on one kept-alive HTTP connection (reopened when it breaks)."""

    def __init__(self, port: int, timeout: float = 30) -> None:
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.next_id = 0

    def call(self, tool: str, arguments: dict[str, Any]) -> Answer:
        self.next_id += 1
        rid = self.next_id
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": rid,
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments, "_meta": envelope()},
            }
        ).encode()
        headers = {
            "content-type": "application/json",
            "accept": JSON_AND_SSE,
            "mcp-protocol-version": MODERN,
            "mcp-method": "tools/call",
            "mcp-name": tool,
            "host": f"127.0.0.1:{self.port}",
        }
        sent = time.monotonic()
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request("POST", "/mcp", body=body, headers=headers)
            response = self.conn.getresponse()
            content = response.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return Answer(0, None, None, f"{type(e).__name__}: {e}", sent, time.monotonic())
        done = time.monotonic()
        served_by = response.getheader("x-served-by")
        if response.getheader("connection", "").lower() == "close":
            self.close()
        try:
            found = [m for m in messages(response.getheader("content-type", ""), content) if m.get("id") == rid]
        except ValueError:
            found = []
        if not found:
            return Answer(response.status, served_by, None, f"HTTP {response.status}: {content[:200]!r}", sent, done)
        return Answer(response.status, served_by, found[-1], None, sent, done)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Load:
    """
    C{threads} stateless-era clients calling as fast as they are answered
    until L{stop}; every call made is kept (its arguments and L{Answer}).

    @param arguments: (thread, sequence number) -> the call's arguments.
    """

    def __init__(self, port: int, threads: int, tool: str, arguments: Callable[[int, int], dict[str, Any]]) -> None:
        self.port = port
        self.tool = tool
        self.arguments = arguments
        self.stopping = threading.Event()
        self.calls: list[list[tuple[dict[str, Any], Answer]]] = [[] for _ in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True, name=f"load-{i}") for i in range(threads)]
        self.errors: list[BaseException] = []

    def _run(self, index: int) -> None:
        client = Stateless(self.port)
        try:
            n = 0
            while not self.stopping.is_set():
                args = self.arguments(index, n)
                self.calls[index].append((args, client.call(self.tool, args)))
                n += 1
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.errors.append(e)
        finally:
            client.close()

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout: float = 60) -> list[tuple[dict[str, Any], Answer]]:
        """Stop, wait for the calls in flight; every call made, in no particular order."""
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), f"{t.name} still calling {timeout} s after the load was stopped"
        if self.errors:
            raise self.errors[0]
        return [call for calls in self.calls for call in calls]


def call_direct(replica: Replica, tool: str, arguments: dict[str, Any]) -> Answer:
    """One stateless-era call straight to a replica (no proxy)."""
    client = Stateless(replica.http_port, timeout=10)
    try:
        return client.call(tool, arguments)
    finally:
        client.close()


def state_section(url: str, namespace: str, **more: Any) -> dict[str, Any]:
    """A C{state:} section on Redis at C{url}: this test's namespace, each replica named after itself, quick timings."""
    return {
        "redis": url,
        "namespace": namespace,
        "replica": "${CLUSTER_REPLICA:-cli}",
        "timeout": 0.5,
        "resyncInterval": 0.5,
        **more,
    }


def until_true(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll C{predicate} until it is true; the seconds it took (fails after C{timeout})."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)
