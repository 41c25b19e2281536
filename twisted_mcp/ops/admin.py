"""
The admin endpoint (C{--admin ENDPOINT}, off by default), with twisted.web:

- C{/healthz}: 200 while the gateway runs;
- C{/readyz}: 200 when discovery has finished and every backend marked
  C{required} is up, 503 with the reasons otherwise (one per line); with a
  shared state (C{state:}), also 503 while it is unreachable and any kind
  of C{state.onUnavailable} is C{refuse} ("shared state (Redis)
  unreachable: ..."), and before its flags were first read;
- C{/metrics}: Prometheus text format (C{prometheus_client});
- C{/status}: a page a person can read: backends, tools, breakers, clients,
  the shared state (its kind, this replica's name, its URL without the
  password, whether it answers and why not) (JSON with C{Accept:
  application/json} or C{?format=json});
- C{GET /tools?principal=&roles=&client=&profile=&search=&limit=&explain=}: the
  tool list a principal and client get on a profile, as
  C{twisted-mcp tools} prints it (L{twisted_mcp.ops.tools_report});
- C{POST /reload}: re-read the config file (as SIGHUP does);
- C{POST /kill} C{{"kind": "tool", "name": "x__y", "disabled": true}}:
  throw or release the kill switch at run time (C{GET /kill} shows it);
- C{POST /pins/approve} C{{"tools": [...]}} or C{{"all": true}}: pin the
  current definitions of quarantined tools (the lock file is rewritten);
- C{POST /revoke} C{{"token": "..."}} or C{{"jti": "..."}}: refuse a bearer
  token (of C{identity.jwt}) from now on, answered with its id (its C{jti},
  or C{sha256:} and the token's digest; the token itself is never kept,
  logged or echoed).  C{GET /revoke} lists the revoked ids.

With a shared state (C{state: {redis: URL}}), C{/kill}, C{/pins/approve}
and C{/revoke} apply on this replica at once and are written to Redis, so
that every replica applies them within a second; their answer says
C{"shared": true}.  While Redis cannot be reached, the change applies on
this replica only and the answer says C{"shared": false} and why; it is
written when Redis answers again.  Without a shared state, C{/revoke}
applies to this process only, kept in memory: a restart forgets it.

An optional bearer token (C{gateway.adminToken}) protects every path.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
from typing import Any, Callable, Iterator

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from twisted_mcp import __version__
from twisted_mcp.config.surface import SurfaceSettings
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.frontends.deadline import DeadlineChannel
from twisted_mcp.frontends.http import http_totals
from twisted_mcp.frontends.served import profiles_served
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.clients import BUILT_IN, ClientRule
from twisted_mcp.ops.admin_oauth import OAuthActions, oauth_metrics
from twisted_mcp.ops.shared_state import REFUSED, refuses_while_unavailable
from twisted_mcp.ops.tools_report import ReportProblem, ToolsQuery, tools_report
from twisted_mcp.policy.identity.revocation import revocation_expiry, revoke_request_id, revoked_ids
from twisted_mcp.policy.rules import backends_named, pattern_problem

log = Logger()

#: The longest name C{POST /kill} takes, in bytes of UTF-8 (the shared state's bound on a flag's name).
MAX_KILL_NAME = 512


def _collector(service: Any) -> Any:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    class Collector:
        def collect(self) -> Iterator[Any]:
            gateway = service.gateway
            up = GaugeMetricFamily("twisted_mcp_backend_up", "1 if the backend is up", labels=["backend"])
            restarts = CounterMetricFamily("twisted_mcp_backend_restarts", "Restarts of the backend", labels=["backend"])
            tools = GaugeMetricFamily("twisted_mcp_backend_tools", "Tools the backend offers", labels=["backend"])
            instances = GaugeMetricFamily(
                "twisted_mcp_backend_instances", "Running per-session instances of the backend", labels=["backend"]
            )
            breaker = GaugeMetricFamily(
                "twisted_mcp_breaker_open", "1 if the backend's circuit breaker is open or half-open", labels=["backend"]
            )
            latency = HistogramMetricFamily(
                "twisted_mcp_backend_latency_seconds",
                "Latency of calls to the backend, as the gateway saw it",
                labels=["backend"],
            )
            info = GaugeMetricFamily(
                "twisted_mcp_backend_info",
                "The MCP era (legacy: handshake, modern: 2026-07-28) and protocol version the backend speaks (1; absent before it was first up)",
                labels=["backend", "era", "protocol"],
            )
            counts = gateway.instance_counts()
            for name, backend in sorted(gateway.backends.items()):
                if backend.protocol_version is not None:
                    info.add_metric([name, backend.era, backend.protocol_version], 1.0)
                up.add_metric([name], 1.0 if _is_up(backend) else 0.0)
                restarts.add_metric([name], float(getattr(backend, "restarts", 0)))
                tools.add_metric([name], float(len(backend.tools)))
                instances.add_metric([name], float(counts.get(name, 0)))
                b = gateway.policy.breakers.get(name)
                breaker.add_metric([name], 0.0 if b is None or b.state == "closed" else 1.0)
                h = backend.latency
                latency.add_metric([name], buckets=h.cumulative(), sum_value=h.total)
            yield from (up, restarts, tools, instances, breaker, latency, info)
            requests = CounterMetricFamily(
                "twisted_mcp_requests",
                "Client requests answered, by method, outcome (ok, tool_error, error, cancelled) and error code",
                labels=["method", "outcome", "code"],
            )
            for (method, outcome, code), n in sorted(gateway.requests.items()):
                requests.add_metric([method, outcome, code], float(n))
            yield requests
            clients = GaugeMetricFamily("twisted_mcp_clients", "Connected client sessions")
            clients.add_metric([], float(len(gateway.sessions)))
            yield clients
            http = http_totals(getattr(service, "frontends", ()))
            http_sessions = GaugeMetricFamily("twisted_mcp_http_sessions", "Open sessions of the Streamable HTTP listeners")
            http_sessions.add_metric([], float(http["sessions"]))
            yield http_sessions
            http_streams = GaugeMetricFamily(
                "twisted_mcp_http_streams", "Open SSE streams of the Streamable HTTP listeners (GET and POST)"
            )
            http_streams.add_metric([], float(http["streams"]))
            yield http_streams
            http_expired = CounterMetricFamily(
                "twisted_mcp_http_sessions_expired", "HTTP sessions ended for being idle (http.sessionIdleTimeout)"
            )
            http_expired.add_metric([], float(http["expired"]))
            yield http_expired
            in_flight = GaugeMetricFamily("twisted_mcp_calls_in_flight", "Requests in flight")
            in_flight.add_metric([], float(sum(len(s.in_flight) for s in gateway.sessions)))
            yield in_flight
            held = gateway.reverse.held
            held_calls = GaugeMetricFamily(
                "twisted_mcp_held_calls", "2026-07-28 calls held waiting for their clients' input (gateway.maxHeldCalls)"
            )
            held_calls.add_metric([], float(len(held)))
            yield held_calls
            dropped = CounterMetricFamily(
                "twisted_mcp_held_progress_dropped", "Progress notifications of held calls that no open request could take"
            )
            dropped.add_metric([], float(held.dropped_progress))
            yield dropped
            policy = gateway.policy
            refusals = CounterMetricFamily("twisted_mcp_policy_refusals", "Requests refused by the policy", labels=["code"])
            for code, count in sorted(policy.refusals.items()):
                refusals.add_metric([str(code)], float(count))
            yield refusals
            rate = CounterMetricFamily("twisted_mcp_rate_limited", f"Calls refused by a rate limit ({errors.RATE_LIMITED})")
            rate.add_metric([], float(policy.refusals.get(errors.RATE_LIMITED, 0)))
            yield rate
            busy = CounterMetricFamily(
                "twisted_mcp_concurrency_refused", f"Calls refused for want of a concurrency slot ({errors.BUSY})"
            )
            busy.add_metric([], float(policy.refusals.get(errors.BUSY, 0)))
            yield busy
            audit = policy.audit
            if audit is not None:
                depth = GaugeMetricFamily("twisted_mcp_audit_queue_depth", "Audit records waiting to be written")
                depth.add_metric([], float(audit.queue_depth))
                yield depth
                waiting = GaugeMetricFamily(
                    "twisted_mcp_audit_waiting_calls", "Calls waiting for the audit trail to catch up (its queue half full)"
                )
                waiting.add_metric([], float(audit.waiting_calls))
                yield waiting
                failures = CounterMetricFamily("twisted_mcp_audit_failures", "Audit records that could not be written")
                failures.add_metric([], float(audit.failures))
                yield failures
                dropped = CounterMetricFamily(
                    "twisted_mcp_audit_dropped",
                    "Audit records of refusals and listings dropped while the audit queue was full",
                )
                dropped.add_metric([], float(audit.dropped))
                yield dropped
                if audit.holds_answers:
                    unconfirmed = CounterMetricFamily(
                        "twisted_mcp_audit_hold_timeouts",
                        "Answers sent before their audit record was committed (audit.holdAnswers, past audit.holdTimeout)",
                    )
                    unconfirmed.add_metric([], float(audit.hold_timeouts))
                    yield unconfirmed
            yield from oauth_metrics(service)
            yield from state_metrics(gateway.state)

    return Collector()


def state_metrics(state: Any) -> Iterator[Any]:
    """C{twisted_mcp_state_available} (by C{store}: the state's kind) and C{twisted_mcp_state_outages_total}."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    available = GaugeMetricFamily(
        "twisted_mcp_state_available",
        "1 while the shared state (state:, Redis) answers, 0 while it cannot be reached (always 1 in-process)",
        labels=["store"],
    )
    available.add_metric([state.kind], 1.0 if state.available else 0.0)
    yield available
    outages = CounterMetricFamily("twisted_mcp_state_outages", "Times the shared state (Redis) became unreachable")
    outages.add_metric([], float(state.outages))
    yield outages


def state_status(service: Any) -> dict[str, Any]:
    """The shared state for C{/status}: kind, this replica's name, URL (never with its password), whether it answers, why not."""
    state = service.gateway.state
    settings = getattr(service.config, "state", None)
    return {
        "kind": state.kind,
        "replica": state.replica,
        "url": settings.describe_url() if settings is not None else None,
        "available": state.available,
        "problem": state.problem,
    }


def _is_up(backend: Any) -> bool:
    """Up, or (per-session) discovered and ready to start an instance."""
    if backend.per_session:
        return bool(backend.discovered)
    return bool(backend.state.value == "up")


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, admin: "AdminResource", kind: str, post: bool = False) -> None:
        super().__init__()
        self.admin = admin
        self.kind = kind
        self.post = post

    def _refuse(self, request: Any) -> bytes | None:
        if self.admin.authorized(request):
            return None
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Bearer realm="twisted-mcp"')
        return b"unauthorized\n"

    def render_GET(self, request: Any) -> bytes:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if self.post:
            return self.admin.render_get_of_post(request, self.kind)
        return getattr(self.admin, f"render_{self.kind}")(request)

    def render_POST(self, request: Any) -> bytes:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if not self.post:
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET")
            return b"method not allowed\n"
        why = self.admin.action_refused(request)
        if why is not None:
            return _json(request, why[0], {"error": why[1]})
        try:
            body = json.loads(request.content.read(65536) or b"{}")
        except ValueError:
            return _json(request, 400, {"error": "the body must be JSON"})
        if type(body) is not dict:
            return _json(request, 400, {"error": "the body must be a JSON object"})
        return getattr(self.admin, f"post_{self.kind}")(request, body)


async def _shared_nothing() -> tuple[bool, str | None]:
    return True, None


def _reload_answer(request: Any, applied: bool, changes: list[str], problems: str) -> bytes:
    if not applied:
        return _json(request, 422, {"applied": False, "problems": problems})
    return _json(request, 200, {"applied": True, "changes": changes})


def _reload_failed(failure: Failure, request: Any) -> bytes:
    log.failure("admin endpoint: reload failed", failure)
    return _json(request, 500, {"applied": False, "problems": "the reload failed; see the gateway's log"})


def _answer_later(request: Any, answer: "Deferred[bytes]") -> None:
    """Write C{answer}'s body and finish C{request}, unless its client left first."""
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def write(body: bytes) -> None:
        if not gone:
            request.setHeader(b"content-length", b"%d" % len(body))  # as a body returned at once has
            request.write(body)
            request.finish()

    answer.addCallback(write)
    answer.addErrback(lambda failure: log.failure("admin endpoint: answering failed", failure))


def _json(request: Any, code: int, value: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


class AdminResource(Resource):
    """
    The admin endpoint's pages and actions.

    @param service: the L{twisted_mcp.service.GatewayService} (its current
        config gives the required backends and the token, so a reload
        changes them).
    @param reload: re-reads the config file and applies it, for C{POST
        /reload}: fires with whether it was applied, what changed, and the
        problems (L{twisted_mcp.reload.reload_in_a_thread}).
    """

    def __init__(self, service: Any, reload: Callable[[], "Deferred[tuple[bool, list[str], str]]"] | None = None) -> None:
        super().__init__()
        from prometheus_client import CollectorRegistry

        self.service = service
        self.reload = reload
        self.registry = CollectorRegistry()
        self.registry.register(_collector(service))
        for kind in ("healthz", "readyz", "metrics", "status", "tools"):
            self.putChild(kind.encode(), _Leaf(self, kind))
        self.putChild(b"reload", _Leaf(self, "reload", post=True))
        self.putChild(b"kill", _Leaf(self, "kill", post=True))
        self.putChild(b"revoke", _Leaf(self, "revoke", post=True))
        pins = Resource()
        pins.putChild(b"approve", _Leaf(self, "approve", post=True))
        self.putChild(b"pins", pins)
        self.oauth_actions = OAuthActions(service, _json, _answer_later)
        oauth = Resource()
        for action in ("begin", "complete", "logout", "tokens"):
            oauth.putChild(action.encode(), _Leaf(self, f"oauth_{action}", post=True))
        self.putChild(b"oauth", oauth)

    @property
    def gateway(self) -> Gateway:
        return self.service.gateway  # type: ignore[no-any-return]

    def authorized(self, request: Any) -> bool:
        token = self.service.config.gateway.adminToken
        if not token:
            return True
        given = request.getHeader(b"authorization") or b""
        if isinstance(given, str):
            given = given.encode("latin-1")
        scheme, _, credentials = given.strip().partition(b" ")
        if scheme.lower() != b"bearer":  # the scheme is case-insensitive (RFC 7235)
            return False
        return hmac.compare_digest(credentials.strip(), token.encode())

    def action_refused(self, request: Any) -> tuple[int, str] | None:
        """
        Why a state-changing request (POST) is refused, or None.  Actions
        need a token unless the endpoint is a Unix socket (its file mode
        decides who may connect); a browser's request (it carries Origin)
        and a body that is not declared JSON are refused, so that no web
        page can drive them.
        """
        if request.getHeader(b"origin") is not None:
            return 403, "requests from web pages are refused (an Origin header was sent)"
        kind = request.getHeader(b"content-type") or b""
        if isinstance(kind, str):
            kind = kind.encode("latin-1")
        if kind.split(b";")[0].strip().lower() != b"application/json":
            return 415, "the body must be sent as Content-Type: application/json"
        if not self.service.config.gateway.adminToken and not isinstance(request.getHost(), UNIXAddress):
            return 403, (
                "actions (reload, kill, pins/approve, revoke, oauth/*) need gateway.adminToken on a TCP admin endpoint "
                "(or serve the admin endpoint on a Unix socket)"
            )
        return None

    def render_healthz(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"ok\n"

    def render_readyz(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        problems = []
        if not self.gateway.ready:
            problems.append("discovery has not finished")
        if self.service.stopping:
            problems.append("the gateway is shutting down")
        problems += self._state_problems()
        for server in self.service.config.servers:
            if not server.required:
                continue
            backend = self.gateway.backends.get(server.name)
            if backend is None or not _is_up(backend):
                state = backend.state.value if backend is not None else "unknown"
                why = f": {backend.last_error}" if backend is not None and backend.last_error else ""
                problems.append(f"required backend {server.name} is {state}{why}")
        if problems:
            request.setResponseCode(503)
            return ("not ready\n" + "\n".join(problems) + "\n").encode()
        return b"ready\n"

    def _state_problems(self) -> list[str]:
        """Why the shared state keeps this replica from being ready (empty in-process)."""
        state = self.gateway.state
        if state.kind == "local":
            return []
        if not state.available:
            if refuses_while_unavailable(state):
                return [f"shared state (Redis) unreachable: {state.problem or 'no answer'}"]
            return []
        sync = getattr(self.service, "state_sync", None)
        if sync is not None and not sync.synced:
            return ["shared state (Redis): its flags (kill switch, approvals, revoked tokens) have not been read yet"]
        return []

    def render_metrics(self, request: Any) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)

    def status(self) -> dict[str, Any]:
        """What C{/status} shows, as data (C{twisted-mcp status} reads it)."""
        gateway = self.gateway
        policy = gateway.policy
        required = {s.name for s in self.service.config.servers if s.required}
        by_backend: dict[str, list[str]] = {}
        for name, entry in gateway.catalog.entries.items():
            by_backend.setdefault(entry.backend.name, []).append(name)
        counts = gateway.instance_counts()
        backends = []
        broker = getattr(self.service, "oauth", None)
        for name, backend in sorted(gateway.backends.items()):
            b = policy.breakers.get(name)
            auth = None
            if broker is not None and getattr(backend, "oauth", None) is not None:
                # Names, issuers, resources, counts: never a token.
                auth = broker.status(name)
                auth["runs"] = len(backend.principal_runs)  # type: ignore[attr-defined]
            backends.append(
                {
                    "auth": auth,
                    "name": name,
                    "state": backend.state.value,
                    "tools": sorted(by_backend.get(name, [])),
                    "restarts": int(getattr(backend, "restarts", 0)),
                    "breaker": b.state if b is not None else "closed",
                    "lastError": backend.last_error,
                    "required": name in required,
                    "perSession": bool(backend.per_session),
                    "instances": counts.get(name, 0),
                    "era": backend.era,
                    "probe": backend.probe,
                    "protocol": backend.protocol_version,
                    "listen": backend.listen_state,
                }
            )
            shaped = gateway.catalog.shaped.get(name)
            if shaped is not None or backend.priority:
                backends[-1]["priority"] = backend.priority
                backends[-1]["shaping"] = shaping_status(gateway.catalog, name, shaped or {})
        clients = []
        for session in sorted(gateway.sessions, key=lambda s: s.label):
            try:
                principal: str | None = policy.principal(session.peer).name
            except Exception:
                principal = None
            clients.append(
                {
                    "id": session.label,
                    "principal": principal,
                    "client": f"{session.client_info.get('name', '?')} {session.client_info.get('version', '')}".strip(),
                    "protocol": session.protocol_version,
                    "inFlight": len(session.in_flight),
                }
            )
        return {
            "version": __version__,
            "ready": gateway.ready,
            "uptime": round(self.service.clock.seconds() - self.service.started_at, 3),
            "backends": backends,
            "clients": clients,
            "http": http_totals(getattr(self.service, "frontends", ())),
            "heldCalls": gateway.reverse.held.describe(),
            "killSwitch": policy.kill_switch(),
            "quarantined": [{"tool": t, "reason": r} for t, r in sorted(policy.pins.quarantined.items())],
            # Only with a shared state (state:): a config without one shows what it always did.
            **({"state": state_status(self.service)} if gateway.state.kind != "local" else {}),
            # Only with profiles: a config without them shows what it always did.
            **({"profiles": profiles_status(gateway, getattr(self.service, "frontends", ()))} if gateway.profiles else {}),
            # Likewise only with a surface, search, clients or profiles section.
            **(
                {"clientBudgets": client_budgets(gateway.surface)}
                if gateway.profiles or gateway.surface != SurfaceSettings()
                else {}
            ),
        }

    def render_status(self, request: Any) -> bytes:
        status = self.status()
        accept = request.getHeader(b"accept") or b""
        if isinstance(accept, str):
            accept = accept.encode("latin-1")
        if b"application/json" in accept or request.args.get(b"format") == [b"json"]:
            return _json(request, 200, status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        e = html.escape
        rows = "".join(
            f"<tr><td>{e(b['name'])}</td><td>{e(b['state'])}{' (per-session, %d running)' % b['instances'] if b['perSession'] else ''}"
            f"</td><td>{len(b['tools'])}</td><td>{e(b['breaker'])}</td><td>{b['restarts']}</td><td>{e(b['lastError'] or '')}</td></tr>"
            for b in status["backends"]
        )
        tools = "".join(f"<li>{e(t['name'])}</li>" for t in self.gateway.catalog.listing)
        clients = "".join(
            f"<li>{e(c['id'])}: {e(c['client'])} as {e(c['principal'] or '(unidentified)')} ({c['inFlight']} in flight)</li>"
            for c in status["clients"]
        )
        kills = status["killSwitch"]
        killed = (
            "".join(f"<li>{e(kind)}: {e(', '.join(names))}</li>" for kind, names in kills.items() if names) or "<li>none</li>"
        )
        quarantined = "".join(f"<li>{e(q['tool'])}: {e(q['reason'])}</li>" for q in status["quarantined"]) or "<li>none</li>"
        state_line = ""
        shared = status.get("state")
        if shared is not None:
            where = f" at {e(shared['url'])}" if shared["url"] else ""
            answers = "answers" if shared["available"] else f"UNREACHABLE: {e(shared['problem'] or 'no answer')}"
            state_line = f"<p>Shared state: {e(shared['kind'])}{where}, this replica is {e(shared['replica'])}; {answers}</p>"
        shaping = "".join(
            f"<li>{e(b['name'])} {e(kind)}: {e(shaping_summary(outcome))}</li>"
            for b in status["backends"]
            for kind, outcome in b.get("shaping", {}).items()
        )
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>twisted-mcp status</title></head><body>"
            f"<h1>twisted-mcp {e(__version__)}</h1><p>{'ready' if status['ready'] else 'starting'}, up {status['uptime']:.0f} s</p>"
            "<h2>Backends</h2><table border='1'>"
            "<tr><th>backend</th><th>state</th><th>tools</th><th>breaker</th><th>restarts</th><th>last error</th></tr>"
            + rows
            + f"</table><h2>Tools ({len(self.gateway.catalog.listing)})</h2><ul>{tools}</ul>"
            + f"<h2>Clients ({len(status['clients'])})</h2><ul>{clients}</ul>"
            + f"<p>HTTP: {status['http']['sessions']} session(s), {status['http']['streams']} open stream(s)</p>"
            + state_line
            + (f"<h2>Shaping</h2><ul>{shaping}</ul>" if shaping else "")
            + f"<h2>Kill switch</h2><ul>{killed}</ul><h2>Quarantined tools</h2><ul>{quarantined}</ul></body></html>"
        )
        return page.encode("utf-8")

    def render_tools(self, request: Any) -> bytes:
        """C{GET /tools}: L{tools_report} for the query's parameters (400 naming a bad one)."""
        try:
            query = tools_query(request.args)
            report = tools_report(self.gateway, self.service.config.identity, query)
        except ReportProblem as e:
            return _json(request, 400, {"error": e.message})
        return _json(request, 200, report)

    # -- actions (POST) ---------------------------------------------------

    def render_get_of_post(self, request: Any, kind: str) -> bytes:
        if kind == "kill":
            return _json(request, 200, self.gateway.policy.kill_switch())
        if kind == "revoke":
            return _json(request, 200, {"revoked": sorted(revoked_ids(self.gateway.policy))})
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        return b"use POST\n"

    def post_reload(self, request: Any, body: dict[str, Any]) -> Any:
        if self.reload is None:
            return _json(request, 501, {"applied": False, "problems": "this gateway cannot reload its configuration"})
        log.info("admin endpoint: reload requested")
        d = self.reload()
        d.addCallback(lambda outcome: _reload_answer(request, *outcome))
        d.addErrback(_reload_failed, request)
        _answer_later(request, d)
        return NOT_DONE_YET

    def post_oauth_begin(self, request: Any, body: dict[str, Any]) -> Any:
        return self.oauth_actions.begin(request, body)

    def post_oauth_complete(self, request: Any, body: dict[str, Any]) -> Any:
        return self.oauth_actions.complete(request, body)

    def post_oauth_logout(self, request: Any, body: dict[str, Any]) -> Any:
        return self.oauth_actions.logout(request, body)

    def post_oauth_tokens(self, request: Any, body: dict[str, Any]) -> Any:
        return self.oauth_actions.tokens(request, body)

    def post_kill(self, request: Any, body: dict[str, Any]) -> bytes:
        kind, name, disabled = body.get("kind"), body.get("name"), body.get("disabled", True)
        if kind not in ("principal", "backend", "tool") or type(name) is not str or not name or type(disabled) is not bool:
            return _json(
                request,
                400,
                {"error": 'expected {"kind": "principal" | "backend" | "tool", "name": "...", "disabled": true | false}'},
            )
        if len(name.encode("utf-8", "surrogatepass")) > MAX_KILL_NAME:
            return _json(request, 400, {"error": f"name: longer than {MAX_KILL_NAME} bytes (UTF-8); no tool, backend or principal has such a name"})
        policy = self.gateway.policy
        if kind == "tool":
            problem = pattern_problem(name)
            if problem is not None:
                return _json(request, 400, {"error": f"name: {problem}"})
            names = [name]
        elif kind == "backend":
            names = self._backends_named(name, disabled)
            if not names:
                known = ", ".join(sorted(self.gateway.backends)) or "none"
                return _json(request, 404, {"error": f"no backend named {name!r} (known backends: {known})"})
        else:
            names = [name]
        if disabled:
            refused = self._kill_switch_full(policy, kind, names)
            if refused is not None:
                return _json(request, 409, {"error": refused})
        before = self.service.views()
        for one in names:
            policy.set_kill(kind, one, disabled)
        told = self.service.notify_views(before)
        log.warn(
            "admin endpoint: kill switch {action} for {kind} {name} ({told} client(s) told their tools changed)",
            action="thrown" if disabled else "released",
            kind=kind,
            name=", ".join(names),
            told=told,
        )
        flag = str(int(self.service.clock.seconds())) if disabled else None
        return self._shared_answer(request, [(f"kill:{kind}", one, flag) for one in names], policy.kill_switch(), "kill switch")

    def _kill_switch_full(self, policy: Any, kind: str, names: list[str]) -> str | None:
        """Why throwing C{names} would take the run-time kill switch past its
        cap (every entry is matched on every decision and listed in /status), or None."""
        cap = self.service.settings.maxKillSwitchEntries
        held = sum(len(entries) for entries in policy.kills.values())
        if held + len(set(names) - policy.kills[kind]) <= cap:
            return None
        log.warn(
            "admin endpoint: kill switch not thrown for {kind} {name}: it holds {held} run-time entries (gateway.maxKillSwitchEntries)",
            kind=kind,
            name=", ".join(names),
            held=held,
        )
        return (
            f"the kill switch already holds {held} run-time entries, its cap (gateway.maxKillSwitchEntries); "
            "release some, or put them in the config's killSwitch and reload"
        )

    def _backends_named(self, name: str, disabled: bool) -> list[str]:
        """
        The backends C{name} names, matched as the config's kill switch
        matches them; a release may also name one that a reload removed.
        """
        known = set(self.gateway.backends)
        if not disabled:
            known |= self.gateway.policy.kills["backend"]
        return backends_named(name, known)

    def post_approve(self, request: Any, body: dict[str, Any]) -> bytes:
        policy = self.gateway.policy
        if policy.pins.mode == "off" or policy.pins.path is None:
            return _json(request, 409, {"error": "tool pinning is off (policy pinning.mode)"})
        entries = self.gateway.catalog.entries
        if body.get("all") is True:
            names = sorted(policy.pins.quarantined)
        else:
            names = body.get("tools")
            if type(names) is not list or not all(type(n) is str for n in names):
                return _json(request, 400, {"error": 'expected {"tools": ["name", ...]} or {"all": true}'})
            unknown = [n for n in names if n not in entries]
            if unknown:
                return _json(request, 404, {"error": f"no such tool(s) in the catalog: {', '.join(unknown)}"})
        before = self.service.views()
        try:
            approved = policy.approve(names, entries)
        except ValueError as e:
            return _json(request, 409, {"error": str(e)})
        self.service.notify_views(before)
        log.warn("admin endpoint: approved (pinned) {tools}", tools=", ".join(approved) or "nothing")
        changes: list[tuple[str, str, str | None]] = []
        for name in approved:
            changes.append(("approval", name, json.dumps(policy.pins.pinned.get(name, {}), sort_keys=True)))
            changes.append(("quarantine", name, None))
        answer = {"approved": approved, "quarantined": sorted(policy.pins.quarantined)}
        return self._shared_answer(request, changes, answer, "approval")

    def post_revoke(self, request: Any, body: dict[str, Any]) -> Any:
        """
        Revoke a bearer token: C{{"token": "..."}} or C{{"jti": "..."}}.
        Requests with it are refused from now on (C{AUTHENTICATION_FAILED},
        "the token was revoked"), on every replica with a shared state.
        Only the token's id is kept, logged and answered, never the token.
        Without a shared state the revocation lives in this process's
        memory only: a restart forgets it.
        """
        ident, problem = revoke_request_id(body)
        if ident is None:
            return _json(request, 400, {"error": problem})
        revoked = revoked_ids(self.gateway.policy)
        known = ident in revoked
        revoked.add(ident)
        log.warn(
            "admin endpoint: token {id} revoked{again}: requests with it are refused from now on",
            id=ident,
            again=" (it already was)" if known else "",
        )
        expires = revocation_expiry(body, self.service.clock.seconds())
        changes = [("revoked", ident, str(expires))]
        return self._shared_answer(request, changes, {"revoked": ident}, "revocation", always=True)

    def _shared_answer(
        self,
        request: Any,
        changes: list[tuple[str, str, str | None]],
        answer: dict[str, Any],
        what: str,
        always: bool = False,
    ) -> Any:
        """
        C{answer} to an action already applied on this replica, once its
        flags (C{changes}) are written to the shared state: with
        C{"shared": true}, or C{false} and C{"why"} when the state cannot take
        them now.  Without a shared state: C{answer} as it is (with
        C{always}, C{"shared": false} and why).
        """
        sync = getattr(self.service, "state_sync", None)
        if sync is None or not sync.shared:
            if always:
                answer = {
                    **answer,
                    "shared": False,
                    "why": "no shared state is configured (state:): this applies on this replica only, kept in "
                    "memory (a restart forgets it)",
                }
            return _json(request, 200, answer)

        def written(outcome: tuple[bool, str | None]) -> bytes:
            shared, why = outcome
            if not shared:
                log.warn("admin endpoint: {what} applied on this replica only: {why}", what=what, why=why)
                extra = {"refused": True} if why is not None and why.startswith(REFUSED) else {}
                return _json(request, 200, {**answer, "shared": False, "why": why, **extra})
            return _json(request, 200, {**answer, "shared": True})

        d = sync.write(changes) if changes else Deferred.fromCoroutine(_shared_nothing())
        d.addCallback(written)
        done: list[bytes] = []
        d.addCallback(done.append)
        if done:
            return done[0]
        _answer_later(request, d.addCallback(lambda _: done[0]))
        return NOT_DONE_YET


# -- connections and request heads ---------------------------------------

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _is_loopback(address: Any) -> bool:
    host = getattr(address, "host", None)
    return isinstance(address, (IPv4Address, IPv6Address)) and ipaddress.ip_address(host.split("%")[0]).is_loopback


def _host_allowed(given: bytes | None, local: Any) -> bool:
    """
    A request to a loopback address must name it (C{Host}: localhost,
    127.0.0.1 or [::1], with the port it came in on): a web page that
    rebinds its own name to 127.0.0.1 sends its own name and is refused.
    """
    if given is None:
        return True  # not a browser (browsers always send Host)
    host = given.decode("latin-1").strip().lower()
    literal = f"[{local.host}]" if ":" in local.host else local.host
    names = {*_LOOPBACK_NAMES, literal}
    allowed = {f"{name}:{local.port}" for name in names}
    if local.port == 80:
        allowed |= names
    return host in allowed


def _head_refusal(admin: "AdminResource", channel: Any, request: Any) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
    """
    Why a request is refused as soon as its head is in (before any of its
    body is read): status, reason phrase, body, extra headers; or None.
    """
    settings = admin.service.settings
    local = channel.transport.getHost()
    if _is_loopback(local) and not _host_allowed(request.getHeader(b"host"), local):
        return (
            421,
            "Misdirected Request",
            "this admin endpoint answers only to Host: localhost, 127.0.0.1 or [::1] with its port\n",
            [],
        )
    if not admin.authorized(request):
        return 401, "Unauthorized", "unauthorized\n", [(b"WWW-Authenticate", b'Bearer realm="twisted-mcp"')]
    if channel.length is None:
        return 411, "Length Required", "send the body with a Content-Length (chunked bodies are not taken)\n", []
    if channel.length > settings.adminMaxBodyBytes:
        return (
            413,
            "Content Too Large",
            f"the body may be at most {settings.adminMaxBodyBytes} bytes (gateway.adminMaxBodyBytes)\n",
            [],
        )
    return None


def _raw_response(status: int, phrase: str, body: str, headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A whole HTTP/1.1 response that closes the connection."""
    data = body.encode()
    head = [
        b"HTTP/1.1 %d %s" % (status, phrase.encode()),
        b"Content-Type: text/plain",
        b"Content-Length: %d" % len(data),
        b"Connection: close",
    ]
    head += [name + b": " + value for name, value in headers or ()]
    return b"\r\n".join(head) + b"\r\n\r\n" + data


class AdminChannel(DeadlineChannel):
    """
    One admin connection.  A request is refused as soon as its head
    arrives, before its body is read, when the token is missing or wrong
    (401), the body is larger than C{adminMaxBodyBytes} (413) or of unknown
    length (411), or a loopback connection's C{Host} names another host
    (421, against DNS rebinding); the connection is then closed.
    """

    site: "AdminSite"
    client_name = "admin endpoint"
    timeout_setting = "gateway.adminTimeout"

    def connectionMade(self) -> None:
        self.site.open += 1
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:
        self.site.open -= 1
        super().connectionLost(reason)

    def allHeadersReceived(self) -> None:
        refusal = _head_refusal(self.site.admin, self, self.requests[-1])
        if refusal is None:
            super().allHeadersReceived()
            return
        self.transport.write(_raw_response(*refusal))
        # Neither the body nor any request after it is read or processed.
        self.length = None
        self.dataReceived = lambda data: None  # type: ignore[method-assign]
        self.loseConnection()


class _Busy(Protocol):
    """Answers 503 to a connection over the admin endpoint's cap, and closes it."""

    def connectionMade(self) -> None:
        body = "too many admin connections are open (gateway.adminMaxConnections); try again later\n"
        self.transport.write(_raw_response(503, "Service Unavailable", body, [(b"Retry-After", b"1")]))
        self.transport.loseConnection()


class AdminSite(Site):
    """
    The admin endpoint's HTTP server: at most C{adminMaxConnections}
    connections at once; one idle for C{adminTimeout} seconds is closed.
    No access log is written (it could carry tokens).
    """

    protocol = AdminChannel  # type: ignore[assignment]
    noisy = False

    def __init__(self, admin: "AdminResource", clock: Any) -> None:
        settings = admin.service.settings
        super().__init__(admin, timeout=settings.adminTimeout, reactor=clock)
        self.admin = admin
        self.max_connections = settings.adminMaxConnections
        self.open = 0
        self._refusing = False

    def buildProtocol(self, addr: Any) -> Any:
        if self.open >= self.max_connections:
            if not self._refusing:
                log.warn(
                    "admin endpoint: {n} connections are open (gateway.adminMaxConnections); refusing more",
                    n=self.open,
                )
                self._refusing = True
            busy = _Busy()
            busy.factory = self
            return busy
        self._refusing = False
        return super().buildProtocol(addr)

    def log(self, request: Any) -> None:
        pass


def shaping_status(catalog: Any, backend: str, shaped: dict[str, Any]) -> dict[str, Any]:
    """
    What C{backend}'s shaping did at the catalog's last rebuild, by kind
    (design §2.5): how many the server listed and how many were kept, those
    filtered out (count and names), renamed (own name -> shaped name) and
    overridden (name -> keys).
    """
    out: dict[str, Any] = {}
    for kind, outcome in shaped.items():
        listing = catalog.tools if kind == "tools" else catalog.prompts if kind == "prompts" else None
        out[kind] = {
            "listed": outcome.listed,
            "kept": outcome.kept,
            "filtered": {"count": len(outcome.filtered), "names": list(outcome.filtered)},
            "renamed": {own: _renamed_as(listing, backend, own, new) for own, new in sorted(outcome.renamed.items())},
            "overridden": {own: list(keys) for own, keys in sorted(outcome.overridden.items())},
        }
    return out


def _renamed_as(listing: Any, backend: str, own: str, new: str) -> str:
    """The name C{backend}'s C{own}, renamed C{new}, is served under; or why it is not served (a collision it lost)."""
    exposed = listing.exposed(backend, own) if listing is not None else new
    return exposed if exposed is not None else f"{new} (not served: another definition has that name)"


def shaping_summary(kind: dict[str, Any]) -> str:
    """One kind of L{shaping_status}, in a line."""
    parts = [f"{kind['kept']} of {kind['listed']} kept"]
    if kind["filtered"]["count"]:
        parts.append(f"filtered out: {', '.join(kind['filtered']['names'])}")
    if kind["renamed"]:
        parts.append("renamed: " + ", ".join(f"{own} -> {shaped}" for own, shaped in kind["renamed"].items()))
    if kind["overridden"]:
        parts.append("overridden: " + ", ".join(f"{own} ({', '.join(keys)})" for own, keys in kind["overridden"].items()))
    return "; ".join(parts)


#: The parameters of C{GET /tools}; C{roles} is a comma-separated list;
#: C{explain} is C{1} or C{true} (anything else, or absent: no explanation).
TOOLS_PARAMETERS = ("principal", "roles", "client", "profile", "search", "limit", "explain")


def tools_query(args: dict[bytes, list[bytes]]) -> ToolsQuery:
    """The L{ToolsQuery} of C{GET /tools}' parameters; L{ReportProblem} naming a bad one."""
    given: dict[str, str] = {}
    for raw, values in args.items():
        key = raw.decode("utf-8", "replace")
        if key not in TOOLS_PARAMETERS:
            raise ReportProblem(f"unknown parameter {key!r}: expected {', '.join(TOOLS_PARAMETERS)}")
        if len(values) != 1:
            raise ReportProblem(f"parameter {key!r} is given {len(values)} times: give it once")
        try:
            given[key] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise ReportProblem(f"parameter {key!r} is not UTF-8") from None
    limit = given.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit() and len(limit) <= 9):
        raise ReportProblem(f"parameter 'limit': expected a whole number, got {limit[:20]!r}")
    for key in ("limit", "explain"):
        if key in given and "search" not in given:
            raise ReportProblem(f"parameter {key!r} goes with 'search'")
    return ToolsQuery(
        principal=given.get("principal") or None,
        roles=tuple(r.strip() for r in given["roles"].split(",") if r.strip()) if "roles" in given else None,
        client=given.get("client") or None,
        profile=given.get("profile") or None,
        search=given.get("search"),
        limit=int(limit) if limit is not None else None,
        explain=given.get("explain", "").lower() in ("1", "true"),
    )


def profiles_status(gateway: Gateway, frontends: Any) -> list[dict[str, Any]]:
    """
    Each profile (design §2.5): the listeners and HTTP paths serving it, and
    how many tools, prompts, resources and resource templates it selects of
    the catalog now (before the policy, which decides per principal).
    """
    out = profiles_served(gateway.profiles, frontends)
    for served in out:
        profile = gateway.profiles[served["name"]]
        selection = gateway.views.selection(gateway.views.of_profile(profile), gateway.catalog)
        served["selected"] = {
            "tools": len(selection.names),
            "prompts": len(selection.prompts.names),
            "resources": len(selection.resources.names),
            "resourceTemplates": len(selection.templates.names),
        }
    return out


def _budget_row(rule: ClientRule, table: str, source: str) -> dict[str, Any]:
    row: dict[str, Any] = {"name": rule.name, "table": table}
    for key in ("maxTools", "maxNameLength", "nameOverhead", "search"):
        value = getattr(rule, key)
        if value is not None:
            row[key] = value
    if rule.countsServerKey:
        row["countsServerKey"] = True
    if rule.client and table == "built-in":
        row["client"] = rule.client
    row["source"] = source
    if rule.verified:
        row["verified"] = rule.verified
    return row


def client_budgets(settings: SurfaceSettings) -> dict[str, Any]:
    """
    The client budget table as applied (design §2.5): the rows matched on
    C{clientInfo.name}, in the order they are tried (the config's
    C{clients.match}, then the built-in table, each row with its source
    and, built-in, what of it was verified), and C{clients.default}.
    Without C{clients.useClientInfo} no row is matched: only the default
    (and the profiles) apply.
    """
    clients = settings.clients
    rows = [_budget_row(rule, "config", f"clients.match[{i}]") for i, rule in enumerate(clients.rules)]
    rows += [_budget_row(rule, "built-in", rule.source) for rule in BUILT_IN]
    return {
        "useClientInfo": clients.useClientInfo,
        "serverKeyLength": clients.serverKeyLength,
        "rows": rows,
        "default": _budget_row(clients.default, "config", "clients.default") if clients.default is not None else None,
    }
