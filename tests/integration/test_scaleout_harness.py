"""
The scale-out harness itself (tests/integration/cluster.py), on what needs
no shared state: three replicas behind HAProxy spread stateless-era calls
round robin, keep a handshake-era session on one replica, take a killed
replica out within the health check's bound and bring it back when it is
restarted, and leave no process behind.
"""

from __future__ import annotations

import time

import pytest

from tests import mcpclient as mc

from .cluster import Stateless, cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")


def test_round_robin_affinity_kill_and_restart(cluster):  # noqa: F811
    c = cluster({})
    client = Stateless(c.port)
    try:
        answers = [client.call("cluster__pid", {}) for _ in range(9)]
        assert all(a.ok for a in answers), answers
        # Each replica has its own backend: three pids, each answering a third of the calls.
        pids = {a.text for a in answers}
        assert len(pids) == 3 and {a.served_by for a in answers} == {"r1", "r2", "r3"}
        token = client.call("cluster__echo", {"text": "token-1", "seconds": 0.01})
        assert token.text == "token-1"
    finally:
        client.close()

    async def session() -> set[str]:
        async with mc.connect_http(f"{c.url}/mcp") as s:
            return {await mc.call_text(s, "cluster__pid") for _ in range(6)}

    assert len(mc.run(session, timeout=60)) == 1  # the session stuck to one replica

    killed = c[1]
    killed.kill()
    took = c.proxy.wait_state(killed.name, up=False)
    assert took < 2.0, took
    client = Stateless(c.port)
    try:
        after = [client.call("cluster__pid", {}) for _ in range(6)]
        assert all(a.ok for a in after), after
        assert {a.served_by for a in after} == {"r1", "r3"}
        killed.start()
        killed.wait_ready()
        c.proxy.wait_state(killed.name, up=True)
        time.sleep(0.1)
        back = [client.call("cluster__pid", {}) for _ in range(6)]
        assert {a.served_by for a in back} == {"r1", "r2", "r3"}
    finally:
        client.close()
