"""
Tests for profiles at the fronts (design of issue 14, section 2.3): which
view each connection, HTTP path and stateless request runs under
(C{Caller.view}), sessions bound to the path they were created on, the
C{--listen profile:<name>:} prefix and the refusals when a profile is
unknown at start or removed by a reload.  Over a real L{McpSite} and
L{SessionFactory} on L{StringTransport}s, with a L{Clock} and fake backends.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import Config, GatewaySettings
from twisted_mcp.config.models import Profile
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.frontends.admission import Admission
from twisted_mcp.frontends.http import http_site
from twisted_mcp.frontends.http_config import HttpSettings
from twisted_mcp.frontends.listeners import Listen, listeners_by_profile, parse_listen, profile_refusal
from twisted_mcp.frontends.stream import SessionFactory
from twisted_mcp.reload import removed_profiles_in_use

from .fakes import FakeBackend
from .test_http_front import INIT, Connection, Response, modern_call, modern_headers

PROFILES = {"dev": Profile(name="dev", tools=("alpha__*",)), "ops": Profile(name="ops")}


class PathConnection(Connection):
    """A client connection that sends to C{path}."""

    def send_to(self, path: str, method: str = "POST", body: Any = None, headers: dict[str, str | None] | None = None) -> Response:
        self.write(path, method, body, headers)
        return self.response()

    def write(self, path: str, method: str = "POST", body: Any = None, headers: dict[str, str | None] | None = None) -> None:
        """Send a request (its answer may not have come yet)."""
        h: dict[str, str | None] = {"host": "127.0.0.1:8080", "content-type": "application/json", "accept": "application/json, text/event-stream"}
        h.update(headers or {})
        data = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in h.items() if v is not None]
        if data or method == "POST":
            lines.append(f"content-length: {len(data)}")
        self.channel.dataReceived("\r\n".join(lines).encode() + b"\r\n\r\n" + data)


class HttpPathTests(SynchronousTestCase):
    """An HTTP listener serves the default view at /mcp and each profile at /mcp/<name>."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = FakeBackend("alpha", ["echo"])
        self.backend._first_discovery_done()
        self.gateway = Gateway([self.backend], "__", self.clock, 5.0)
        self.gateway.profiles = PROFILES
        self.gateway.start()
        self.make_site()

    def make_site(self, view: str | None = None, settings: HttpSettings | None = None, verify: Any = None) -> None:
        settings = settings or HttpSettings()
        self.site = http_site(self.gateway, self.clock, GatewaySettings(), settings, "http:tcp:8080:interface=127.0.0.1", None, verify, view=view)
        self.resource = self.site.resource_

    def send(self, path: str, method: str = "POST", body: Any = None, headers: dict[str, str | None] | None = None) -> Response:
        return PathConnection(self.site).send_to(path, method, body, headers)

    def initialize(self, path: str) -> str:
        r = self.send(path, body=INIT)
        self.assertEqual(r.status, 200, r.body)
        return r.headers["mcp-session-id"]

    def view_of(self, sid: str) -> str | None:
        view: str | None = self.resource.table.sessions[sid].core.caller.view
        return view

    def test_eachPathGivesItsView(self) -> None:
        """A session's caller has the view of the path it was created on: None at /mcp, the profile's at /mcp/<name>."""
        self.assertEqual(self.view_of(self.initialize("/mcp")), None)
        self.assertEqual(self.view_of(self.initialize("/mcp/dev")), "dev")
        self.assertEqual(self.view_of(self.initialize("/mcp/ops")), "ops")

    def test_aSessionIsBoundToItsPath(self) -> None:
        """A session id from /mcp/dev is unknown (404, -32001) on /mcp/ops and /mcp, and works on /mcp/dev."""
        sid = self.initialize("/mcp/dev")
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        for path in ("/mcp/ops", "/mcp"):
            r = self.send(path, body=ping, headers={"mcp-session-id": sid})
            self.assertEqual((r.status, r.json()["error"]["code"]), (404, -32001), path)
            r = self.send(path, "GET", headers={"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
            self.assertEqual(r.status, 404, path)
            r = self.send(path, "DELETE", headers={"mcp-session-id": sid, "content-type": None})
            self.assertEqual(r.status, 404, path)
        self.assertEqual(len(self.resource.table), 1)  # not ended by the attempts
        r = self.send("/mcp/dev", body=ping, headers={"mcp-session-id": sid})
        self.assertEqual((r.status, r.json()["result"]), (200, {}))
        default = self.initialize("/mcp")
        r = self.send("/mcp/dev", body=ping, headers={"mcp-session-id": default})
        self.assertEqual(r.status, 404)

    def test_anUnknownProfilePathIs404(self) -> None:
        """A path under /mcp that names no profile: 404 with a JSON-RPC error that says so; nothing opened."""
        for path in ("/mcp/nope", "/mcp/dev/more", "/mcp/Dev", "/mcp/"):
            r = self.send(path, body=INIT)
            self.assertEqual(r.status, 404, path)
            self.assertEqual(r.headers["content-type"], "application/json")
            error = r.json()["error"]
            self.assertEqual(error["code"], -32600)
            self.assertEqual(
                error["message"],
                f"Not Found: {path} is not an MCP endpoint of this gateway (no such profile is served here); the MCP endpoint is /mcp",
            )
        self.assertEqual(len(self.resource.table), 0)
        self.assertEqual(self.send("/elsewhere", body=INIT).status, 404)
        self.gateway.profiles = {}  # without profiles, the 404 is as it always was
        r = self.send("/mcp/dev", body=INIT)
        self.assertEqual((r.status, r.body), (404, b"not found: the MCP endpoint is /mcp\n"))

    def test_aProfileRemovedByAReloadIsNoLongerServed(self) -> None:
        """The paths follow Gateway.profiles: a profile gone is 404, with its sessions."""
        sid = self.initialize("/mcp/ops")
        self.gateway.profiles = {"dev": PROFILES["dev"]}
        self.assertEqual(self.send("/mcp/ops", body=INIT).status, 404)
        r = self.send("/mcp/ops", body={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"mcp-session-id": sid})
        self.assertEqual(r.status, 404)

    def test_theSessionsOfARemovedProfileEnd(self) -> None:
        """A reload removing ops ends the /mcp/ops sessions (their SSE stream too); one re-adding ops does not revive them."""
        ops = self.initialize("/mcp/ops")
        dev = self.initialize("/mcp/dev")
        default = self.initialize("/mcp")
        get = PathConnection(self.site)
        get.write("/mcp/ops", "GET", headers={"mcp-session-id": ops, "accept": "text/event-stream", "content-type": None})
        self.assertEqual(self.resource.open_streams(), 1)
        self.gateway.profiles = {"dev": PROFILES["dev"]}
        self.assertEqual(self.resource.end_removed_profiles(self.gateway.profiles), 1)
        self.assertEqual(sorted(self.resource.table.sessions), sorted([dev, default]))
        self.assertEqual(self.resource.open_streams(), 0)
        self.gateway.profiles = PROFILES
        r = self.send("/mcp/ops", body={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"mcp-session-id": ops})
        self.assertEqual(r.status, 404)

    def test_statelessRequestsRunUnderThePathsView(self) -> None:
        """2026-07-28 requests: one core session per client identity and path, each with the path's view."""
        for path in ("/mcp/dev", "/mcp", "/mcp/dev"):
            PathConnection(self.site).write(path, body=modern_call(1), headers=modern_headers())
        self.assertEqual(len(self.backend.calls), 3)
        views = sorted((hs.core.caller.view or "") for hs in self.resource.table.sessions.values())
        self.assertEqual(views, ["", "dev"])
        self.assertTrue(all(hs.stateless for hs in self.resource.table.sessions.values()))

    def test_aBoundListenerServesOnlyItsProfile(self) -> None:
        """--listen profile:ops:http:...: /mcp serves ops; /mcp/<other> is 404."""
        self.make_site(view="ops")
        self.assertEqual(self.view_of(self.initialize("/mcp")), "ops")
        for path in ("/mcp/dev", "/mcp/ops"):
            self.assertEqual(self.send(path, body=INIT).status, 404, path)
        PathConnection(self.site).write("/mcp", body=modern_call(1), headers=modern_headers())
        self.assertEqual({hs.core.caller.view for hs in self.resource.table.sessions.values()}, {"ops"})

    def test_protectedResourceMetadataForEachProfilePath(self) -> None:
        """With bearer tokens, each profile path has its RFC 9728 metadata, naming its own URL; a 401 there points to it."""

        def verify(token: str) -> Any:
            raise AssertionError("no token is sent here")

        self.make_site(settings=HttpSettings(authorizationServers=("https://idp.example.com/",)), verify=verify)
        well_known = "/.well-known/oauth-protected-resource"
        r = self.send(f"{well_known}/mcp/dev", "GET", headers={"content-type": None})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["resource"], "http://127.0.0.1:8080/mcp/dev")
        self.assertEqual(r.json()["authorization_servers"], ["https://idp.example.com/"])
        self.assertEqual(self.send(f"{well_known}/mcp", "GET").json()["resource"], "http://127.0.0.1:8080/mcp")
        self.assertEqual(self.send(f"{well_known}/mcp/nope", "GET").status, 404)
        r = self.send("/mcp/dev", body=INIT)
        self.assertEqual(r.status, 401)
        self.assertIn(f'resource_metadata="http://127.0.0.1:8080{well_known}/mcp/dev"', r.headers["www-authenticate"])
        configured = HttpSettings(resource="https://mcp.example.com/mcp", authorizationServers=("https://idp.example.com/",))
        self.make_site(settings=configured, verify=verify)
        r = self.send(f"{well_known}/mcp/ops", "GET")
        self.assertEqual(r.json()["resource"], "https://mcp.example.com/mcp/ops")
        self.make_site(view="ops", settings=configured, verify=verify)
        self.assertEqual(self.send(f"{well_known}/mcp/ops", "GET").status, 404)  # a bound listener serves ops at /mcp only


class StreamListenerTests(SynchronousTestCase):
    def test_aProfileListenersConnectionsHaveItsView(self) -> None:
        clock = Clock()
        gateway = Gateway([], "__", clock, 1.0)
        for view in ("ops", None):
            factory = SessionFactory(gateway, clock, GatewaySettings(), Admission(10, 10, 0, 100), "unix", "profile:ops:unix:/x", view=view)
            protocol = factory.buildProtocol(None)
            transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 40000))
            protocol.makeConnection(transport)
            assert protocol.session is not None
            self.assertEqual(protocol.session.caller.view, view)
            protocol.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])


class ListenTests(SynchronousTestCase):
    def test_parsing(self) -> None:
        """profile:<name>: is peeled before http:, and both combine; the whole value stays the listener's name."""
        self.assertEqual(parse_listen("unix:/run/x.sock"), Listen("unix:/run/x.sock", None, False, "unix:/run/x.sock"))
        self.assertEqual(parse_listen("http:tcp:8080"), Listen("http:tcp:8080", None, True, "tcp:8080"))
        self.assertEqual(parse_listen("profile:dev:unix:/run/dev.sock"), Listen("profile:dev:unix:/run/dev.sock", "dev", False, "unix:/run/dev.sock"))
        self.assertEqual(
            parse_listen("profile:ops:http:tcp:8081:interface=127.0.0.1"),
            Listen("profile:ops:http:tcp:8081:interface=127.0.0.1", "ops", True, "tcp:8081:interface=127.0.0.1"),
        )
        for bad in ("profile:", "profile:ops", "profile:ops:", "profile::unix:/x"):
            e = self.assertRaises(ValueError, parse_listen, bad)
            self.assertEqual(str(e), f"--listen {bad}: expected profile:<name>:<endpoint>, e.g. profile:dev:unix:/run/twisted-mcp/dev.sock")

    def test_anUnknownProfileIsRefused(self) -> None:
        listen = parse_listen("profile:x:unix:/run/x.sock")
        self.assertEqual(profile_refusal(listen, PROFILES), '--listen profile:x:unix:/run/x.sock: no profile "x" in the config (profiles: dev, ops)')
        self.assertEqual(profile_refusal(listen, {}), '--listen profile:x:unix:/run/x.sock: no profile "x" in the config (profiles: none)')
        self.assertIsNone(profile_refusal(parse_listen("profile:dev:unix:/x"), PROFILES))
        self.assertIsNone(profile_refusal(parse_listen("unix:/x"), {}))

    def test_theGatewayDoesNotStartWithAnUnknownProfile(self) -> None:
        """tap: the message on stderr, exit 78, before anything listens."""
        from twisted_mcp import tap

        config = Config(source="gateway.yaml", gateway=GatewaySettings(), servers=(), profiles=PROFILES)
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        e = self.assertRaises(SystemExit, tap._listens, ["unix:/run/a.sock", "profile:x:unix:/run/x.sock"], config)
        self.assertEqual(e.code, 78)
        self.assertEqual(
            err.getvalue(),
            'twisted-mcp: --listen profile:x:unix:/run/x.sock: no profile "x" in the config (profiles: dev, ops)\nThe gateway did not start.\n',
        )
        listens = tap._listens(["profile:ops:http:tcp:8081", "unix:/run/a.sock"], config)
        self.assertEqual([(x.profile, x.http) for x in listens], [("ops", True), (None, False)])
        e = self.assertRaises(SystemExit, tap._listens, ["profile:ops"], config)
        self.assertEqual(e.code, 64)

    def test_aReloadMayNotRemoveAProfileAListenerServes(self) -> None:
        listeners = listeners_by_profile([parse_listen("profile:ops:unix:/run/ops.sock"), parse_listen("profile:ops:http:tcp:8081"), parse_listen("unix:/x")])
        self.assertEqual(listeners, {"ops": ("profile:ops:unix:/run/ops.sock", "profile:ops:http:tcp:8081")})
        self.assertIsNone(removed_profiles_in_use(listeners, PROFILES))
        self.assertEqual(
            removed_profiles_in_use(listeners, {"dev": PROFILES["dev"]}),
            "profiles.ops is removed, but --listen profile:ops:unix:/run/ops.sock, profile:ops:http:tcp:8081 serves it: "
            "keep the profile, or restart the gateway without that listener",
        )


class ReloadTests(SynchronousTestCase):
    """GatewayService: Gateway.profiles at start and on reload; a reload removing a listener's profile is refused."""

    def test_profilesFollowTheConfig(self) -> None:
        from twisted_mcp.service import GatewayService

        clock = Clock()
        config = Config(source="gateway.yaml", gateway=GatewaySettings(), servers=(), profiles=PROFILES)
        service = GatewayService(config, clock, None)  # type: ignore[arg-type]
        self.assertEqual(service.gateway.profiles, PROFILES)
        service.profile_listeners = {"ops": ("profile:ops:unix:/run/ops.sock",)}
        without_ops = attrs.evolve(config, profiles={"dev": PROFILES["dev"]})
        applied, changes, problems = service.reload(lambda: without_ops)
        self.assertFalse(applied)
        self.assertIn("profiles.ops is removed, but --listen profile:ops:unix:/run/ops.sock serves it", problems)
        self.assertEqual(service.gateway.profiles, PROFILES)
        more = attrs.evolve(config, profiles={**PROFILES, "qa": Profile(name="qa")})
        applied, changes, problems = service.reload(lambda: more)
        self.assertEqual((applied, problems), (True, ""))
        self.assertIn("profiles: replaced", changes)
        self.assertEqual(sorted(service.gateway.profiles), ["dev", "ops", "qa"])


class ReloadEndsSessionsTests(SynchronousTestCase):
    def test_aReloadRemovingAProfileEndsItsHttpSessions(self) -> None:
        """GatewayService.reload ends the sessions of a removed profile on every HTTP listener."""
        from twisted_mcp.frontends.http import HttpFrontend
        from twisted_mcp.service import GatewayService

        clock = Clock()
        config = Config(source="gateway.yaml", gateway=GatewaySettings(), servers=(), profiles=PROFILES)
        service = GatewayService(config, clock, None)  # type: ignore[arg-type]
        service.gateway.start()
        site = http_site(service.gateway, clock, GatewaySettings(), HttpSettings(), "http:tcp:8080:interface=127.0.0.1", None, None)
        service.frontends.append(HttpFrontend("tcp:8080", None, site, 5.0))
        r = PathConnection(site).send_to("/mcp/ops", body=INIT)
        self.assertEqual(r.status, 200, r.body)
        PathConnection(site).send_to("/mcp/dev", body=INIT)
        self.assertEqual(len(site.resource_.table), 2)
        applied, _, problems = service.reload(lambda: attrs.evolve(config, profiles={"dev": PROFILES["dev"]}))
        self.assertEqual((applied, problems), (True, ""))
        self.assertEqual([hs.view for hs in site.resource_.table.sessions.values()], ["dev"])


class StatusTests(SynchronousTestCase):
    def test_statusShowsTheListenersAndPathsOfEachProfile(self) -> None:
        """/status: per profile, the --listen values bound to it and the HTTP paths serving it."""
        from twisted_mcp.frontends.http import HttpFrontend
        from twisted_mcp.frontends.stream import SocketFrontend

        from .test_admin import World

        world = World()
        world.ready()
        world.gateway.profiles = PROFILES
        settings = GatewaySettings()
        every = http_site(world.gateway, world.clock, settings, HttpSettings(), "http:tcp:8080")
        ops = http_site(world.gateway, world.clock, settings, HttpSettings(path="/x"), "profile:ops:http:tcp:8081", view="ops")
        dev = SessionFactory(world.gateway, world.clock, settings, Admission(10, 10, 0, 100), "unix", "profile:dev:unix:/run/dev.sock", view="dev")
        plain = SessionFactory(world.gateway, world.clock, settings, Admission(10, 10, 0, 100), "unix", "unix:/run/gw.sock")
        world.service.frontends = [  # type: ignore[attr-defined]
            HttpFrontend("http:tcp:8080", None, every, 1.0),
            HttpFrontend("profile:ops:http:tcp:8081", None, ops, 1.0),
            SocketFrontend("profile:dev:unix:/run/dev.sock", None, dev),
            SocketFrontend("unix:/run/gw.sock", None, plain),
        ]
        self.assertEqual(
            world.admin.status()["profiles"],
            [
                {
                    "name": "dev",
                    "listeners": ["profile:dev:unix:/run/dev.sock"],
                    "http": [{"listener": "http:tcp:8080", "path": "/mcp/dev"}],
                    "selected": {"tools": 2, "prompts": 0, "resources": 0, "resourceTemplates": 0},
                },
                {
                    "name": "ops",
                    "listeners": ["profile:ops:http:tcp:8081"],
                    "http": [{"listener": "http:tcp:8080", "path": "/mcp/ops"}, {"listener": "profile:ops:http:tcp:8081", "path": "/x"}],
                    "selected": {"tools": 0, "prompts": 0, "resources": 0, "resourceTemplates": 0},
                },
            ],
        )
        world.gateway.profiles = {}
        self.assertNotIn("profiles", world.admin.status())  # without profiles, /status is as it always was
