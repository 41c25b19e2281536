"""
Tests for L{twisted_mcp.service.GatewayService.reload}: the configuration
re-read from a file and applied as a diff, on a service that was built but
not started (its backends are HTTP ones whose start and stop are recorded
instead of run), with the time of a L{Clock}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from twisted_mcp.backends.http import HttpBackend
from twisted_mcp.config import Config, ConfigError
from twisted_mcp.config.loader import load
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp import errors
from twisted_mcp.policy.breaker import Breaker
from twisted_mcp.policy.peers import Peer
from twisted_mcp.service import GatewayService

from .fakes import FakeSpawner

LIST_CHANGED = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}


def server(name: str, **extra: Any) -> dict[str, Any]:
    return {"url": f"http://127.0.0.1:9/{name}", **extra}


class World:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = tmp_path / "gw.yaml"
        self.clock = Clock()
        self.started: list[HttpBackend] = []
        self.stopped: list[HttpBackend] = []
        self.out: dict[str, list[bytes]] = {}
        world = self

        def start(backend: HttpBackend) -> None:
            world.started.append(backend)

        def stop(backend: HttpBackend) -> Deferred[None]:
            world.stopped.append(backend)
            return succeed(None)

        monkeypatch.setattr(HttpBackend, "startService", start)
        monkeypatch.setattr(HttpBackend, "stopService", stop)

    def write(self, data: dict[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(data))

    def load(self) -> Config:
        return load(str(self.path), environ={})

    def service(self, data: dict[str, Any]) -> GatewayService:
        self.write(data)
        self.svc = GatewayService(self.load(), self.clock, FakeSpawner(), environ={})
        return self.svc

    def reload(self, data: dict[str, Any] | None = None) -> tuple[bool, list[str], str]:
        if data is not None:
            self.write(data)
        return self.svc.reload(self.load)

    @property
    def backends(self) -> dict[str, Any]:
        return self.svc.gateway.backends  # type: ignore[no-any-return]

    def ready(self, tools: dict[str, list[str]]) -> None:
        """Give the backends tools and finish the first discovery."""
        for name, names in tools.items():
            self.backends[name].tools = [{"name": t, "inputSchema": {"type": "object"}} for t in names]
        for b in self.backends.values():
            b._first_discovery_done()
        self.svc.gateway.start()
        assert self.svc.gateway.ready

    def session(self, label: str, peer: Any = None) -> ClientSession:
        out: list[bytes] = []
        self.out[label] = out
        session = ClientSession(self.svc.gateway, line_caller(out.append, label, peer))
        deliver(session, json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}).encode())
        deliver(session, b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        assert session.initialized
        self.take(label)
        return session

    def take(self, label: str) -> list[Any]:
        messages = [json.loads(line) for line in self.out[label]]
        del self.out[label][:]
        return messages

    def listing(self, label: str, session: ClientSession) -> list[str]:
        deliver(session, b'{"jsonrpc": "2.0", "id": 99, "method": "tools/list"}')
        (answer,) = self.take(label)
        return [t["name"] for t in answer["result"]["tools"]]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch)


BASE = {"mcpServers": {"alpha": server("alpha"), "beta": server("beta"), "gamma": server("gamma")}}


class TestBackends:
    def test_diff(self, world: World) -> None:
        svc = world.service(BASE)
        alpha, beta, gamma = (world.backends[n] for n in ("alpha", "beta", "gamma"))
        new = {"mcpServers": {"alpha": server("alpha"), "beta": server("beta", callTimeout=5), "delta": server("delta")}}
        applied, changes, problems = world.reload(new)
        assert (applied, problems) == (True, "")
        assert changes == ["backend gamma: removed", "backend beta: restarted (its configuration changed)", "backend delta: added"]
        assert sorted(world.backends) == ["alpha", "beta", "delta"]
        assert world.backends["alpha"] is alpha  # untouched: kept running
        new_beta, delta = world.backends["beta"], world.backends["delta"]
        assert new_beta is not beta and new_beta.config.callTimeout == 5
        assert sorted(b.name for b in svc.backends) == ["alpha", "beta", "delta"]
        assert set(svc.backends) == {alpha, new_beta, delta}
        assert world.started == [new_beta, delta]
        assert world.stopped == [gamma, beta]  # no calls in flight: at once
        assert svc.retiring == set()
        assert svc.config.source == str(world.path) and "delta" in {s.name for s in svc.config.servers}
        # The new ones are watched like the first ones; the old ones no longer.
        for b in (new_beta, delta):
            assert svc._idle_template in b._listeners
            assert svc.gateway._backend_changed in b._listeners
        for b in (beta, gamma):
            assert svc._idle_template not in b._listeners
            assert svc.gateway._backend_changed not in b._listeners

    def test_nothing_changed(self, world: World) -> None:
        svc = world.service(BASE)
        before = dict(world.backends)
        identity = svc.identity
        assert world.reload() == (True, [], "")
        assert world.backends == before
        assert all(world.backends[n] is before[n] for n in before)
        assert world.started == [] and world.stopped == []
        assert svc.identity is identity

    def test_removed_backend_finishes_its_calls(self, world: World) -> None:
        world.service(BASE)
        gamma = world.backends["gamma"]
        pending = [2]
        gamma.in_flight = lambda: pending[0]
        world.reload({"mcpServers": {"alpha": server("alpha"), "beta": server("beta")}})
        assert "gamma" not in world.backends
        assert world.stopped == []
        assert world.svc.retiring == {gamma}
        world.clock.advance(0.05)
        world.clock.advance(0.05)
        assert world.stopped == []
        pending[0] = 0
        world.clock.advance(0.05)
        assert world.stopped == [gamma]
        assert world.svc.retiring == set()
        assert world.clock.getDelayedCalls() == []

    def test_removed_backend_stopped_after_the_grace_period(self, world: World) -> None:
        world.service({"gateway": {"shutdownGrace": 1}, **BASE})
        gamma = world.backends["gamma"]
        gamma.in_flight = lambda: 1
        world.reload({"gateway": {"shutdownGrace": 1}, "mcpServers": {"alpha": server("alpha"), "beta": server("beta")}})
        waited = 0.0
        while not world.stopped:
            assert waited < 2.0, "never stopped"
            world.clock.advance(0.05)
            waited += 0.05
        assert 0.95 <= waited <= 1.1
        assert world.stopped == [gamma]
        assert world.svc.retiring == set()
        assert world.clock.getDelayedCalls() == []

    def test_per_session_instances_of_a_removed_backend(self, world: World) -> None:
        svc = world.service(BASE)
        gamma = world.backends["gamma"]
        session = world.session("s1")
        instance = svc._make_backend(gamma.config)
        session.own["gamma"] = instance
        svc.gateway.instances.add(instance)
        world.reload({"mcpServers": {"alpha": server("alpha"), "beta": server("beta")}})
        assert session.own == {}
        assert svc.gateway.instances == set()
        assert world.stopped == [gamma, instance]


class TestSections:
    def test_policy(self, world: World) -> None:
        svc = world.service(BASE)
        old = svc.gateway.policy
        applied, changes, _ = world.reload({**BASE, "killSwitch": {"tools": ["gamma__*"]}})
        assert applied and changes == ["policy: replaced"]
        assert svc.gateway.policy is not old
        assert svc.gateway.policy.rules.kill_tools == ("gamma__*",)

    def test_identity(self, world: World) -> None:
        svc = world.service(BASE)
        assert svc.identity is None
        assert svc.gateway.policy.principal(None).name == "local"
        applied, changes, _ = world.reload({**BASE, "identity": {"principal": {"name": "alice", "roles": ["dev"]}}})
        assert applied and changes == ["identity: replaced"]
        assert svc.identity is not None and svc.authenticator is not None
        principal = svc.gateway.policy.principal(None)
        assert (principal.name, principal.roles) == ("alice", ("dev",))

    def test_audit_needs_a_restart(self, world: World) -> None:
        svc = world.service(BASE)
        applied, changes, _ = world.reload({**BASE, "audit": {"sink": "none"}})
        assert applied and changes == ["audit: needs a restart"]
        assert svc.audit is None
        assert svc.gateway.policy.audit is None

    def test_gateway_settings_need_a_restart(self, world: World) -> None:
        world.service(BASE)
        applied, changes, _ = world.reload({**BASE, "gateway": {"maxMessageBytes": 4096}})
        assert applied and changes == ["gateway (other than adminToken): needs a restart"]

    def test_admin_token(self, world: World) -> None:
        svc = world.service(BASE)
        applied, changes, _ = world.reload({**BASE, "gateway": {"adminToken": "s3cret"}})
        assert applied and changes == ["gateway.adminToken: replaced"]
        assert svc.config.gateway.adminToken == "s3cret"
        applied, changes, _ = world.reload({**BASE, "gateway": {"adminToken": "rotated"}})
        assert changes == ["gateway.adminToken: replaced"]
        assert svc.config.gateway.adminToken == "rotated"


class TestRejected:
    def assert_kept(self, world: World, config: Config, backends: dict[str, Any]) -> None:
        assert world.svc.config is config
        assert world.backends == backends
        assert world.started == [] and world.stopped == []

    def test_invalid(self, world: World) -> None:
        svc = world.service(BASE)
        config, backends, policy = svc.config, dict(world.backends), svc.gateway.policy
        applied, changes, problems = world.reload({"mcpServers": {"alpha": server("alpha")}, "rolez": {}})
        assert (applied, changes) == (False, [])
        assert "1 problem(s)" in problems and "rolez: unknown key" in problems
        self.assert_kept(world, config, backends)
        assert svc.gateway.policy is policy

    def test_unreadable(self, world: World) -> None:
        svc = world.service(BASE)
        config, backends = svc.config, dict(world.backends)
        os.unlink(world.path)
        applied, changes, problems = svc.reload(world.load)
        assert (applied, changes) == (False, [])
        assert "cannot read the file" in problems
        self.assert_kept(world, config, backends)

    def test_loader_fails(self, world: World) -> None:
        svc = world.service(BASE)
        config, backends = svc.config, dict(world.backends)

        def broken() -> Config:
            raise RuntimeError("boom")

        assert svc.reload(broken) == (False, [], "the configuration could not be read: boom")
        self.assert_kept(world, config, backends)

    def test_separator(self, world: World) -> None:
        svc = world.service(BASE)
        config, backends = svc.config, dict(world.backends)
        applied, changes, problems = world.reload({**BASE, "gateway": {"separator": "--"}, "killSwitch": {"tools": ["x"]}})
        assert (applied, changes, problems) == (False, [], "gateway.separator cannot change without a restart")
        self.assert_kept(world, config, backends)
        assert svc.gateway.policy.rules.kill_tools == ()

    def test_config_error_is_what_load_raises(self, world: World) -> None:
        """The rejection text is the ConfigError's rendering, every problem in it."""
        world.service(BASE)
        world.write({"mcpServers": {"alpha": {"url": "ftp://x"}}, "rolez": 1})
        with pytest.raises(ConfigError) as e:
            world.load()
        assert world.svc.reload(world.load) == (False, [], e.value.render())


class TestPolicyState:
    def test_runtime_kill_switch_survives(self, world: World) -> None:
        svc = world.service(BASE)
        svc.gateway.policy.set_kill("tool", "alpha__x", True)
        svc.gateway.policy.set_kill("backend", "beta", True)
        svc.gateway.policy.set_kill("principal", "mallory", True)
        old = svc.gateway.policy
        applied, changes, _ = world.reload({**BASE, "killSwitch": {"tools": ["gamma__*"]}})
        assert applied and changes == ["policy: replaced"]
        assert svc.gateway.policy is not old
        assert svc.gateway.policy.kill_switch() == {"principals": ["mallory"], "backends": ["beta"], "tools": ["alpha__x", "gamma__*"]}
        # And through a reload that changes nothing.
        world.reload()
        assert svc.gateway.policy.kill_switch()["tools"] == ["alpha__x", "gamma__*"]

    def test_runtime_kill_switch_enforced_after_reload(self, world: World) -> None:
        svc = world.service(BASE)
        world.ready({"alpha": ["x", "y"]})
        s = world.session("s1")
        svc.gateway.policy.set_kill("tool", "alpha__x", True)
        world.reload({**BASE, "breaker": {"failures": 3}})
        assert world.listing("s1", s) == ["alpha__y"]
        deliver(s, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "alpha__x"}}).encode())
        (answer,) = world.take("s1")
        assert answer["error"]["code"] == errors.TOOL_DISABLED

    def test_refusal_counters_survive(self, world: World) -> None:
        svc = world.service(BASE)
        svc.gateway.policy.refusals[errors.RATE_LIMITED] = 4
        svc.gateway.policy.refusals[errors.BUSY] = 1
        world.reload({**BASE, "killSwitch": {"tools": ["gamma__*"]}})
        assert svc.gateway.policy.refusals == {errors.RATE_LIMITED: 4, errors.BUSY: 1}

    def test_breakers_of_untouched_backends_survive(self, world: World) -> None:
        svc = world.service(BASE)
        breakers = {n: Breaker(n, 5, 30.0, world.clock) for n in ("alpha", "beta", "gamma")}
        svc.gateway.policy.breakers.update(breakers)
        world.reload({"mcpServers": {"alpha": server("alpha"), "beta": server("beta", callTimeout=5)}})
        assert svc.gateway.policy.breakers == {"alpha": breakers["alpha"]}
        # New thresholds: every breaker starts afresh.
        world.reload({"mcpServers": {"alpha": server("alpha"), "beta": server("beta", callTimeout=5)}, "breaker": {"failures": 2}})
        assert svc.gateway.policy.breakers == {}


class TestViews:
    ROLES = {"admin": {"allow": ["*"]}, "viewer": {"allow": ["alpha"]}}

    def config(self, viewer: list[str], servers: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "mcpServers": servers or {"alpha": server("alpha"), "beta": server("beta")},
            "identity": {"peers": [{"uid": 0, "name": "root", "roles": ["admin"]}, {"uid": 4242, "name": "eve", "roles": ["viewer"]}]},
            "roles": {**self.ROLES, "viewer": {"allow": viewer}},
        }

    def sessions(self, world: World) -> tuple[ClientSession, ClientSession]:
        admin = world.session("admin", Peer(transport="unix", listener="unix:/s", uid=0, gid=0, pid=1))
        viewer = world.session("viewer", Peer(transport="unix", listener="unix:/s", uid=4242, gid=4242, pid=2))
        assert world.listing("admin", admin) == ["alpha__echo", "beta__time"]
        assert world.listing("viewer", viewer) == ["alpha__echo"]
        return admin, viewer

    def test_only_changed_views_are_told(self, world: World) -> None:
        world.service(self.config(["alpha"]))
        world.ready({"alpha": ["echo"], "beta": ["time"]})
        admin, viewer = self.sessions(world)
        applied, changes, _ = world.reload(self.config(["beta"]))
        assert applied and changes == ["policy: replaced"]
        assert world.take("admin") == []
        assert world.take("viewer") == [LIST_CHANGED]
        assert world.listing("viewer", viewer) == ["beta__time"]

    def test_identity_change_tells_whom_it_concerns(self, world: World) -> None:
        world.service(self.config(["alpha"]))
        world.ready({"alpha": ["echo"], "beta": ["time"]})
        admin, viewer = self.sessions(world)
        data = self.config(["alpha"])
        data["identity"]["peers"][1]["roles"] = ["admin"]
        applied, changes, _ = world.reload(data)
        assert applied and changes == ["identity: replaced"]
        assert world.take("admin") == []
        assert world.take("viewer") == [LIST_CHANGED]
        assert world.listing("viewer", viewer) == ["alpha__echo", "beta__time"]

    def test_removed_backend_told_once(self, world: World) -> None:
        world.service(self.config(["alpha"]))
        world.ready({"alpha": ["echo"], "beta": ["time"]})
        admin, viewer = self.sessions(world)
        applied, changes, _ = world.reload(self.config(["alpha"], {"alpha": server("alpha")}))
        assert applied and changes == ["backend beta: removed"]
        assert world.take("admin") == [LIST_CHANGED]
        assert world.take("viewer") == []
        assert world.listing("admin", admin) == ["alpha__echo"]
        assert "beta__time" not in world.svc.gateway.catalog.entries

    def test_sessions_not_initialized_are_not_told(self, world: World) -> None:
        world.service(self.config(["alpha"]))
        world.ready({"alpha": ["echo"], "beta": ["time"]})
        out: list[bytes] = []
        ClientSession(world.svc.gateway, line_caller(out.append, "fresh", Peer(transport="unix", uid=4242, gid=4242, pid=3)))
        world.reload(self.config(["beta"]))
        assert out == []


class TestConcurrencyAcrossReload:
    def test_limit_holds_through_a_reload(self, world: World) -> None:
        data = {**BASE, "concurrency": {"backends": {"alpha": {"max": 1}}}}
        svc = world.service(data)
        world.ready({"alpha": ["slow"]})
        s = world.session("s1")
        sent: list[Deferred[Any]] = []

        def call(method: str, params: Any, on_progress: Callable[..., Any] | None = None, timeout: float | None = None, context: Any = None) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            sent.append(d)
            return d

        world.backends["alpha"].call = call
        request = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "alpha__slow"}}
        deliver(s, json.dumps({**request, "id": 1}).encode())
        assert len(sent) == 1
        assert world.reload() == (True, [], "")
        deliver(s, json.dumps({**request, "id": 2}).encode())
        try:
            assert len(sent) == 1, "a second call reached a backend limited to one at once"
            (answer,) = world.take("s1")
            assert answer["error"]["code"] == errors.BUSY
        finally:
            for d in sent:
                d.callback({"content": []})
            svc.gateway.sessions.clear()


class TestReloadThatCannotBeApplied:
    def test_a_backend_that_cannot_be_built_leaves_everything_running(self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
        svc = world.service(BASE)
        before = dict(svc.gateway.backends)
        policy = svc.gateway.policy
        import twisted_mcp.service as service_module

        real = service_module.HttpBackend

        def broken(server, *args, **kw):
            if server.name == "delta":
                raise ValueError("bad CA bundle")
            return real(server, *args, **kw)

        monkeypatch.setattr(service_module, "HttpBackend", broken)
        applied, changes, problems = world.reload({"mcpServers": {"alpha": server("alpha"), "delta": server("delta")}})
        assert (applied, changes) == (False, [])
        assert "bad CA bundle" in problems
        assert svc.gateway.backends == before  # beta and gamma were not taken out
        assert svc.gateway.policy is policy
        assert [s.name for s in svc.config.servers] == sorted(before)

    def test_no_reload_while_stopping(self, world: World) -> None:
        svc = world.service(BASE)
        svc.stopping = True
        assert world.reload({"mcpServers": {"alpha": server("alpha")}}) == (False, [], "the gateway is stopping")
        assert set(svc.gateway.backends) == {"alpha", "beta", "gamma"}

    def test_a_changed_backend_keeps_its_tools_until_its_replacement_lists_them(self, world: World) -> None:
        svc = world.service(BASE)
        world.ready({"alpha": ["x", "y"], "beta": ["z"]})
        s = world.session("s1")
        old = svc.gateway.backends["alpha"]
        world.reload({"mcpServers": {"alpha": server("alpha", callTimeout=5), "beta": server("beta"), "gamma": server("gamma")}})
        new = svc.gateway.backends["alpha"]
        assert new is not old
        assert world.listing("s1", s) == ["alpha__x", "alpha__y", "beta__z"]
        assert svc.gateway.catalog.entries["alpha__x"].backend is new
        assert not [m for m in world.take("s1") if m.get("method") == "notifications/tools/list_changed"]


class TestPerSessionEdges:
    def test_a_call_for_a_replaced_template_starts_nothing(self, world: World) -> None:
        svc = world.service({"mcpServers": {"alpha": server("alpha", perSession=True)}})
        world.ready({"alpha": ["x"]})
        s = world.session("s1")
        old = svc.gateway.backends["alpha"]
        world.reload({"mcpServers": {"alpha": server("alpha", perSession=True, callTimeout=5)}})
        spawned: list[Any] = []
        svc.gateway.spawn = lambda template: spawned.append(template)
        with pytest.raises(Exception) as e:
            s.instances._instance(old)
        assert e.value.code == errors.BACKEND_UNAVAILABLE and "removed or replaced" in e.value.message
        assert spawned == []

    def test_shutdown_waits_for_instances_of_sessions_that_ended(self, world: World) -> None:
        svc = world.service({"mcpServers": {"alpha": server("alpha", perSession=True)}})
        world.ready({"alpha": ["x"]})
        s = world.session("s1")
        stopping: Deferred[None] = Deferred()

        class Instance:
            name = "alpha"
            events = None

            def remove_listener(self, listener: Any) -> None:
                pass

            def stopService(self) -> Deferred[None]:
                return stopping

        s.own["alpha"] = Instance()
        first = s.drain(0, world.clock)
        second = s.drain(0, world.clock)  # the protocol drains twice on a half-close
        assert svc.gateway.stopping_instances
        stopped = svc.stopService()
        for d in (first, second, stopped):
            assert not d.called
        stopping.callback(None)
        for d in (first, second, stopped):
            assert d.called
