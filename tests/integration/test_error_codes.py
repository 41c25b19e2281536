"""
A server's own JSON-RPC errors through the real `twistd ... mcp-gateway`
command: relayed as they are, even when their code is one of the gateway's,
and never taken for the gateway's own refusal or transport failure.
"""

from __future__ import annotations

from twisted_mcp.mcp import errors

from .conftest import server
from .test_policy import call, policy_config, start  # noqa: F401  (fixture)


def test_a_servers_error_with_a_gateway_code_is_relayed_as_the_servers(policy_config, raw_gateway, monkeypatch):
    """A real SDK server answers with each of the gateway's codes in turn.
    The client gets each answer exactly as the server sent it; the circuit
    breaker (two failures open it) counts none of them, so every call reaches
    the server; and the gateway logs none as its own failure.  Then two of
    the gateway's own timeouts, same code as one the server sent, are logged
    and do open the breaker."""
    config = policy_config(
        {"erring": server("erring", callTimeout=1)},
        breaker={"failures": 2, "openSeconds": 60},
    )
    gw = start(raw_gateway, monkeypatch, config)
    for code in sorted(errors.GATEWAY_CODES):
        answer = call(gw, "erring__fail", {"code": code, "message": f"the server's own {code}"})
        assert answer["error"] == {"code": code, "message": f"the server's own {code}", "data": {"server": "erring"}}, answer

    for _ in range(2):
        timed_out = call(gw, "erring__sleep", {"seconds": 30})["error"]
        assert timed_out["code"] == errors.BACKEND_TIMEOUT and timed_out["data"] == {"backend": "erring", "timeout": 1}, timed_out
    opened = call(gw, "erring__fail", {"code": 1, "message": "not reached"})["error"]
    assert opened["code"] == errors.CIRCUIT_OPEN and opened["data"]["state"] == "open", opened

    log = gw.wait_for_log("closed -> open")
    logged = [line for line in log.splitlines() if "failed with" in line]
    assert len(logged) == 2 and all(f"failed with {errors.BACKEND_TIMEOUT}: backend 'erring' did not answer" in line for line in logged), logged
