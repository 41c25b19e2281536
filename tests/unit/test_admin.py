"""
Tests for L{twisted_mcp.ops.admin}: the admin endpoint's pages and actions,
served by a real twisted.web L{Site} over a L{StringTransport}, for a real
L{Gateway} over fake backends and a small stand-in for the service.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, Callable

import attrs
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.web.server import Site

from twisted_mcp import __version__
from twisted_mcp.backends.base import State
from twisted_mcp.config import Config, GatewaySettings, HttpServer
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp import errors
from twisted_mcp.ops import admin as admin_module
from twisted_mcp.ops.admin import AdminResource
from twisted_mcp.policy.identity import IdentityError, Principal
from twisted_mcp.policy.pinning import digest
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import Concurrency, PolicyConfig, Rate
from twisted_mcp.reload import reload_in_a_thread
from twisted_mcp.service import GatewayService
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

from .fakes import FakeBackend

ECHO = {"name": "echo", "description": "echoes", "inputSchema": {"type": "object"}}
ADD = {"name": "add", "inputSchema": {"type": "object"}}
TIME = {"name": "get.time", "inputSchema": {"type": "object"}}


def config(token: str | None = None, required: tuple[str, ...] = ("alpha",), names: tuple[str, ...] = ("alpha", "beta")) -> Config:
    servers = tuple(HttpServer(name=n, url=f"http://127.0.0.1:9/{n}", required=n in required) for n in names)
    return Config(source="gw.yaml", gateway=GatewaySettings(adminToken=token), servers=servers)


class FakeService:
    """What the admin endpoint uses of a GatewayService (its view
    bookkeeping is the real one: it only reads C{self.gateway})."""

    _view = GatewayService._view
    views = GatewayService.views
    notify_views = GatewayService.notify_views

    def __init__(self, gateway: Gateway, config: Config, clock: Clock) -> None:
        self.gateway = gateway
        self.config = config
        self.settings = config.gateway
        self.clock = clock
        self.started_at = clock.seconds()
        self.stopping = False
        self.reloads: list[Any] = []
        self.reload_result: tuple[bool, list[str], str] = (True, [], "")

    def reload(self, load: Any) -> tuple[bool, list[str], str]:
        self.reloads.append(load)
        return self.reload_result


@attrs.define
class Response:
    code: int
    headers: dict[bytes, list[bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        assert self.header(b"content-type") == b"application/json", self.headers
        return json.loads(self.body)


def parse_response(raw: bytes) -> Response:
    head, _, content = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.split(b"\r\n")
    parsed: dict[bytes, list[bytes]] = {}
    for line in header_lines:
        k, _, v = line.partition(b":")
        parsed.setdefault(k.strip().lower(), []).append(v.strip())
    length = int(parsed[b"content-length"][0])
    assert len(content) == length
    return Response(int(status.split()[1]), parsed, content)


class World:
    def __init__(self, policy: Policy | None = None, per_session: bool = False) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.alpha = FakeBackend("alpha", [ECHO, ADD])
        self.beta = FakeBackend("beta", [TIME])
        self.gateway = Gateway([self.alpha, self.beta], "__", self.clock, 5.0)
        if policy is not None:
            self.gateway.policy = policy
        self.service = FakeService(self.gateway, config(), self.clock)
        self.loader: Callable[[], Any] = lambda: None
        self.admin = AdminResource(self.service, lambda: succeed(self.service.reload(self.loader)))
        self.out: dict[str, list[bytes]] = {}

    def ready(self) -> None:
        for b in self.gateway.backends.values():
            b._first_discovery_done()
        self.gateway.start()
        assert self.gateway.ready

    def request(
        self,
        method: bytes,
        path: bytes,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        admin: AdminResource | None = None,
        unix: bool = True,
    ) -> Response:
        """A request on a Unix-socket admin endpoint (C{unix=False}: TCP)."""
        return parse_response(self.start(method, path, body, headers, admin, unix).value())

    def start(
        self,
        method: bytes,
        path: bytes,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        admin: AdminResource | None = None,
        unix: bool = True,
    ) -> StringTransport:
        """Send a request; the answer is written to the returned transport."""
        site = Site(admin or self.admin, reactor=self.clock)
        host = UNIXAddress("/run/admin.sock") if unix else IPv4Address("TCP", "127.0.0.1", 9100)
        channel = site.buildProtocol(host)
        transport = StringTransport(hostAddress=host)
        channel.makeConnection(transport)
        lines = [method + b" " + path + b" HTTP/1.1", b"Host: localhost", b"Connection: close", b"Content-Length: %d" % len(body)]
        lines += [f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()]
        channel.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        transport.protocol = channel
        return transport

    def get(self, path: bytes, **kw: Any) -> Response:
        return self.request(b"GET", path, **kw)

    def post(self, path: bytes, value: Any = None, raw: bytes | None = None, **kw: Any) -> Response:
        body = raw if raw is not None else (b"" if value is None else json.dumps(value).encode())
        kw["headers"] = {"Content-Type": "application/json", **(kw.get("headers") or {})}
        return self.request(b"POST", path, body, **kw)

    # -- client sessions ---------------------------------------------------

    def session(self, label: str, client: dict[str, Any] | None = None, peer: Any = None, version: str = "2025-06-18") -> ClientSession:
        out: list[bytes] = []
        session = ClientSession(self.gateway, line_caller(out.append, label, peer))
        self.out[label] = out
        self.send(session, {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": client or {"name": "c"}}})
        self.send(session, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert session.initialized
        self.take(label)
        return session

    @staticmethod
    def send(session: ClientSession, message: Any) -> None:
        deliver(session, json.dumps(message).encode())

    def call(self, session: ClientSession, id: int, name: str) -> None:
        self.send(session, {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": {}}})

    def take(self, label: str) -> list[Any]:
        messages = [json.loads(line) for line in self.out[label]]
        del self.out[label][:]
        return messages


LIST_CHANGED = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}


@pytest.fixture
def world() -> World:
    return World()


# -- /healthz and /readyz ------------------------------------------------------


class TestHealth:
    def test_healthz(self, world: World) -> None:
        r = world.get(b"/healthz")
        assert (r.code, r.body, r.header(b"content-type")) == (200, b"ok\n", b"text/plain")
        world.service.stopping = True
        assert world.get(b"/healthz").code == 200

    def test_not_ready_before_discovery(self, world: World) -> None:
        r = world.get(b"/readyz")
        assert r.code == 503
        assert r.body == b"not ready\ndiscovery has not finished\n"
        world.ready()
        r = world.get(b"/readyz")
        assert (r.code, r.body) == (200, b"ready\n")

    def test_required_backend_down(self, world: World) -> None:
        world.ready()
        world.alpha.state = State.DOWN
        world.alpha.last_error = "connection refused"
        r = world.get(b"/readyz")
        assert r.code == 503
        assert r.body == b"not ready\nrequired backend alpha is down: connection refused\n"
        world.alpha.last_error = None
        assert world.get(b"/readyz").body == b"not ready\nrequired backend alpha is down\n"

    def test_optional_backend_down(self, world: World) -> None:
        world.ready()
        world.beta.state = State.DOWN
        assert world.get(b"/readyz").code == 200

    def test_required_backend_missing(self, world: World) -> None:
        world.ready()
        world.service.config = config(required=("alpha", "gamma"), names=("alpha", "beta", "gamma"))
        r = world.get(b"/readyz")
        assert (r.code, r.body) == (503, b"not ready\nrequired backend gamma is unknown\n")

    def test_shutting_down(self, world: World) -> None:
        world.ready()
        world.service.stopping = True
        r = world.get(b"/readyz")
        assert (r.code, r.body) == (503, b"not ready\nthe gateway is shutting down\n")

    def test_every_reason(self, world: World) -> None:
        world.service.stopping = True
        world.alpha.state = State.STARTING
        r = world.get(b"/readyz")
        assert r.code == 503
        assert r.body.splitlines() == [
            b"not ready",
            b"discovery has not finished",
            b"the gateway is shutting down",
            b"required backend alpha is starting",
        ]

    def test_per_session_backend_up_once_discovered(self, world: World) -> None:
        world.ready()
        world.alpha.per_session = True
        world.alpha.state = State.STOPPED  # its shared instance only discovers, then stops
        r = world.get(b"/readyz")
        assert (r.code, r.body) == (503, b"not ready\nrequired backend alpha is stopped\n")
        world.alpha.discovered = True
        assert world.get(b"/readyz").code == 200


# -- /metrics --------------------------------------------------------------------


def metrics(world: World) -> dict[str, Any]:
    r = world.get(b"/metrics")
    assert r.code == 200
    assert r.header(b"content-type") == CONTENT_TYPE_LATEST.encode()
    return {f.name: f for f in text_string_to_metric_families(r.body.decode())}


def samples(family: Any, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == family.name + suffix}


class TestMetrics:
    def test_http_sessions_and_streams(self, world: World) -> None:
        """/metrics and /status count the sessions and open streams of the HTTP listeners, and expiries."""
        from twisted_mcp.frontends.http import HttpFrontend, http_site
        from twisted_mcp.frontends.http_config import HttpSettings

        from .test_http_front import INIT, Connection

        world.ready()
        site = http_site(world.gateway, world.clock, GatewaySettings(), HttpSettings(sessionIdleTimeout=5.0), "http:tcp:8080")
        world.service.frontends = [HttpFrontend("http:tcp:8080", None, site, 1.0)]  # type: ignore[attr-defined]
        sids = []
        for _ in range(3):
            c = Connection(site)
            c.send(body=INIT)
            sids.append(c.response().headers["mcp-session-id"])
        stream = Connection(site)
        stream.send("GET", headers={"mcp-session-id": sids[0], "accept": "text/event-stream", "content-type": None})
        found = metrics(world)
        assert samples(found["twisted_mcp_http_sessions"]) == {(): 3.0}
        assert samples(found["twisted_mcp_http_streams"]) == {(): 1.0}
        world.clock.advance(6)  # the two without a stream expire
        found = metrics(world)
        assert samples(found["twisted_mcp_http_sessions"]) == {(): 1.0}
        assert samples(found["twisted_mcp_http_sessions_expired"], "_total") == {(): 2.0}
        assert world.get(b"/status?format=json").json()["http"] == {"sessions": 1, "streams": 1, "expired": 2}

    def test_requests_counter(self, world: World) -> None:
        world.ready()
        s = world.session("s1")
        world.call(s, 1, "alpha__echo")
        world.alpha.calls[-1].deferred.callback({"content": []})
        world.call(s, 2, "alpha__add")
        world.alpha.calls[-1].deferred.callback({"content": [], "isError": True})
        world.call(s, 3, "nope__nope")
        world.send(s, {"jsonrpc": "2.0", "id": 4, "method": "ping"})
        family = metrics(world)["twisted_mcp_requests"]
        assert family.type == "counter"
        got = samples(family, "_total")
        assert got == {
            (("code", ""), ("method", "initialize"), ("outcome", "ok")): 1.0,
            (("code", ""), ("method", "tools/call"), ("outcome", "ok")): 1.0,
            (("code", ""), ("method", "tools/call"), ("outcome", "tool_error")): 1.0,
            (("code", "-32602"), ("method", "tools/call"), ("outcome", "error")): 1.0,
            (("code", ""), ("method", "ping"), ("outcome", "ok")): 1.0,
        }

    def test_backend_error_codes_do_not_grow_the_label_set(self, world: World) -> None:
        """A backend may answer with any integer code: codes that are neither
        JSON-RPC's nor the gateway's share one label value, so a backend
        cannot grow the counter's label set (and memory) without bound."""
        world.ready()
        s = world.session("s1")
        for i in range(50):
            world.call(s, 10 + i, "alpha__echo")
            world.alpha.calls[-1].deferred.errback(JsonRpcError(1000 + i, "a backend's own error"))
        world.call(s, 99, "alpha__echo")
        world.alpha.calls[-1].deferred.errback(JsonRpcError(INVALID_PARAMS, "bad"))
        got = samples(metrics(world)["twisted_mcp_requests"], "_total")
        errors_seen = {dict(k)["code"]: v for k, v in got.items() if dict(k)["outcome"] == "error"}
        assert errors_seen == {"other": 50.0, str(INVALID_PARAMS): 1.0}
        assert len(world.gateway.requests) == 3  # initialize ok, and the two error labels
        replies = [m for m in world.take("s1") if m.get("id") in (10, 59)]
        assert [r["error"]["code"] for r in replies] == [1000, 1049]  # the client still sees the backend's code

    def test_latency_histogram(self, world: World) -> None:
        for seconds in (0.0003, 0.001, 0.003, 0.003, 0.7, 100.0):
            world.alpha.latency.observe(seconds)
        family = metrics(world)["twisted_mcp_backend_latency_seconds"]
        assert family.type == "histogram"
        buckets = {(s.labels["backend"], s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")}
        alpha = [(le, n) for (b, le), n in buckets.items() if b == "alpha"]
        values = [n for _, n in alpha]
        assert values == sorted(values)  # cumulative
        got = dict(alpha)
        assert got["0.0005"] == 1.0
        assert got["0.001"] == 2.0  # a bound is inclusive (le)
        assert got["0.0025"] == 2.0
        assert got["0.005"] == 4.0
        assert got["0.5"] == 4.0
        assert got["1.0"] == 5.0
        assert got["60.0"] == 5.0
        assert got["+Inf"] == 6.0
        count = {s.labels["backend"]: s.value for s in family.samples if s.name.endswith("_count")}
        total = {s.labels["backend"]: s.value for s in family.samples if s.name.endswith("_sum")}
        assert count == {"alpha": 6.0, "beta": 0.0}
        assert total["alpha"] == pytest.approx(100.7073)
        assert buckets[("beta", "+Inf")] == 0.0

    def test_refusals(self) -> None:
        rules = PolicyConfig(
            rate_tools=(Rate(rate=0.001, burst=1, tool="beta__*"),),
            conc_backends={"alpha": Concurrency(max=1, queue=0)},
            active=True,
        )
        world = World()
        world.gateway.policy = Policy(rules, "__", world.clock)
        world.ready()
        s = world.session("s1")
        world.call(s, 1, "beta__get_time")
        world.call(s, 2, "beta__get_time")  # rate limited
        world.call(s, 3, "alpha__echo")
        world.call(s, 4, "alpha__echo")  # no slot
        world.call(s, 5, "alpha__echo")  # no slot
        codes = {m["id"]: m["error"]["code"] for m in world.take("s1") if "error" in m}
        assert codes == {2: errors.RATE_LIMITED, 4: errors.BUSY, 5: errors.BUSY}
        found = metrics(world)
        assert samples(found["twisted_mcp_rate_limited"], "_total") == {(): 1.0}
        assert samples(found["twisted_mcp_concurrency_refused"], "_total") == {(): 2.0}
        assert samples(found["twisted_mcp_policy_refusals"], "_total") == {(("code", str(errors.RATE_LIMITED)),): 1.0, (("code", str(errors.BUSY)),): 2.0}
        assert samples(found["twisted_mcp_calls_in_flight"]) == {(): 2.0}
        assert samples(found["twisted_mcp_clients"]) == {(): 1.0}
        for call in world.alpha.calls + world.beta.calls:
            call.deferred.callback({"content": []})

    def test_nothing_refused(self, world: World) -> None:
        found = metrics(world)
        assert samples(found["twisted_mcp_rate_limited"], "_total") == {(): 0.0}
        assert samples(found["twisted_mcp_concurrency_refused"], "_total") == {(): 0.0}
        assert samples(found["twisted_mcp_policy_refusals"], "_total") == {}

    def test_backends(self, world: World) -> None:
        world.ready()
        world.gateway.instances.update({FakeBackend("alpha", []), FakeBackend("alpha", [])})
        world.beta.state = State.DOWN
        world.beta.restarts = 4  # type: ignore[attr-defined]
        world.gateway.policy.breakers["beta"] = SimpleNamespace(state="half-open")  # type: ignore[assignment]
        world.gateway.policy.breakers["alpha"] = SimpleNamespace(state="closed")  # type: ignore[assignment]
        found = metrics(world)
        by_backend = lambda name, suffix="": {k[0][1]: v for k, v in samples(found[name], suffix).items()}  # noqa: E731
        assert by_backend("twisted_mcp_backend_instances") == {"alpha": 2.0, "beta": 0.0}
        assert by_backend("twisted_mcp_backend_up") == {"alpha": 1.0, "beta": 0.0}
        assert by_backend("twisted_mcp_backend_tools") == {"alpha": 2.0, "beta": 1.0}
        assert by_backend("twisted_mcp_backend_restarts", "_total") == {"alpha": 0.0, "beta": 4.0}
        assert by_backend("twisted_mcp_breaker_open") == {"alpha": 0.0, "beta": 1.0}

    def test_per_session_backend_up_once_discovered(self, world: World) -> None:
        world.alpha.per_session = True
        world.alpha.state = State.STOPPED
        up = lambda: {k[0][1]: v for k, v in samples(metrics(world)["twisted_mcp_backend_up"]).items()}  # noqa: E731
        assert up()["alpha"] == 0.0
        world.alpha.discovered = True
        assert up()["alpha"] == 1.0


# -- /status ---------------------------------------------------------------------


class TestStatus:
    def populate(self, world: World) -> None:
        world.ready()
        world.clock.advance(12.5)
        s = world.session("s1", {"name": "claude", "version": "1.2"})
        world.call(s, 1, "alpha__echo")  # left in flight
        world.session("s0", version="2024-11-05")
        world.alpha.restarts = 2  # type: ignore[attr-defined]
        world.beta.state = State.DOWN
        world.beta.last_error = "exit status 3"
        world.gateway.policy.breakers["beta"] = SimpleNamespace(state="open")  # type: ignore[assignment]
        world.gateway.policy.set_kill("tool", "beta__get_time", True)
        world.gateway.policy.set_kill("principal", "mallory", True)
        world.gateway.policy.pins.quarantined = {"beta__get_time": "new tool, not in the lock file"}

    expected = {
        "version": __version__,
        "ready": True,
        "uptime": 12.5,
        "backends": [
            {"name": "alpha", "state": "up", "tools": ["alpha__add", "alpha__echo"], "restarts": 2, "breaker": "closed",
             "lastError": None, "required": True, "perSession": False, "instances": 0,
             "era": "legacy", "probe": "pinned", "protocol": None, "listen": None, "auth": None},
            {"name": "beta", "state": "down", "tools": ["beta__get_time"], "restarts": 0, "breaker": "open",
             "lastError": "exit status 3", "required": False, "perSession": False, "instances": 0,
             "era": "legacy", "probe": "pinned", "protocol": None, "listen": None, "auth": None},
        ],
        "clients": [
            {"id": "s0", "principal": "local", "client": "c", "protocol": "2024-11-05", "inFlight": 0},
            {"id": "s1", "principal": "local", "client": "claude 1.2", "protocol": "2025-06-18", "inFlight": 1},
        ],
        "killSwitch": {"principals": ["mallory"], "backends": [], "tools": ["beta__get_time"]},
        "quarantined": [{"tool": "beta__get_time", "reason": "new tool, not in the lock file"}],
        "http": {"sessions": 0, "streams": 0, "expired": 0},
        "heldCalls": {"held": 0, "waiting": 0, "maxHeldCalls": 128, "droppedProgress": 0},
    }

    def test_json_by_accept(self, world: World) -> None:
        self.populate(world)
        r = world.get(b"/status", headers={"Accept": "text/html;q=0.5, application/json"})
        assert r.code == 200
        assert r.json() == self.expected
        world.alpha.calls[0].deferred.callback({"content": []})

    def test_client_info_is_kept_short(self, world: World) -> None:
        """A session keeps clientInfo's name and version only, each cut to
        256 characters: what /status lists stays small however big the
        initialize was."""
        world.ready()
        world.session("big", {"name": "n" * 50_000, "version": "v" * 50_000, "extra": ["x" * 1000] * 10})
        world.session("odd", {"name": {"nested": "object"}, "version": 7})
        clients = {c["id"]: c["client"] for c in world.get(b"/status?format=json").json()["clients"]}
        assert clients == {"big": "n" * 256 + " " + "v" * 256, "odd": "?"}

    def test_json_by_query(self, world: World) -> None:
        self.populate(world)
        r = world.get(b"/status?format=json")
        assert r.json() == self.expected
        assert world.admin.status() == self.expected
        world.alpha.calls[0].deferred.callback({"content": []})

    def test_per_session_instances(self, world: World) -> None:
        world.ready()
        world.alpha.per_session = True
        world.gateway.instances.update({FakeBackend("alpha", []), FakeBackend("alpha", [])})
        (alpha, _) = world.get(b"/status?format=json").json()["backends"]
        assert (alpha["perSession"], alpha["instances"]) == (True, 2)
        assert "(per-session, 2 running)" in world.get(b"/status").body.decode()

    def test_unidentified_client(self) -> None:
        def authenticate(peer: Any) -> Principal:
            if peer == "known":
                return Principal(name="alice", source="peer")
            raise IdentityError("no principal is configured for this client", "unknown-peer")

        world = World(policy=Policy(PolicyConfig(), "__", Clock(), authenticate))
        world.ready()
        world.session("a", peer="known")
        ClientSession(world.gateway, line_caller(lambda line: None, "b", "stranger"))
        clients = world.get(b"/status?format=json").json()["clients"]
        assert [(c["id"], c["principal"]) for c in clients] == [("a", "alice"), ("b", None)]
        page = world.get(b"/status").body.decode()
        assert "b: ? as (unidentified)" in page
        assert "a: c as alice" in page

    def test_html(self, world: World) -> None:
        self.populate(world)
        r = world.get(b"/status")
        assert r.code == 200
        assert r.header(b"content-type") == b"text/html; charset=utf-8"
        page = r.body.decode()
        assert page.startswith("<!doctype html>")
        assert f"twisted-mcp {__version__}" in page
        assert "ready, up 12 s" in page  # :.0f rounds half to even
        assert "<td>beta</td><td>down</td><td>1</td><td>open</td><td>0</td><td>exit status 3</td>" in page
        assert "<li>alpha__echo</li>" in page and "Tools (3)" in page
        assert "s1: claude 1.2 as local (1 in flight)" in page
        assert "<li>principals: mallory</li>" in page and "<li>tools: beta__get_time</li>" in page
        assert "<li>beta__get_time: new tool, not in the lock file</li>" in page
        world.alpha.calls[0].deferred.callback({"content": []})

    def test_html_escapes(self) -> None:
        world = World()
        hostile = FakeBackend("<script>alert(1)</script>", ["t"])
        hostile.state = State.DOWN
        hostile.last_error = '<img src=x onerror="alert(2)">'
        world.gateway.backends[hostile.name] = hostile
        world.ready()
        world.session("<s>", {"name": "</li><script>alert(3)</script>", "version": "<v>"})
        world.gateway.policy.set_kill("tool", "<b>x</b>", True)
        world.gateway.policy.pins.quarantined = {"<u>t</u>": "<i>why</i>"}
        page = world.get(b"/status").body.decode()
        for raw in ("<script>", "<img", "<b>", "<i>", "<u>", "<s>", "<v>"):
            assert raw not in page, raw
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
        assert "&lt;/li&gt;&lt;script&gt;alert(3)&lt;/script&gt; &lt;v&gt;" in page
        assert "&lt;b&gt;x&lt;/b&gt;" in page and "&lt;i&gt;why&lt;/i&gt;" in page
        # The JSON keeps the values as they are.
        data = world.get(b"/status?format=json").json()
        assert "<script>alert(1)</script>" in [b["name"] for b in data["backends"]]


# -- POST /reload ----------------------------------------------------------------


class TestReload:
    def test_applied(self, world: World) -> None:
        world.service.reload_result = (True, ["backend gamma: added", "policy: replaced"], "")
        r = world.post(b"/reload")
        assert r.code == 200
        assert r.json() == {"applied": True, "changes": ["backend gamma: added", "policy: replaced"]}
        assert world.service.reloads == [world.loader]

    def test_rejected(self, world: World) -> None:
        world.service.reload_result = (False, [], "gw.yaml: 1 problem(s) in the configuration:\n  - mcpServers: missing")
        r = world.post(b"/reload", {})
        assert r.code == 422
        assert r.json() == {"applied": False, "problems": "gw.yaml: 1 problem(s) in the configuration:\n  - mcpServers: missing"}

    def test_cannot_reload(self, world: World) -> None:
        admin = AdminResource(world.service, None)
        r = world.post(b"/reload", admin=admin)
        assert r.code == 501
        assert r.json()["applied"] is False
        assert world.service.reloads == []

    def test_loads_in_the_thread_pool_and_answers_once_applied(self, world: World) -> None:
        """The file is read in a worker thread: nothing is loaded on the
        event loop, and the answer (what changed) comes once it is applied."""
        reactor, service = _PoolReactor(), _LoadingService()
        admin = AdminResource(world.service, lambda: reload_in_a_thread(reactor, service, service.read))
        transport = world.start(b"POST", b"/reload", b"{}", {"Content-Type": "application/json"}, admin)
        assert (service.read_calls, transport.value()) == (0, b"")
        assert len(reactor.pool.queued) == 1
        reactor.pool.run_all()
        assert service.read_calls == 1
        r = parse_response(transport.value())
        assert (r.code, r.json()) == (200, {"applied": True, "changes": ["backend gamma: added"]})

    def test_a_client_gone_before_the_answer_is_fine(self, world: World) -> None:
        reactor, service = _PoolReactor(), _LoadingService()
        admin = AdminResource(world.service, lambda: reload_in_a_thread(reactor, service, service.read))
        transport = world.start(b"POST", b"/reload", b"{}", {"Content-Type": "application/json"}, admin)
        transport.protocol.connectionLost(Failure(ConnectionDone()))
        reactor.pool.run_all()
        assert service.read_calls == 1
        assert transport.value() == b""

    def test_a_reload_that_fails_answers_500(self, world: World) -> None:
        admin = AdminResource(world.service, lambda: fail(RuntimeError("boom")))
        with capturedLogs() as events:
            r = world.post(b"/reload", {}, admin=admin)
        assert (r.code, r.json()) == (500, {"applied": False, "problems": "the reload failed; see the gateway's log"})
        assert [e["log_format"] for e in events if "log_failure" in e] == ["admin endpoint: reload failed"]

    def test_get(self, world: World) -> None:
        r = world.get(b"/reload")
        assert (r.code, r.header(b"allow")) == (405, b"POST")
        assert world.service.reloads == []

    @pytest.mark.parametrize("body", [b"{", b"\xff", b"[]", b'"reload"', b"null"])
    def test_bad_body(self, world: World, body: bytes) -> None:
        r = world.post(b"/reload", raw=body)
        assert r.code == 400
        assert "JSON" in r.json()["error"]
        assert world.service.reloads == []


class _Pool:
    """A thread pool that runs its work when told to."""

    def __init__(self) -> None:
        self.queued: list[Callable[[], None]] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        def run() -> None:
            try:
                result = f(*args, **kwargs)
            except Exception:
                on_result(False, Failure())
            else:
                on_result(True, result)

        self.queued.append(run)

    def run_all(self) -> None:
        while self.queued:
            self.queued.pop(0)()


class _PoolReactor:
    def __init__(self) -> None:
        self.pool = _Pool()

    def getThreadPool(self) -> _Pool:
        return self.pool

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class _LoadingService:
    """A service whose reload applies what its loader read."""

    def __init__(self) -> None:
        self.read_calls = 0

    def read(self) -> str:
        self.read_calls += 1
        return "config"

    def reload(self, load: Any) -> tuple[bool, list[str], str]:
        assert load() == "config"
        return True, ["backend gamma: added"], ""


# -- POST /kill ------------------------------------------------------------------


class TestKill:
    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"kind": "server", "name": "alpha"},
            {"kind": "tool"},
            {"kind": "tool", "name": ""},
            {"kind": "tool", "name": 5},
            {"kind": "tool", "name": ["alpha__echo"]},
            {"kind": "tool", "name": "alpha__echo", "disabled": "yes"},
            {"kind": "tool", "name": "alpha__echo", "disabled": 1},
            {"kind": "tool", "name": "alpha__echo", "disabled": None},
        ],
    )
    def test_validation(self, world: World, body: Any) -> None:
        r = world.post(b"/kill", body)
        assert r.code == 400
        assert "kind" in r.json()["error"]
        assert world.gateway.policy.kill_switch() == {"principals": [], "backends": [], "tools": []}

    def test_throw_and_release_a_tool(self, world: World) -> None:
        world.ready()
        s = world.session("s1")
        other = world.session("s2")
        r = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo"})
        assert r.code == 200
        assert r.json() == {"principals": [], "backends": [], "tools": ["alpha__echo"]}
        assert world.gateway.policy.kill_switch()["tools"] == ["alpha__echo"]
        assert world.take("s1") == [LIST_CHANGED]
        assert world.take("s2") == [LIST_CHANGED]
        world.call(s, 1, "alpha__echo")
        (answer,) = world.take("s1")
        assert answer["error"]["code"] == errors.TOOL_DISABLED
        assert world.alpha.calls == []
        assert world.get(b"/kill").json() == {"principals": [], "backends": [], "tools": ["alpha__echo"]}

        r = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo", "disabled": False})
        assert r.json() == {"principals": [], "backends": [], "tools": []}
        assert world.take("s1") == [LIST_CHANGED]
        world.call(other, 2, "alpha__echo")
        assert len(world.alpha.calls) == 1
        world.alpha.calls[0].deferred.callback({"content": []})

    def test_backend_and_principal(self, world: World) -> None:
        world.ready()
        assert world.post(b"/kill", {"kind": "backend", "name": "beta", "disabled": True}).code == 200
        r = world.post(b"/kill", {"kind": "principal", "name": "local"})
        assert r.json() == {"principals": ["local"], "backends": ["beta"], "tools": []}
        assert world.gateway.policy.kill_switch() == {"principals": ["local"], "backends": ["beta"], "tools": []}

    def test_only_changed_views_are_told(self, world: World) -> None:
        world.ready()
        world.session("s1")
        assert world.post(b"/kill", {"kind": "tool", "name": "nothing__here"}).code == 200
        assert world.take("s1") == []

    def test_a_backend_is_named_as_the_config_names_it(self, world: World) -> None:
        world.ready()
        s = world.session("s1")
        r = world.post(b"/kill", {"kind": "backend", "name": "ALPHA"})
        assert (r.code, r.json()["backends"]) == (200, ["alpha"])
        world.take("s1")
        world.call(s, 1, "alpha__echo")
        (answer,) = world.take("s1")
        assert answer["error"]["code"] == errors.BACKEND_DISABLED
        assert world.alpha.calls == []
        assert world.post(b"/kill", {"kind": "backend", "name": "Alpha", "disabled": False}).json()["backends"] == []

    @pytest.mark.parametrize("disabled", [True, False])
    def test_an_unknown_backend_is_refused(self, world: World, disabled: bool) -> None:
        world.ready()
        r = world.post(b"/kill", {"kind": "backend", "name": "gamma", "disabled": disabled})
        assert r.code == 404
        assert r.json() == {"error": "no backend named 'gamma' (known backends: alpha, beta)"}
        assert world.gateway.policy.kill_switch()["backends"] == []

    def test_a_backend_a_reload_removed_can_be_released(self, world: World) -> None:
        world.gateway.policy.set_kill("backend", "gone", True)
        r = world.post(b"/kill", {"kind": "backend", "name": "GONE", "disabled": False})
        assert (r.code, r.json()["backends"]) == (200, [])

    @pytest.mark.parametrize("name", ["alpha__[e", "alpha__[z-a]*", "alpha__x]", "alpha__ echo"])
    def test_a_malformed_tool_pattern_is_refused(self, world: World, name: str) -> None:
        world.ready()
        r = world.post(b"/kill", {"kind": "tool", "name": name})
        assert r.code == 400
        assert r.json()["error"].startswith("name: ") and repr(name) in r.json()["error"]
        assert world.gateway.policy.kill_switch()["tools"] == []

    def test_a_tool_range_is_folded(self, world: World) -> None:
        world.ready()
        s = world.session("s1")
        assert world.post(b"/kill", {"kind": "tool", "name": "alpha__[D-F]*"}).code == 200
        world.take("s1")
        world.call(s, 1, "alpha__echo")
        (answer,) = world.take("s1")
        assert answer["error"]["code"] == errors.TOOL_DISABLED

    def test_with_the_configured_switch(self) -> None:
        world = World(policy=Policy(PolicyConfig(kill_tools=("beta__*",), active=True), "__", Clock()))
        world.post(b"/kill", {"kind": "tool", "name": "alpha__add"})
        assert world.get(b"/kill").json() == {"principals": [], "backends": [], "tools": ["alpha__add", "beta__*"]}

    def test_run_time_entries_are_capped(self, world: World) -> None:
        """Every kind counts toward gateway.maxKillSwitchEntries; throwing one
        already thrown, and releasing, are always allowed."""
        world.service.settings = GatewaySettings(maxKillSwitchEntries=3)
        assert world.post(b"/kill", {"kind": "principal", "name": "mallory"}).code == 200
        assert world.post(b"/kill", {"kind": "backend", "name": "alpha"}).code == 200
        assert world.post(b"/kill", {"kind": "tool", "name": "beta__*"}).code == 200
        r = world.post(b"/kill", {"kind": "tool", "name": "beta__get_time"})
        assert r.code == 409
        assert r.json() == {
            "error": "the kill switch already holds 3 run-time entries, its cap (gateway.maxKillSwitchEntries); "
            "release some, or put them in the config's killSwitch and reload"
        }
        assert world.gateway.policy.kill_switch()["tools"] == ["beta__*"]
        assert world.post(b"/kill", {"kind": "tool", "name": "beta__*"}).code == 200
        assert world.post(b"/kill", {"kind": "principal", "name": "mallory", "disabled": False}).code == 200
        assert world.post(b"/kill", {"kind": "tool", "name": "beta__get_time"}).code == 200

    def test_the_default_cap(self, world: World) -> None:
        assert GatewaySettings().maxKillSwitchEntries == 1024
        for i in range(1024):
            world.gateway.policy.set_kill("principal", f"p{i}", True)
        assert world.post(b"/kill", {"kind": "principal", "name": "one-more"}).code == 409


# -- POST /pins/approve ----------------------------------------------------------


class TestApprove:
    @pytest.fixture
    def pinned(self, tmp_path: Any) -> tuple[World, Any]:
        lock = tmp_path / "tools.lock.json"
        rules = PolicyConfig(pinning="enforce", lock_file=str(lock), active=True)
        world = World()
        world.gateway.policy = Policy(rules, "__", world.clock)
        world.ready()
        assert sorted(world.gateway.policy.pins.quarantined) == ["alpha__add", "alpha__echo", "beta__get_time"]
        return world, lock

    def test_pinning_off(self, world: World) -> None:
        world.ready()
        r = world.post(b"/pins/approve", {"all": True})
        assert r.code == 409
        assert "pinning" in r.json()["error"]

    @pytest.mark.parametrize("body", [{}, {"tools": "alpha__echo"}, {"tools": [1]}, {"tools": None}, {"all": "yes"}, {"all": 1}])
    def test_bad_body(self, pinned: tuple[World, Any], body: Any) -> None:
        world, lock = pinned
        r = world.post(b"/pins/approve", body)
        assert r.code == 400
        assert "tools" in r.json()["error"]
        assert not lock.exists()

    def test_unknown_tool(self, pinned: tuple[World, Any]) -> None:
        world, lock = pinned
        r = world.post(b"/pins/approve", {"tools": ["alpha__echo", "nope__x"]})
        assert r.code == 404
        assert "nope__x" in r.json()["error"] and "alpha__echo" not in r.json()["error"]
        assert not lock.exists()
        assert "alpha__echo" in world.gateway.policy.pins.quarantined

    def test_pins_written_since_start_up_are_kept(self, pinned: tuple[World, Any]) -> None:
        world, lock = pinned
        lock.write_text(json.dumps({"version": 1, "tools": {"other__tool": {"backend": "other", "tool": "tool", "digest": "sha256:00"}}}))
        assert world.post(b"/pins/approve", {"tools": ["alpha__echo"]}).code == 200
        assert sorted(json.loads(lock.read_text())["tools"]) == ["alpha__echo", "other__tool"]

    def test_an_unreadable_lock_file_is_not_overwritten(self, pinned: tuple[World, Any]) -> None:
        world, lock = pinned
        lock.write_text("{not json")
        r = world.post(b"/pins/approve", {"tools": ["alpha__echo"]})
        assert r.code == 409 and "cannot be read" in r.json()["error"]
        assert lock.read_text() == "{not json"
        assert "alpha__echo" in world.gateway.policy.pins.quarantined

    def test_approve_some_then_all(self, pinned: tuple[World, Any]) -> None:
        world, lock = pinned
        s = world.session("s1")
        world.send(s, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        (listing,) = world.take("s1")
        assert listing["result"]["tools"] == []

        r = world.post(b"/pins/approve", {"tools": ["alpha__echo"]})
        assert r.code == 200
        assert r.json() == {"approved": ["alpha__echo"], "quarantined": ["alpha__add", "beta__get_time"]}
        written = json.loads(lock.read_text())
        assert written["tools"] == {"alpha__echo": {"backend": "alpha", "tool": "echo", "digest": digest(ECHO)}}
        assert world.take("s1") == [LIST_CHANGED]
        world.send(s, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        (listing,) = world.take("s1")
        assert [t["name"] for t in listing["result"]["tools"]] == ["alpha__echo"]

        r = world.post(b"/pins/approve", {"all": True})
        assert r.json() == {"approved": ["alpha__add", "beta__get_time"], "quarantined": []}
        written = json.loads(lock.read_text())
        assert written["tools"] == {
            "alpha__add": {"backend": "alpha", "tool": "add", "digest": digest(ADD)},
            "alpha__echo": {"backend": "alpha", "tool": "echo", "digest": digest(ECHO)},
            "beta__get_time": {"backend": "beta", "tool": "get.time", "digest": digest(TIME)},
        }
        assert world.gateway.policy.pins.quarantined == {}
        assert world.take("s1") == [LIST_CHANGED]

    def test_get(self, pinned: tuple[World, Any]) -> None:
        world, lock = pinned
        r = world.get(b"/pins/approve")
        assert (r.code, r.header(b"allow")) == (405, b"POST")
        assert not lock.exists()


# -- methods and the token --------------------------------------------------------


class TestMethods:
    @pytest.mark.parametrize("path", [b"/healthz", b"/readyz", b"/metrics", b"/status"])
    def test_post_on_a_page(self, world: World, path: bytes) -> None:
        r = world.post(path, {})
        assert (r.code, r.header(b"allow"), r.body) == (405, b"GET", b"method not allowed\n")

    # Twisted's own not-found page is deprecated (pytest.ini makes warnings errors).
    @pytest.mark.filterwarnings("ignore::DeprecationWarning")
    def test_unknown_path(self, world: World) -> None:
        assert world.get(b"/nope").code == 404


class TestToken:
    @pytest.fixture
    def guarded(self, world: World) -> World:
        world.service.config = config(token="s3cret")
        world.ready()
        return world

    def test_every_path_needs_it(self, guarded: World) -> None:
        for method, path in [(b"GET", b"/healthz"), (b"GET", b"/readyz"), (b"GET", b"/metrics"), (b"GET", b"/status"),
                             (b"GET", b"/kill"), (b"POST", b"/reload"), (b"POST", b"/kill"), (b"POST", b"/pins/approve"),
                             (b"GET", b"/reload")]:
            r = guarded.request(method, path, b"{}")
            assert r.code == 401, path
            assert r.header(b"www-authenticate") == b'Bearer realm="twisted-mcp"'
            assert r.body == b"unauthorized\n"
        r = guarded.get(b"/healthz", headers={"Authorization": "Bearer s3cret"})
        assert (r.code, r.body) == (200, b"ok\n")

    @pytest.mark.parametrize("given", ["Bearer wrong", "Bearer s3cre", "Bearer s3cret2", "s3cret", "Basic s3cret", "Bearers3cret", ""])
    def test_wrong_token(self, guarded: World, given: str) -> None:
        assert guarded.get(b"/status", headers={"Authorization": given}).code == 401

    def test_refused_actions_do_nothing(self, guarded: World) -> None:
        r = guarded.post(b"/kill", {"kind": "tool", "name": "alpha__echo"}, headers={"Authorization": "Bearer nope"})
        assert r.code == 401
        assert guarded.gateway.policy.kill_switch()["tools"] == []
        assert guarded.post(b"/reload", headers={"Authorization": "Bearer nope"}).code == 401
        assert guarded.service.reloads == []

    def test_read_live_from_the_config(self, guarded: World) -> None:
        guarded.service.config = config(token="rotated")
        assert guarded.get(b"/healthz", headers={"Authorization": "Bearer s3cret"}).code == 401
        assert guarded.get(b"/healthz", headers={"Authorization": "Bearer rotated"}).code == 200
        guarded.service.config = config(token=None)
        assert guarded.get(b"/healthz").code == 200

    def test_compared_in_constant_time(self, guarded: World, monkeypatch: pytest.MonkeyPatch) -> None:
        compared: list[tuple[bytes, bytes]] = []
        real = admin_module.hmac.compare_digest

        def compare_digest(a: bytes, b: bytes) -> bool:
            compared.append((a, b))
            return real(a, b)

        monkeypatch.setattr(admin_module.hmac, "compare_digest", compare_digest)
        assert guarded.get(b"/healthz", headers={"Authorization": "Bearer s3cret"}).code == 200
        assert guarded.get(b"/healthz", headers={"Authorization": "Bearer other"}).code == 401
        assert compared == [(b"s3cret", b"s3cret"), (b"other", b"s3cret")]

    def test_scheme_case_insensitive(self, guarded: World) -> None:
        assert guarded.get(b"/healthz", headers={"Authorization": "bearer s3cret"}).code == 200


class TestActionsAreGuarded:
    """State-changing requests: never from a web page, and over TCP only with a token."""

    def test_tcp_without_a_token_refuses_actions(self) -> None:
        world = World()
        r = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo"}, unix=False)
        assert r.code == 403 and "gateway.adminToken" in r.json()["error"]
        assert world.gateway.policy.kill_switch()["tools"] == []
        assert world.get(b"/status", unix=False).code == 200  # reading stays open

    def test_tcp_with_the_token_allows_them(self) -> None:
        world = World()
        world.service.config = config(token="t0k")
        r = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo"}, unix=False, headers={"Authorization": "Bearer t0k"})
        assert r.code == 200 and r.json()["tools"] == ["alpha__echo"]

    def test_a_browser_request_is_refused(self) -> None:
        world = World()
        r = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo"}, headers={"Origin": "https://evil.example"})
        assert r.code == 403
        assert world.gateway.policy.kill_switch()["tools"] == []

    def test_a_body_not_declared_json_is_refused(self) -> None:
        world = World()
        r = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo"}, headers={"Content-Type": "text/plain"})
        assert r.code == 415
        assert world.gateway.policy.kill_switch()["tools"] == []
