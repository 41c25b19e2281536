"""
The admin endpoint (C{--admin ENDPOINT}, off by default), with twisted.web:

- C{/healthz}: 200 while the gateway runs;
- C{/readyz}: 200 when discovery has finished and every backend marked
  C{required} is up, 503 with the reasons otherwise;
- C{/metrics}: Prometheus text format (C{prometheus_client});
- C{/status}: a page a person can read: backends, tools, breakers, clients.

An optional bearer token (C{gateway.adminToken}) protects every path.
"""

from __future__ import annotations

import hmac
import html
from typing import Any, Iterator

from twisted.web.resource import Resource

from twisted_mcp.gateway import Gateway


def _collector(gateway: Gateway) -> Any:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self) -> Iterator[Any]:
            up = GaugeMetricFamily("twisted_mcp_backend_up", "1 if the backend is up", labels=["backend"])
            restarts = CounterMetricFamily("twisted_mcp_backend_restarts", "Restarts of the backend", labels=["backend"])
            tools = GaugeMetricFamily("twisted_mcp_backend_tools", "Tools the backend offers", labels=["backend"])
            breaker = GaugeMetricFamily(
                "twisted_mcp_breaker_open", "1 if the backend's circuit breaker is open or half-open", labels=["backend"]
            )
            for name, backend in sorted(gateway.backends.items()):
                up.add_metric([name], 1.0 if backend.state.value == "up" else 0.0)
                restarts.add_metric([name], float(getattr(backend, "restarts", 0)))
                tools.add_metric([name], float(len(backend.tools)))
                b = gateway.policy.breakers.get(name)
                breaker.add_metric([name], 0.0 if b is None or b.state == "closed" else 1.0)
            yield up
            yield restarts
            yield tools
            yield breaker
            clients = GaugeMetricFamily("twisted_mcp_clients", "Connected client sessions")
            clients.add_metric([], float(len(gateway.sessions)))
            yield clients
            in_flight = GaugeMetricFamily("twisted_mcp_calls_in_flight", "Requests in flight")
            in_flight.add_metric([], float(sum(len(s.in_flight) for s in gateway.sessions)))
            yield in_flight
            refusals = CounterMetricFamily("twisted_mcp_policy_refusals", "Requests refused by the policy", labels=["code"])
            for code, count in sorted(gateway.policy.refusals.items()):
                refusals.add_metric([str(code)], float(count))
            yield refusals
            audit = gateway.policy.audit
            if audit is not None:
                depth = GaugeMetricFamily("twisted_mcp_audit_queue_depth", "Audit records waiting to be written")
                depth.add_metric([], float(audit.queue_depth))
                yield depth
                failures = CounterMetricFamily("twisted_mcp_audit_failures", "Audit records that could not be written")
                failures.add_metric([], float(audit.failures))
                yield failures

    return Collector()


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, admin: "AdminResource", kind: str) -> None:
        super().__init__()
        self.admin = admin
        self.kind = kind

    def render_GET(self, request: Any) -> bytes:
        if not self.admin.authorized(request):
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Bearer realm="twisted-mcp"')
            return b"unauthorized\n"
        return getattr(self.admin, f"render_{self.kind}")(request)


class AdminResource(Resource):
    def __init__(self, gateway: Gateway, required: set[str], token: str | None) -> None:
        super().__init__()
        from prometheus_client import CollectorRegistry

        self.gateway = gateway
        self.required = required
        self.token = token
        self.registry = CollectorRegistry()
        self.registry.register(_collector(gateway))
        for kind in ("healthz", "readyz", "metrics", "status"):
            self.putChild(kind.encode(), _Leaf(self, kind))

    def authorized(self, request: Any) -> bool:
        if not self.token:
            return True
        given = request.getHeader(b"authorization") or b""
        if isinstance(given, str):
            given = given.encode("latin-1")
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())

    def render_healthz(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"ok\n"

    def render_readyz(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        problems = []
        if not self.gateway.ready:
            problems.append("discovery has not finished")
        for name in sorted(self.required):
            backend = self.gateway.backends.get(name)
            if backend is None or backend.state.value != "up":
                state = backend.state.value if backend is not None else "unknown"
                why = f": {backend.last_error}" if backend is not None and backend.last_error else ""
                problems.append(f"required backend {name} is {state}{why}")
        if problems:
            request.setResponseCode(503)
            return ("not ready\n" + "\n".join(problems) + "\n").encode()
        return b"ready\n"

    def render_metrics(self, request: Any) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)

    def render_status(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        e = html.escape
        rows = []
        for name, backend in sorted(self.gateway.backends.items()):
            b = self.gateway.policy.breakers.get(name)
            rows.append(
                f"<tr><td>{e(name)}</td><td>{e(backend.state.value)}</td><td>{len(backend.tools)}</td>"
                f"<td>{e(b.state if b else 'closed')}</td><td>{e(backend.last_error or '')}</td></tr>"
            )
        tools = "".join(f"<li>{e(t['name'])}</li>" for t in self.gateway.catalog.listing)
        clients = "".join(
            f"<li>{e(s.label)}: {e(str(s.client_info.get('name', '?')))} ({len(s.in_flight)} in flight)</li>"
            for s in sorted(self.gateway.sessions, key=lambda s: s.label)
        )
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>twisted-mcp status</title></head><body>"
            "<h1>twisted-mcp</h1><h2>Backends</h2><table border='1'>"
            "<tr><th>backend</th><th>state</th><th>tools</th><th>breaker</th><th>last error</th></tr>"
            + "".join(rows)
            + f"</table><h2>Tools ({len(self.gateway.catalog.listing)})</h2><ul>{tools}</ul>"
            + f"<h2>Clients ({len(self.gateway.sessions)})</h2><ul>{clients}</ul></body></html>"
        )
        return page.encode("utf-8")
