"""
The kill switch and pin approvals across replicas (issue 15): three
replicas of the real daemon sharing the machine's Redis (C{state:}), each
with its own pin lock file (none at first, so every tool is quarantined:
C{pinning.mode: enforce}).  A tool approved on replica 2's admin endpoint
becomes callable on replicas 1 and 3 within a second (and lands in their
lock files); a kill switch thrown on replica 1 refuses the tool on every
replica within a second, and releasing it there lets it through everywhere
within a second.  Each replica is called directly (no proxy), so every one
is seen to change.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable

from twisted_mcp.mcp import errors

from .cluster import Answer, Replica, call_direct, cluster, redis_namespace, state_section  # noqa: F401  (fixtures)

WITHIN = 1.0


def time_until_everywhere(replicas: list[Replica], wanted: Callable[[Answer], bool], limit: float = 10.0) -> dict[str, float]:
    """Call C{cluster__echo} on each replica (in parallel) until C{wanted}; seconds each took from now."""
    start = time.monotonic()
    took: dict[str, float] = {}
    seen: dict[str, Answer] = {}

    def poll(replica: Replica) -> None:
        while time.monotonic() - start < limit:
            answer = call_direct(replica, "cluster__echo", {"text": "probe"})
            seen[replica.name] = answer
            if wanted(answer):
                took[replica.name] = time.monotonic() - start
                return
            time.sleep(0.02)

    threads = [threading.Thread(target=poll, args=(r,), daemon=True) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(limit + 15)
    missing = {r.name: seen.get(r.name) for r in replicas if r.name not in took}
    assert not missing, f"not changed within {limit} s: {missing}"
    return took


def refused_with(code: int) -> Callable[[Answer], bool]:
    return lambda a: a.code == code


def answered(a: Answer) -> bool:
    return a.text == "probe"


def test_kill_switch_and_pin_approval_apply_on_every_replica_within_a_second(cluster, redis_namespace):  # noqa: F811
    url, namespace = redis_namespace
    config = {
        "state": state_section(url, namespace),
        "pinning": {"mode": "enforce", "lockFile": "${CLUSTER_REPLICA_DIR}/tools.lock.json"},
    }
    c = cluster(config, haproxy=False)
    r1, r2, r3 = c.replicas
    for replica in c.replicas:
        assert call_direct(replica, "cluster__echo", {"text": "x"}).code == errors.TOOL_QUARANTINED

    # Approved on replica 2: callable on 1 and 3 within a second, and pinned in their lock files.
    status, body = r2.admin("POST", "/pins/approve", {"tools": ["cluster__echo"]})
    assert status == 200 and json.loads(body)["approved"] == ["cluster__echo"], body
    assert json.loads(body).get("shared") is True, body
    took = time_until_everywhere([r1, r3], answered)
    assert max(took.values()) <= WITHIN, took
    for replica in (r1, r3):
        lock = json.loads((replica.dir / "tools.lock.json").read_text())
        assert "cluster__echo" in lock["tools"], lock
        # Only that tool: the others stay quarantined everywhere.
        assert call_direct(replica, "cluster__pid", {}).code == errors.TOOL_QUARANTINED

    # Thrown on replica 1: refused on all three within a second.
    status, body = r1.admin("POST", "/kill", {"kind": "tool", "name": "cluster__echo", "disabled": True})
    assert status == 200 and json.loads(body).get("shared") is True, body
    took = time_until_everywhere(c.replicas, refused_with(errors.TOOL_DISABLED))
    assert max(took.values()) <= WITHIN, took
    status, body = r3.admin("GET", "/kill")
    assert status == 200 and "cluster__echo" in json.loads(body)["tools"], body

    # Released on replica 1: callable on all three within a second.
    status, body = r1.admin("POST", "/kill", {"kind": "tool", "name": "cluster__echo", "disabled": False})
    assert status == 200, body
    took = time_until_everywhere(c.replicas, answered)
    assert max(took.values()) <= WITHIN, took
