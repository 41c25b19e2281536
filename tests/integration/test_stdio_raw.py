"""
The gateway's stdio front-end spoken to in raw JSON-RPC through the real
`twistd -n --pidfile= mcp-gateway` command: framing, errors, lifecycle,
shutdown, process trees, and a clean stdout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from twisted_mcp.mcp import errors

from .conftest import (
    RawGateway,
    bin_path,
    descendants,
    everything,
    gateway_argv,
    gateway_env,
    server,
    time_server,
    wait_gone,
)


def test_plugin_is_listed_and_documented():
    out = subprocess.run([bin_path("twistd"), "--help"], capture_output=True, text=True, timeout=60)
    assert "mcp-gateway" in out.stdout
    out = subprocess.run([bin_path("twistd"), "mcp-gateway", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "--config" in out.stdout and "mcpServers" in out.stdout


def test_errors_framing_and_ids(raw_gateway, write_config):
    gw = raw_gateway(write_config({"echo": server("echo_fast")}, maxMessageBytes=4096))
    # Before initialize: ping is allowed, other requests are refused.
    assert gw.request("ping")["result"] == {}
    early = gw.request("tools/list")
    assert early["error"]["code"] == -32600 and "initialize" in early["error"]["message"]

    init = gw.initialize("2025-06-18")["result"]
    assert init["protocolVersion"] == "2025-06-18"
    assert init["capabilities"]["tools"]["listChanged"] is True

    gw.send(b"{not json\n")
    err = gw.read_message()
    assert err["id"] is None and err["error"]["code"] == -32700

    gw.send(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]\n')
    err = gw.read_message()
    assert err["id"] is None and err["error"]["code"] == -32600 and "batch" in err["error"]["message"]

    gw.send(b'{"jsonrpc":"2.0","id":true,"method":"ping"}\n')
    err = gw.read_message()
    assert err["id"] is None and err["error"]["code"] == -32600

    # Oversized: an error, the rest of the line discarded, the session goes on.
    gw.send(b'{"jsonrpc":"2.0","id":77,"method":"ping","params":{"pad":"' + b"x" * 10000 + b'"}}\n')
    err = gw.read_message()
    assert err["error"]["code"] == -32600 and "4096" in err["error"]["message"]

    # Ids come back exactly as sent, type included.
    for rid in ["7", 7, 7.0, 7.5, "", -3, 12345678901234567890]:
        gw.send({"jsonrpc": "2.0", "id": rid, "method": "ping"})
        line = gw.read_message()
        assert line["id"] == rid and type(line["id"]) is type(rid), line
    # The raw bytes too: 7.0 stays 7.0, not 7.
    assert b'"id":7.0,' in gw.raw

    # Notifications are never answered, known or not.
    gw.send({"jsonrpc": "2.0", "method": "notifications/whatever", "params": {}})
    gw.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 999}})
    unknown = gw.request("resources/templates/frobnicate")
    assert unknown["error"]["code"] == -32601
    discover = gw.request("server/discover")
    assert discover["error"]["code"] == -32602  # a stateless-era method without its _meta envelope
    missing = gw.request("tools/call", {"name": "nope__nothing", "arguments": {}})
    assert missing["error"]["code"] == -32602 and "nope__nothing" in missing["error"]["message"]
    ok = gw.request("tools/call", {"name": "echo__echo", "arguments": {"text": "still here"}})
    assert ok["result"]["content"][0]["text"] == "still here"
    assert gw.seen == []  # nothing unexpected came back (no answers to notifications)


def test_stdout_carries_only_protocol_even_with_noisy_backends(raw_gateway, write_config, tmp_path):
    config = write_config(
        {"garbage": server("garbage"), "bad": server("exit_at_start"), "time": time_server()},
        restartDelay=0.2,
    )
    gw = raw_gateway(config)
    gw.initialize()
    tools = [t["name"] for t in gw.request("tools/list")["result"]["tools"]]
    assert "garbage__echo" in tools and "time__get_current_time" in tools
    assert not any(t.startswith("bad__") for t in tools)
    for i in range(3):
        out = gw.request("tools/call", {"name": "garbage__echo", "arguments": {"text": f"hi {i}"}})
        assert "hi" in json.dumps(out["result"])
    gw.close_stdin()
    assert gw.wait(30) == 0
    gw.drain_stdout()
    for line in gw.raw.splitlines():
        msg = json.loads(line)
        assert msg.get("jsonrpc") == "2.0"
    log = gw.stderr_text()
    # The backends' stderr and garbage are in the log, prefixed with their names.
    assert "[bad]" in log
    assert "backend garbage wrote something that is not a JSON-RPC message" in log
    assert "backend time is up: 2 tool(s)" in log


def test_bad_config_refuses_to_start(write_config, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("mcpServers:\n  time:\n    command: 42\n    argz: []\n")
    proc = subprocess.run(
        gateway_argv(str(path)), capture_output=True, text=True, timeout=60, env=gateway_env(), cwd=str(tmp_path)
    )
    assert proc.returncode == 78
    assert proc.stdout == ""
    assert "mcpServers.time.command: expected a string" in proc.stderr
    assert "mcpServers.time.argz: unknown key" in proc.stderr


def test_two_instances_from_root_directory(write_config, tmp_path):
    config = write_config({"echo": server("echo_fast")})
    gws = [RawGateway(gateway_argv(config), tmp_path, cwd="/", name=f"root{i}") for i in range(2)]
    try:
        for gw in gws:
            gw.initialize()
        for gw in gws:
            out = gw.request("tools/call", {"name": "echo__echo", "arguments": {"text": "x"}})
            assert out["result"]["content"][0]["text"] == "x"
        for gw in gws:
            gw.close_stdin()
            assert gw.wait(30) == 0
    finally:
        for gw in gws:
            gw.finish()
    assert not os.path.exists("/twistd.pid")


def test_twist_command_works_the_same(raw_gateway, write_config):
    config = write_config({"echo": server("echo_fast")})
    gw = raw_gateway(config, argv=[bin_path("twist"), "mcp-gateway", "--config", config])
    gw.initialize()
    out = gw.request("tools/call", {"name": "echo__echo", "arguments": {"text": "twist"}})
    assert out["result"]["content"][0]["text"] == "twist"
    gw.close_stdin()
    assert gw.wait(30) == 0


def _tree_pids(gw: RawGateway) -> set[int]:
    return descendants(gw.proc.pid)


def test_eof_answers_calls_in_flight_then_stops_every_process(raw_gateway, write_config):
    config = write_config(
        {"slow": server("slow"), "gc": server("grandchild"), "everything": everything()},
    )
    gw = raw_gateway(config)
    gw.initialize()
    gw.request("tools/list")
    pids = gw.request("tools/call", {"name": "gc__pids", "arguments": {}})
    grandchild = json.loads(pids["result"]["content"][0]["text"])["grandchild"]
    tree = _tree_pids(gw)
    assert grandchild in tree
    assert len(tree) >= 5  # shims exec'd: slow, grandchild + sleep, npx + node
    # A call in flight when stdin closes still gets its answer.
    gw.send({"jsonrpc": "2.0", "id": "last", "method": "tools/call", "params": {"name": "slow__sleep", "arguments": {"seconds": 1}}})
    time.sleep(0.3)
    gw.close_stdin()
    answer = gw.response("last", timeout=30)
    assert "slept" in json.dumps(answer["result"])
    assert gw.wait(30) == 0
    assert wait_gone(tree) == set()


def test_sigterm_stops_every_process(raw_gateway, write_config):
    config = write_config({"gc": server("grandchild"), "everything": everything()})
    gw = raw_gateway(config)
    gw.initialize()
    gw.request("tools/list")
    tree = _tree_pids(gw)
    assert len(tree) >= 3
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait(30) == 0
    assert wait_gone(tree) == set()


def test_backend_that_ignores_sigterm_is_killed(raw_gateway, write_config, tmp_path):
    stubborn = tmp_path / "stubborn.sh"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\nexec 0<&-\nwhile true; do sleep 1; done\n")
    stubborn.chmod(0o755)
    config = write_config({"stubborn": {"command": str(stubborn)}}, discoveryTimeout=1, shutdownTimeout=1)
    gw = raw_gateway(config)
    gw.initialize()
    gw.wait_for_log("backend stubborn is down")
    tree = _tree_pids(gw)
    gw.close_stdin()
    assert gw.wait(30) == 0
    assert wait_gone(tree) == set()


def test_large_messages_pass_through_intact(raw_gateway, write_config):
    config = write_config({"echo": server("echo_fast")}, maxMessageBytes=64 * 1024 * 1024)
    gw = raw_gateway(config)
    gw.initialize()
    text = "0123456789abcdef" * (2 * 1024 * 1024)  # 32 MiB
    out = gw.request("tools/call", {"name": "echo__echo", "arguments": {"text": text}}, timeout=120)
    assert out["result"]["content"][0]["text"] == text
    # And the session is fine afterwards.
    assert gw.request("ping")["result"] == {}


def test_oversized_answer_from_a_backend_fails_only_that_call(raw_gateway, write_config):
    config = write_config({"echo": server("echo_fast")}, maxMessageBytes=64 * 1024)
    gw = raw_gateway(config)
    gw.initialize()
    # A small request whose answer is over the limit.
    out = gw.request("tools/call", {"name": "echo__echo", "arguments": {"text": "y" * 1024, "repeat": 100}})
    assert out["error"]["code"] == errors.BACKEND_RESPONSE_TOO_LARGE, out
    assert out["error"]["data"] == {"backend": "echo", "limit": 64 * 1024}
    small = gw.request("tools/call", {"name": "echo__echo", "arguments": {"text": "small"}})
    assert small["result"]["content"][0]["text"] == "small"
    assert "backend echo sent a message of more than 65536 bytes" in gw.stderr_text()


def test_oversized_answer_after_a_short_first_read_fails_at_once(raw_gateway, write_config):
    """The gateway's first read of an oversized answer is short (its id
    arrives in a later read): the call still fails at once (-31034), not
    after callTimeout (-31031)."""
    config = write_config(
        {"echo": server("echo_fast", env={"ECHO_FIRST_WRITE": "10"})}, maxMessageBytes=64 * 1024, callTimeout=60
    )
    gw = raw_gateway(config)
    gw.initialize()
    out = gw.request("tools/call", {"name": "echo__echo", "arguments": {"text": "y" * 1024, "repeat": 100}}, timeout=30)
    assert out["error"]["code"] == errors.BACKEND_RESPONSE_TOO_LARGE, out
    assert out["error"]["data"] == {"backend": "echo", "limit": 64 * 1024}


def test_backend_that_stops_reading_is_refused_then_restarted_when_silent(raw_gateway, write_config):
    # 64 KiB messages, so a few calls fill the pipe and the gateway's queue.
    config = write_config(
        {"w": server("wedged", livenessTimeout=2)}, maxMessageBytes=256 * 1024, callTimeout=1, restartDelay=0.2
    )
    gw = raw_gateway(config)
    gw.initialize()
    first = gw.request("tools/call", {"name": "w__pid", "arguments": {}})["result"]["content"][0]["text"]
    assert gw.request("tools/call", {"name": "w__deafen", "arguments": {}})["result"]["content"][0]["text"] == "deaf now"
    for i in range(30):
        gw.send({"jsonrpc": "2.0", "id": f"big{i}", "method": "tools/call", "params": {"name": "w__echo", "arguments": {"text": "z" * 60000}}})
    codes = [gw.response(f"big{i}")["error"]["code"] for i in range(30)]
    # Once about 1 MiB waits for the backend, the gateway refuses new calls
    # as busy (-31007) instead of buffering without bound; what was queued
    # times out (-31031). The backend is restarted only once it has written
    # nothing, not even the answer to a ping, for livenessTimeout.
    assert errors.BUSY in codes, codes
    assert set(codes) <= {errors.BUSY, errors.CIRCUIT_OPEN, errors.BACKEND_TIMEOUT, errors.BACKEND_LOST}, codes
    gw.wait_for_log("did not answer a ping (livenessTimeout); restarting it")
    assert _pid_once_back(gw) != first


def test_backend_that_closes_stdout_is_restarted(raw_gateway, write_config):
    config = write_config({"w": server("wedged")}, callTimeout=30, restartDelay=0.2)
    gw = raw_gateway(config)
    gw.initialize()
    first = gw.request("tools/call", {"name": "w__pid", "arguments": {}})["result"]["content"][0]["text"]
    started = time.monotonic()
    out = gw.request("tools/call", {"name": "w__close_stdout", "arguments": {}})
    assert out["error"]["code"] == errors.BACKEND_LOST and time.monotonic() - started < 10, out
    gw.wait_for_log("closed its stdout but is still running")
    assert _pid_once_back(gw) != first


def _pid_once_back(gw: RawGateway, timeout: float = 20.0) -> str:
    """Call w__pid until the restarted backend answers; return its pid."""
    deadline = time.monotonic() + timeout
    while True:
        out = gw.request("tools/call", {"name": "w__pid", "arguments": {}})
        if "result" in out:
            return out["result"]["content"][0]["text"]
        assert time.monotonic() < deadline, out
        time.sleep(0.2)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_a_client_that_stops_reading_stdout_pauses_its_input(raw_gateway, write_config):
    """Back-pressure on stdio: the gateway stops reading requests while its
    answers are not read, so its memory stays bounded; nothing is lost."""
    import fcntl

    gw = raw_gateway(write_config({"echo": server("echo_fast")}))
    gw.initialize()
    gw.request("tools/list")
    base = _rss_kb(gw.proc.pid)
    stdin = gw.proc.stdin.fileno()
    fcntl.fcntl(stdin, fcntl.F_SETFL, fcntl.fcntl(stdin, fcntl.F_GETFL) | os.O_NONBLOCK)
    # Each request asks for a 1 MB answer; 400 of them would be 400 MB if all were taken.
    pending = b""
    sent = 0
    stalled_since = None
    while sent < 400:
        if not pending:
            sent += 1
            pending = json.dumps({"jsonrpc": "2.0", "id": sent, "method": "tools/call",
                                  "params": {"name": "echo__echo", "arguments": {"text": "y" * 1000, "repeat": 1000}}}).encode() + b"\n"
        try:
            n = os.write(stdin, pending)
            pending = pending[n:]
            stalled_since = None
            if sent == 1 and not pending:
                time.sleep(1)  # its answer fills the pipe: from here on the client "does not read"
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 3:
                break  # the gateway stopped reading us
            time.sleep(0.01)
    assert sent < 400, "the gateway kept reading requests whose answers were not read"
    grown = _rss_kb(gw.proc.pid) - base
    assert grown < 150_000, f"the gateway grew {grown} KB while its client did not read"
    assert "is not reading its answers: pausing its input" in gw.stderr_text()
    # The client reads again: every request it sent is answered, in full.
    answered = set()
    deadline = time.monotonic() + 120
    while len(answered) < sent:
        assert time.monotonic() < deadline, f"{len(answered)} of {sent} answered"
        if pending:
            try:
                pending = pending[os.write(stdin, pending):]
            except BlockingIOError:
                pass
        try:
            msg = gw.read_message(0.5)
        except TimeoutError:
            continue
        if msg.get("id") in range(1, sent + 1):
            assert len(msg["result"]["content"][0]["text"]) == 1_000_000
            answered.add(msg["id"])
    assert answered == set(range(1, sent + 1))


def test_oversized_answer_with_the_id_last_fails_at_once(raw_gateway, write_config):
    """TypeScript SDK servers write "id" after "result": an oversized answer
    still fails its own call at once (-31034), not after callTimeout (-31031)."""
    config = write_config(
        {"everything": everything(env={"BIG": "b" * 100_000})}, maxMessageBytes=64 * 1024, callTimeout=60
    )
    gw = raw_gateway(config)
    gw.initialize()
    out = gw.request("tools/call", {"name": "everything__get-env", "arguments": {}}, timeout=30)
    assert out["error"]["code"] == errors.BACKEND_RESPONSE_TOO_LARGE, out
    assert out["error"]["data"] == {"backend": "everything", "limit": 64 * 1024}
    echo = gw.request("tools/call", {"name": "everything__echo", "arguments": {"message": "small"}})
    assert "small" in echo["result"]["content"][0]["text"]
