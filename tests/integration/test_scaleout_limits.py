"""
A global rate limit across replicas (issue 15): three replicas of the real
daemon behind HAProxy, sharing the machine's Redis (C{state:}), with
C{limits.principal} of RATE calls a second in bursts of BURST.  Stateless-era
clients call through HAProxy, round robin over the three, far faster than
the limit for SECONDS: the calls answered number BURST + RATE x the time
the load ran, within 5% (each replica keeping its own bucket would let
three times as many through).
"""

from __future__ import annotations

import time

from twisted_mcp.mcp import errors

from .cluster import Load, cluster, redis_namespace, state_section  # noqa: F401  (fixtures)

RATE = 40.0
BURST = 40
SECONDS = 5.0


def test_a_principal_rate_limit_holds_across_three_replicas(cluster, redis_namespace):  # noqa: F811
    url, namespace = redis_namespace
    c = cluster({"state": state_section(url, namespace), "limits": {"principal": {"rate": RATE, "burst": BURST}}})
    load = Load(c.port, threads=6, tool="cluster__echo", arguments=lambda i, n: {"text": f"t{i}-{n}"}).start()
    time.sleep(SECONDS)
    calls = load.stop()

    answered = [a for args, a in calls if a.ok]
    assert all(a.text == args["text"] for args, a in calls if a.ok)
    refused = [a for _, a in calls if a.code == errors.RATE_LIMITED]
    other = [a for _, a in calls if not a.ok and a.code != errors.RATE_LIMITED]
    assert other == [], other[:5]
    # The load was spread: every replica answered calls and refused others.
    assert {a.served_by for a in answered} == {"r1", "r2", "r3"}
    assert {a.served_by for a in refused} == {"r1", "r2", "r3"}
    # Far over the limit all along: the bucket was empty at every moment after the burst.
    assert len(refused) > 2 * len(answered), (len(refused), len(answered))

    elapsed = max(a.sent for _, a in calls) - min(a.sent for _, a in calls)
    expected = BURST + RATE * elapsed
    assert abs(len(answered) - expected) <= 0.05 * expected, (
        f"{len(answered)} calls answered in {elapsed:.2f} s, expected {expected:.0f} (burst {BURST} + {RATE}/s) within 5%; "
        f"per replica: { {r: sum(1 for a in answered if a.served_by == r) for r in ('r1', 'r2', 'r3')} }"
    )
