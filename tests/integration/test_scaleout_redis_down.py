"""
Redis stopped and restarted under load (issue 15): two replicas of the real
daemon on a redis-server of the test's own (killed with SIGKILL, then
started again on the same port), each called directly by stateless-era
clients the whole time, with C{limits.principal} set (so every call
checks the shared bucket).

Replica 1 has the defaults (C{onUnavailable: {limits: refuse, killSwitch:
refuse}}): while Redis is down its calls are refused with -31013
(STATE_UNAVAILABLE, naming Redis), its C{/readyz} is 503 with the line
"shared state (Redis) unreachable: ...", and C{twisted_mcp_state_available}
is 0; once Redis is back its calls pass again, C{/readyz} is 200 and the
metric 1.  Replica 2 says C{onUnavailable: {limits: local, killSwitch:
local}}: its calls go on throughout, and it stays ready.
"""

from __future__ import annotations

import time
import uuid

from twisted_mcp.mcp import errors

from .cluster import Load, Replica, call_direct, cluster, private_redis, state_section, until_true  # noqa: F401  (fixtures)

WITHIN = 5.0


def available(replica: Replica) -> float | None:
    return replica.metrics().get(("twisted_mcp_state_available", (("store", "redis"),)))


def test_redis_stopped_and_restarted_under_load(cluster, private_redis):  # noqa: F811
    state = state_section(private_redis.url, f"test-{uuid.uuid4().hex[:12]}", timeout=0.3)
    lenient = {**state, "onUnavailable": {"limits": "local", "killSwitch": "local", "sessions": "local"}}
    limits = {"principal": {"rate": 10000, "burst": 10000}}
    c = cluster({"state": state, "limits": limits}, replicas=2, haproxy=False, overrides={1: {"state": lenient}})
    strict, local = c.replicas

    def text(i: int, n: int) -> dict[str, str]:
        return {"text": f"t{i}-{n}"}

    loads = [Load(r.http_port, 2, "cluster__echo", text).start() for r in c.replicas]
    time.sleep(1.0)
    assert available(strict) == 1 and available(local) == 1

    # Redis dies: the strict replica refuses, says why, and is not ready; the lenient one goes on.
    stopped_at = private_redis.stop()
    took = until_true(lambda: call_direct(strict, "cluster__echo", {"text": "x"}).code == errors.STATE_UNAVAILABLE, 15, "-31013")
    assert took <= WITHIN, took
    refusal = call_direct(strict, "cluster__echo", {"text": "x"})
    assert refusal.code == errors.STATE_UNAVAILABLE and "Redis" in refusal.message["error"]["message"], refusal
    status, body = strict.admin("GET", "/readyz")
    assert status == 503 and "shared state (Redis) unreachable" in body, (status, body)
    assert available(strict) == 0 and available(local) == 0
    assert strict.metrics()[("twisted_mcp_state_outages_total", ())] >= 1
    assert call_direct(local, "cluster__echo", {"text": "local"}).text == "local"
    status, body = local.admin("GET", "/readyz")
    assert status == 200, body
    time.sleep(1.0)

    # Redis is back: calls pass again on the strict replica, which is ready again.
    private_redis.start()
    restarted_at = time.monotonic()
    took = until_true(lambda: call_direct(strict, "cluster__echo", {"text": "back"}).text == "back", 15, "calls passing again")
    assert took <= WITHIN, took
    until_true(lambda: available(strict) == 1 and available(local) == 1, 15, "the metric back at 1")
    until_true(lambda: strict.admin("GET", "/readyz")[0] == 200, 15, "/readyz 200 again")
    time.sleep(0.5)
    ended_at = time.monotonic()
    strict_calls, local_calls = (load.stop() for load in loads)

    # Under load: the strict replica's calls failed only with -31013, and only while Redis was away.
    assert all(a.text == args["text"] for args, a in strict_calls + local_calls if a.ok)
    wrong = [a for _, a in strict_calls if not a.ok and a.code != errors.STATE_UNAVAILABLE]
    assert wrong == [], wrong[:5]
    refused = [a for _, a in strict_calls if a.code == errors.STATE_UNAVAILABLE]
    outside = [
        (f"sent {a.sent - stopped_at:+.3f}", f"done {a.done - stopped_at:+.3f}", f"restarted {restarted_at - stopped_at:+.3f}")
        for a in refused
        if not (stopped_at <= a.done and a.sent <= restarted_at + WITHIN)
    ]
    assert refused and not outside, outside
    assert any(a.ok and a.sent > restarted_at + took for _, a in strict_calls)
    # The lenient replica's calls all passed, with Redis or without.
    assert [a for _, a in local_calls if not a.ok] == []
    assert any(stopped_at + 1 < a.sent < restarted_at for _, a in local_calls)
    assert ended_at > restarted_at
    log = strict.log()
    assert "unreachable" in log and "Redis" in log
