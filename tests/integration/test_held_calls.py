"""
Held calls through the real `twistd mcp-gateway` command (issue 12, step 3):
`@modelcontextprotocol/server-everything` (a handshake-era server) asks for
sampling, elicitation and roots during a call of the official SDK client in
`mode="2026-07-28"`, which cannot be sent a request; the gateway answers the
call with an InputRequiredResult, the SDK answers it with its callbacks and
retries with `inputResponses` and the sealed `requestState`, and the held
backend call finishes with the client's answers.  On stdio and over HTTP.
Then what a hostile client gets: a forged token, a replayed one, another
request's, and a retry after `gateway.heldCallTimeout`: each -32602, and
nothing left held (`/status`).
"""

from __future__ import annotations

import http.client
import json
import time

import pytest

from tests import mcpclient as mc

from .conftest import everything, free_port, gateway_argv, time_server
from .surface_helpers import ClientSide, text_of
from .test_eras import MODERN, connect, envelope
from .test_http import http_server  # noqa: F401  (fixture)
from .test_http_front import Raw, connect_http, start_http
from .test_http_idle import bearer, jwt_identity, token
from .test_surface_everything import everything_backend  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

ELICIT = "everything__trigger-elicitation-request"


async def ask_everything_for_input(client, side: ClientSide) -> None:
    """Each of sampling, elicitation (form) and roots, asked by the server and answered by this client's callbacks."""
    sampled = await client.call_tool("everything__trigger-sampling-request", {"prompt": "tell me about p-4711", "maxTokens": 20})
    assert not sampled.is_error, text_of(sampled)
    (request,) = side.sampling
    assert "p-4711" in request.messages[0].content.text and request.max_tokens == 20
    assert side.answer in text_of(sampled) and "model-A" in text_of(sampled)

    form = await client.call_tool(ELICIT, {})
    assert not form.is_error, text_of(form)
    (elicited,) = side.elicitations
    assert "name" in elicited.requested_schema["properties"]
    assert "- Name: Ada A" in text_of(form)

    roots = await client.call_tool("everything__get-roots-list", {})
    assert not roots.is_error, text_of(roots)
    assert side.roots_requests >= 1 and side.root in text_of(roots)
    # The other backend is untouched and answers.
    assert not (await client.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error


def test_a_stateless_era_client_on_stdio_answers_a_handshake_era_servers_requests(write_config, tmp_path, everything_backend):
    # server-everything as a stdio child (its request is tied to the session's only call to it) and
    # over Streamable HTTP (it comes on the stream of the call's POST).
    config = write_config({"everything": everything_backend, "time": time_server()})

    async def scenario():
        side = ClientSide("A")
        async with connect(config, tmp_path, **side.callbacks()) as client:
            assert client.protocol_version == MODERN
            await ask_everything_for_input(client, side)

    mc.run(scenario, timeout=90)
    log = (tmp_path / "gateway.stderr").read_text()
    # (An HTTP server-everything also asks for roots right after initialize, tied to no call: refused, as always.)
    assert "cannot answer" not in log and "open to tie the request to" not in log and "Traceback" not in log


def test_a_stateless_era_client_over_http_answers_a_handshake_era_servers_requests(daemon, tmp_path):
    _, url = start_http(daemon, {"everything": everything(), "time": time_server()})

    async def scenario():
        side = ClientSide("A")
        async with connect_http(url, mode=MODERN, **side.callbacks()) as client:
            assert client.protocol_version == MODERN
            await ask_everything_for_input(client, side)

    mc.run(scenario, timeout=90)
    assert "Traceback" not in (tmp_path / "gw.log").read_text()


def test_a_call_whose_request_lacks_the_capability_fails_with_missing_capability(write_config, tmp_path):
    config = write_config({"everything": everything()})

    async def scenario():
        side = ClientSide("A")
        async with connect(config, tmp_path, **side.callbacks(elicitation=False)) as client:
            from mcp import MCPError

            with pytest.raises(MCPError) as refused:
                await client.call_tool(ELICIT, {})
            assert refused.value.error.code == -32021
            assert refused.value.error.data == {"requiredCapabilities": {"elicitation": {"form": {}}}}
            assert side.elicitations == []
            # The session goes on: a call that needs nothing still works.
            assert await mc.call_text(client, "everything__echo", {"message": "still here"}) == "Echo: still here"

    mc.run(scenario, timeout=90)


def admin_status(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/status?format=json")
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, body
    return json.loads(body)


def test_forged_replayed_and_late_request_states_are_refused_and_nothing_stays_held(daemon, tmp_path):
    admin = free_port()
    _, url = start_http(daemon, {"everything": everything()}, admin=f"tcp:{admin}:interface=127.0.0.1", heldCallTimeout=1.5)
    raw = Raw(url)
    caps = {"elicitation": {"form": {}}}
    meta = envelope(**{"io.modelcontextprotocol/clientCapabilities": caps})
    headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": ELICIT}

    def call(rid, **more):
        params = {"name": ELICIT, "arguments": more.pop("arguments", {}), "_meta": meta, **more}
        status, _, body = raw.call("POST", {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}, headers)
        assert status == 200, body
        return json.loads(body)

    def held_call(rid):
        result = call(rid)["result"]
        assert result["resultType"] == "input_required", result
        ((key, request),) = result["inputRequests"].items()
        assert request["method"] == "elicitation/create" and "elicitationId" not in request["params"]
        return key, result["requestState"]

    accept = {"action": "accept", "content": {"name": "Mallory", "check": True, "integer": 7}}
    key, token = held_call(1)
    assert admin_status(admin)["heldCalls"]["held"] == 1
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    refusals = [
        call(2, inputResponses={key: accept}, requestState=flipped),
        call(3, inputResponses={key: accept}, requestState=token, arguments={"other": 1}),
        call(4, inputResponses={key: accept}, requestState="eyJub3QiOiJvdXJzIn0"),
    ]
    for answer in refusals:
        assert answer["error"]["code"] == -32602, answer
        assert token not in json.dumps(answer)
    assert "verification" in refusals[0]["error"]["message"]
    assert "another request" in refusals[1]["error"]["message"]
    # None of them spent the token: the real retry completes the call with the answer.
    done = call(5, inputResponses={key: accept}, requestState=token)["result"]
    assert done["resultType"] == "complete" and "Mallory" in json.dumps(done["content"])
    replayed = call(6, inputResponses={key: accept}, requestState=token)
    assert replayed["error"]["code"] == -32602 and "already used" in replayed["error"]["message"]

    # Held past gateway.heldCallTimeout: the call ends (the server's elicitation is declined), its token is spent.
    key, late = held_call(7)
    time.sleep(2.5)
    assert admin_status(admin)["heldCalls"]["held"] == 0
    expired = call(8, inputResponses={key: accept}, requestState=late)
    assert expired["error"]["code"] == -32602 and "its call has ended" in expired["error"]["message"]
    log = (tmp_path / "gw.log").read_text()
    assert "gateway.heldCallTimeout" in log
    assert token not in log and late not in log and "Mallory" not in log
    status = json.dumps(admin_status(admin))
    assert token not in status and late not in status


def test_on_stdio_a_token_works_once_and_not_after_the_held_call_timed_out(write_config, raw_gateway, tmp_path):
    admin = free_port()
    config = write_config({"everything": everything()}, heldCallTimeout=1.5)
    gw = raw_gateway(config, argv=[*gateway_argv(config), "--admin", f"tcp:{admin}:interface=127.0.0.1"])
    meta = envelope(**{"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}})

    def call(**more):
        return gw.request("tools/call", {"name": ELICIT, "arguments": more.pop("arguments", {}), "_meta": meta, **more}, timeout=60)

    first = call()["result"]
    assert first["resultType"] == "input_required"
    ((key, asked),) = first["inputRequests"].items()
    assert asked["method"] == "elicitation/create"
    token = first["requestState"]
    assert admin_status(admin)["heldCalls"] == {"held": 1, "waiting": 1, "maxHeldCalls": 128, "droppedProgress": 0}
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.close()
    assert "twisted_mcp_held_calls 1.0" in metrics
    accept = {"action": "accept", "content": {"name": "Eve", "check": True, "integer": 3}}
    forged = call(inputResponses={key: accept}, requestState=token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert forged["error"]["code"] == -32602 and token not in json.dumps(forged)
    done = call(inputResponses={key: accept}, requestState=token)["result"]
    assert done["resultType"] == "complete" and "Eve" in json.dumps(done["content"])
    replayed = call(inputResponses={key: accept}, requestState=token)
    assert replayed["error"]["code"] == -32602 and "already used" in replayed["error"]["message"]

    late = call()["result"]["requestState"]
    time.sleep(2.5)
    assert admin_status(admin)["heldCalls"]["held"] == 0
    expired = call(inputResponses={key: accept}, requestState=late)
    assert expired["error"]["code"] == -32602 and "its call has ended" in expired["error"]["message"]
    # The server still serves the connection.
    assert call(arguments={})["result"]["resultType"] == "input_required"
    log = gw.stderr_text()
    assert "gateway.heldCallTimeout" in log and token not in log and "Eve" not in log


def test_held_calls_are_bounded_per_principal(daemon, http_server, tmp_path):  # noqa: F811
    # An HTTP server ties each of its requests to its call, so calls held at once can be told apart.
    backend = http_server("everything")
    admin = free_port()
    _, url = start_http(
        daemon,
        {"everything": {"type": "http", "url": f"{backend.url}/mcp"}},
        admin=f"tcp:{admin}:interface=127.0.0.1",
        maxHeldCallsPerPrincipal=2,
    )
    # The listener accepts before its backends are discovered (slow on a loaded machine): wait for the one here.
    deadline = time.monotonic() + 60
    while not all(b["state"] == "up" for b in admin_status(admin)["backends"]):
        assert time.monotonic() < deadline, admin_status(admin)
        time.sleep(0.1)
    raw = Raw(url)
    meta = envelope(**{"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}})
    headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": ELICIT}

    def call(rid):
        message = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": ELICIT, "arguments": {}, "_meta": meta}}
        status, _, body = raw.call("POST", message, headers)
        assert status == 200, body
        return json.loads(body)

    assert [call(i)["result"]["resultType"] for i in (1, 2)] == ["input_required"] * 2
    busy = call(3)
    assert busy["error"]["code"] == -31007
    assert busy["error"]["data"] == {"limit": "maxHeldCallsPerPrincipal", "value": 2}
    assert admin_status(admin)["heldCalls"]["held"] == 2


def test_another_principals_retry_is_refused_and_the_owner_still_completes(daemon, tmp_path):
    _, url = start_http(daemon, {"everything": everything()}, extra={"identity": jwt_identity(), "roles": {"dev": {"allow": ["everything"]}}})
    raw = Raw(url)
    meta = envelope(**{"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}})
    headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": ELICIT}

    def call(who, rid, **more):
        message = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": ELICIT, "arguments": {}, "_meta": meta, **more}}
        status, _, body = raw.call("POST", message, {**headers, **bearer(who)})
        assert status == 200, body
        return json.loads(body)

    alice, mallory = token(sub="alice"), token(sub="mallory")
    held = call(alice, 1)["result"]
    ((key, _),) = held["inputRequests"].items()
    answer = {"action": "accept", "content": {"name": "Alice", "check": True, "integer": 1}}
    stolen = call(mallory, 1, inputResponses={key: answer}, requestState=held["requestState"])
    assert stolen["error"]["code"] == -32602 and "another caller" in stolen["error"]["message"]
    done = call(alice, 2, inputResponses={key: answer}, requestState=held["requestState"])["result"]
    assert done["resultType"] == "complete" and "Alice" in json.dumps(done["content"])
