"""
Daemon operations through the real daemonized `twistd ... mcp-gateway
--listen ...`: per-session backends, identity per connection (peer
credentials, TLS client certificates), live reload, the admin endpoint's
actions and metrics, and SIGTERM with calls in flight.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from twisted_mcp.mcp import errors

from .conftest import (
    PYTHON,
    LineClient,
    alive,
    bin_path,
    descendants,
    free_port,
    gateway_env,
    result_text,
    server,
    until,
    wait_for_path,
    wait_gone,
)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _servers_below(pid: int, script: str) -> set[int]:
    """Processes below the gateway running tests/servers/<script>.py (not the shim's parent)."""
    return {p for p in descendants(pid) if f"{script}.py" in _cmdline(p) and "-c" not in _cmdline(p).split()[:4]}


ADMIN_TOKEN = "admin-t0ken"


def _admin(port: int, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=None if body is None else json.dumps(body).encode())
    if body is not None:
        request.add_header("Content-Type", "application/json")
    token = token or ADMIN_TOKEN
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if path.startswith("/status"):
        request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _metrics(port: int) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = _admin(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


# -- per-session backends ------------------------------------------------------


def test_per_session_backends_start_and_stop_with_their_sessions(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    pid, log = daemon({"shared": server("slow"), "own": server("slow", perSession=True)}, f"unix:{sock}")
    wait_for_path(sock)
    a = LineClient(sock)
    a.initialize("a")
    names = [t["name"] for t in a.request(1, "tools/list")["result"]["tools"]]
    assert "own__pid" in names and "shared__pid" in names
    # Discovery done, the per-session backend's shared instance stopped: one slow.py runs.
    until(lambda: len(_servers_below(pid, "slow")) == 1, what="the per-session template to stop")
    shared = int(result_text(a.request(2, "tools/call", {"name": "shared__pid", "arguments": {}})))
    own_a = int(result_text(a.request(3, "tools/call", {"name": "own__pid", "arguments": {}})))
    assert own_a != shared
    assert int(result_text(a.request(4, "tools/call", {"name": "own__pid", "arguments": {}}))) == own_a  # same session, same child

    b = LineClient(sock)
    b.initialize("b")
    own_b = int(result_text(b.request(1, "tools/call", {"name": "own__pid", "arguments": {}})))
    assert own_b not in (own_a, shared)
    assert int(result_text(b.request(2, "tools/call", {"name": "shared__pid", "arguments": {}}))) == shared
    assert _servers_below(pid, "slow") == {shared, own_a, own_b}

    a.close()  # a's session ends: its own child stops, nobody else's does
    assert wait_gone({own_a}, 15) == set()
    assert alive(own_b) and alive(shared)
    assert int(result_text(b.request(3, "tools/call", {"name": "own__pid", "arguments": {}}))) == own_b

    below = descendants(pid)
    b.close()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid} | below, 30) == set()
    with open(log) as f:
        text = f.read()
    assert "started its own instance of backend own" in text


# -- identity per connection ----------------------------------------------------

def _as_user(uid: int, sock: str) -> dict:
    """Connect as another user (a forked child that drops to C{uid} first:
    the kernel reports the credentials of whoever called connect())."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            c = LineClient(sock)
            c.initialize("peer")
            out = {"list": c.request(1, "tools/list"), "call": c.request(2, "tools/call", {"name": "slow__pid", "arguments": {}})}
            c.close()
            os.write(write_end, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    _, status = os.waitpid(child, 0)
    assert status == 0, f"the client running as uid {uid} failed"
    return json.loads(data)


def test_peer_credentials_name_the_principal(daemon, tmp_path):
    import pwd

    if os.geteuid() != 0:
        why = "connecting as other users needs root (the client process drops to their uid)"
        if os.environ.get("TWISTED_MCP_REQUIRE_PEER_TESTS"):
            pytest.fail(why + "; TWISTED_MCP_REQUIRE_PEER_TESTS is set (CI)")
        pytest.skip(why)

    nobody = pwd.getpwnam("nobody").pw_uid
    stranger = 54321  # no passwd entry and no rule
    public = tempfile.mkdtemp(prefix="tmcp-", dir="/tmp")
    os.chmod(public, 0o755)
    sock = os.path.join(public, "gw.sock")
    port = free_port()
    try:
        pid, _ = daemon(
            {"echo": server("echo_fast"), "slow": server("slow")},
            f"unix:{sock}:mode=666",
            admin=f"tcp:{port}:interface=127.0.0.1",
            extra={
                "identity": {"peers": [{"uid": 0, "name": "operator", "roles": ["admin"]}, {"user": "nobody", "roles": ["viewer"]}]},
                "roles": {"admin": {"allow": ["*"]}, "viewer": {"allow": ["echo__*"]}},
            },
        )
        wait_for_path(sock)
        root = LineClient(sock)
        root.initialize("root")
        assert {t["name"] for t in root.request(1, "tools/list")["result"]["tools"]} == {
            "echo__echo", "slow__echo", "slow__pid", "slow__sleep"
        }
        assert "result" in root.request(2, "tools/call", {"name": "slow__pid", "arguments": {}})

        seen = _as_user(nobody, sock)
        assert [t["name"] for t in seen["list"]["result"]["tools"]] == ["echo__echo"]
        assert seen["call"]["error"]["code"] == errors.ACCESS_DENIED
        assert "'nobody' (roles: viewer)" in seen["call"]["error"]["message"]

        unknown = _as_user(stranger, sock)
        error = unknown["list"]["error"]
        assert error["code"] == errors.AUTHENTICATION_FAILED
        assert f"uid {stranger}" in error["message"] and "identity.peers" in error["message"]

        status, body = _admin(port, "/status")
        assert status == 200
        assert [c["principal"] for c in json.loads(body)["clients"]] == ["operator"]
        root.close()
        os.kill(pid, signal.SIGTERM)
        assert wait_gone({pid}, 30) == set()
    finally:
        shutil.rmtree(public, ignore_errors=True)


def test_tls_client_certificate_names_the_principal(daemon, tmp_path):
    from .certs import make

    files = make(str(tmp_path))
    port = free_port()
    endpoint = (
        f"ssl:{port}:interface=127.0.0.1:privateKey={files['server-key.pem']}:certKey={files['server.pem']}"
        f":clientCA={files['ca.pem']}"
    )
    pid, log = daemon(
        {"echo": server("echo_fast"), "slow": server("slow")},
        endpoint,
        extra={
            "identity": {"certificates": [{"commonName": "client", "name": "tls-client", "roles": ["viewer"]}]},
            "roles": {"viewer": {"allow": ["echo__*"]}},
        },
    )

    def connect(with_cert: bool) -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=files["ca.pem"])
        if with_cert:
            context.load_cert_chain(files["client.pem"], files["client-key.pem"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    sock = until(lambda: _try(lambda: connect(True)), what="the TLS listener")
    client = LineClient("", sock=sock)
    client.initialize("tls")
    assert [t["name"] for t in client.request(1, "tools/list")["result"]["tools"]] == ["echo__echo"]
    assert client.request(2, "tools/call", {"name": "slow__pid", "arguments": {}})["error"]["code"] == errors.ACCESS_DENIED
    assert result_text(client.request(3, "tools/call", {"name": "echo__echo", "arguments": {"text": "over tls"}})) == "over tls"

    # Without a certificate the handshake itself is refused.
    refused = False
    anonymous = None
    try:
        anonymous = connect(False)
        anonymous.sendall(b'{"jsonrpc":"2.0","id":0,"method":"ping"}\n')
        refused = anonymous.recv(100) == b""  # TLS 1.3 reports the refusal on first read
    except (ssl.SSLError, OSError):
        refused = True
    finally:
        if anonymous is not None:
            anonymous.close()
    assert refused
    client.close()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()
    with open(log) as f:
        assert "CN='client'" in f.read()


def _try(fn):
    try:
        return fn()
    except OSError:
        return None


# -- live reload ---------------------------------------------------------------


def test_reload_adds_removes_and_tightens_while_a_client_stays_connected(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    port = free_port()
    identity = {"peers": [{"uid": os.getuid(), "name": "me", "roles": ["dev"]}]}
    pid, log = daemon(
        {"keep": server("slow"), "gone": server("echo_fast")},
        f"unix:{sock}",
        admin=f"tcp:{port}:interface=127.0.0.1",
        extra={"identity": identity, "roles": {"dev": {"allow": ["*"]}}},
        adminToken=ADMIN_TOKEN,
    )
    config = tmp_path / "gateway.yaml"
    wait_for_path(sock)
    c = LineClient(sock)
    c.initialize()
    assert {t["name"] for t in c.request(1, "tools/list")["result"]["tools"]} == {"keep__echo", "keep__pid", "keep__sleep", "gone__echo"}
    keep_pid = int(result_text(c.request(2, "tools/call", {"name": "keep__pid", "arguments": {}})))
    gone_pids = _servers_below(pid, "echo_fast")
    assert len(gone_pids) == 1

    # A config that does not validate is rejected; everything stays.
    good = json.loads(config.read_text())
    config.write_text(json.dumps({**good, "roles": {"dev": {"allow": ["bad pattern"]}}}))
    status, body = _admin(port, "/reload", {})
    assert status == 422 and "roles.dev.allow[0]" in json.loads(body)["problems"]
    assert "result" in c.request(3, "tools/call", {"name": "keep__sleep", "arguments": {"seconds": 0}})

    # Add one backend, remove another, deny a tool: applied by SIGHUP.
    new = dict(good)
    new["mcpServers"] = {"keep": good["mcpServers"]["keep"], "added": server("echo_fast")}
    new["roles"] = {"dev": {"allow": ["*"], "deny": ["keep__sleep"]}}
    config.write_text(json.dumps(new))
    os.kill(pid, signal.SIGHUP)
    until(lambda: any(n["method"] == "notifications/tools/list_changed" for n in c.notifications) or _poll(c), what="list_changed")
    tools = until(
        lambda: (lambda names: names if "added__echo" in names else None)(
            {t["name"] for t in c.request(4, "tools/list")["result"]["tools"]}
        ),
        what="the added backend's tools",
    )
    assert tools == {"keep__echo", "keep__pid", "added__echo"}
    assert c.request(5, "tools/call", {"name": "keep__sleep", "arguments": {"seconds": 0}})["error"]["code"] == errors.ACCESS_DENIED
    assert c.request(6, "tools/call", {"name": "gone__echo", "arguments": {"text": "x"}})["error"]["code"] == -32602
    assert result_text(c.request(7, "tools/call", {"name": "added__echo", "arguments": {"text": "new"}})) == "new"
    # The untouched backend kept running: the same process answers.
    assert int(result_text(c.request(8, "tools/call", {"name": "keep__pid", "arguments": {}}))) == keep_pid
    assert wait_gone(gone_pids, 15) == set()
    with open(log) as f:
        text = f.read()
    assert "backend gone: removed" in text and "backend added: added" in text
    c.close()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()


def _poll(client: LineClient) -> bool:
    """Read one message if any arrives soon (notifications are kept)."""
    client.sock.settimeout(0.2)
    try:
        message = client.read()
    except (socket.timeout, TimeoutError):
        return False
    finally:
        client.sock.settimeout(30)
    if "method" in message and "id" not in message:
        client.notifications.append(message)
    return False


# -- admin actions and metrics ------------------------------------------------------


def test_admin_kill_switch_pin_approval_and_counters(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    port = free_port()
    lock = tmp_path / "tools.lock.json"
    pid, log = daemon(
        {"echo": server("echo_fast")},
        f"unix:{sock}",
        admin=f"tcp:{port}:interface=127.0.0.1",
        extra={"pinning": {"mode": "enforce", "lockFile": str(lock)}, "limits": {"principal": {"rate": 0.01, "burst": 3}}},
        adminToken=ADMIN_TOKEN,
    )
    wait_for_path(sock)
    c = LineClient(sock)
    c.initialize()
    assert c.request(1, "tools/list")["result"]["tools"] == []  # no lock file: quarantined
    assert c.request(2, "tools/call", {"name": "echo__echo", "arguments": {"text": "x"}})["error"]["code"] == errors.TOOL_QUARANTINED
    status, body = _admin(port, "/status")
    assert json.loads(body)["quarantined"][0]["tool"] == "echo__echo"

    status, body = _admin(port, "/pins/approve", {"tools": ["echo__echo"]})
    assert status == 200 and json.loads(body)["approved"] == ["echo__echo"]
    assert json.loads(lock.read_text())["tools"]["echo__echo"]["backend"] == "echo"
    until(lambda: any(n["method"] == "notifications/tools/list_changed" for n in c.notifications) or _poll(c), what="list_changed")
    assert result_text(c.request(3, "tools/call", {"name": "echo__echo", "arguments": {"text": "pinned"}})) == "pinned"

    c.notifications.clear()
    status, body = _admin(port, "/kill", {"kind": "tool", "name": "echo__echo", "disabled": True})
    assert status == 200 and json.loads(body)["tools"] == ["echo__echo"]
    until(lambda: any(n["method"] == "notifications/tools/list_changed" for n in c.notifications) or _poll(c), what="list_changed")
    assert c.request(4, "tools/call", {"name": "echo__echo", "arguments": {"text": "x"}})["error"]["code"] == errors.TOOL_DISABLED
    assert _admin(port, "/kill", {"kind": "tool", "name": "echo__echo", "disabled": False})[0] == 200
    assert result_text(c.request(5, "tools/call", {"name": "echo__echo", "arguments": {"text": "back"}})) == "back"
    # Burst of 3 spent (calls 2 was refused before the limit; 3 and 5 took tokens; 4 was refused by the kill switch).
    assert c.request(6, "tools/call", {"name": "echo__echo", "arguments": {"text": "x"}})["result"]
    assert c.request(7, "tools/call", {"name": "echo__echo", "arguments": {"text": "x"}})["error"]["code"] == errors.RATE_LIMITED

    assert _admin(port, "/kill", {"kind": "nonsense"})[0] == 400
    assert _admin(port, "/reload")[0] == 405  # GET

    m = _metrics(port)
    calls = lambda outcome, code="": m.get(("twisted_mcp_requests_total", (("code", code), ("method", "tools/call"), ("outcome", outcome))), 0)  # noqa: E731
    assert calls("ok") == 3
    assert calls("error", str(errors.TOOL_QUARANTINED)) == 1 and calls("error", str(errors.TOOL_DISABLED)) == 1 and calls("error", str(errors.RATE_LIMITED)) == 1
    assert m[("twisted_mcp_requests_total", (("code", ""), ("method", "tools/list"), ("outcome", "ok")))] == 1
    assert m[("twisted_mcp_backend_latency_seconds_count", (("backend", "echo"),))] == 3
    assert m[("twisted_mcp_rate_limited_total", ())] == 1
    assert m[("twisted_mcp_concurrency_refused_total", ())] == 0
    with open(log) as f:
        text = f.read()
    assert "kill switch thrown for tool echo__echo" in text and "approved (pinned) echo__echo" in text
    c.close()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()


# -- shutdown --------------------------------------------------------------------


def test_sigterm_lets_calls_in_flight_finish_then_cancels_the_rest(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    pid, log = daemon({"slow": server("slow")}, f"unix:{sock}", shutdownGrace=2)
    wait_for_path(sock)
    c = LineClient(sock)
    c.initialize()
    c.request(1, "tools/list")
    below = descendants(pid)
    c.send({"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "slow__sleep", "arguments": {"seconds": 1}}})
    c.send({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "slow__sleep", "arguments": {"seconds": 60}}})
    time.sleep(0.3)
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    # A new connection is refused once the listener closed.
    finished = c.answer(10)
    assert result_text(finished) == "slept 1"
    cut = c.answer(11)
    took = time.monotonic() - started
    assert cut["error"]["code"] == errors.GATEWAY_SHUTTING_DOWN and "shutting down" in cut["error"]["message"]
    assert 1.5 <= took < 10, took
    assert wait_gone({pid} | below, 30) == set()
    with pytest.raises((AssertionError, OSError)):
        c.read()  # the gateway closed the connection
    c.close()
    with open(log) as f:
        assert "still in flight after the grace period" in f.read()


# -- systemd socket activation -----------------------------------------------------

_ACTIVATE = r"""
import os, socket, sys
path, argv = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(16)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDNAMES"] = "gw"
os.execv(argv[0], argv)
"""


def test_systemd_socket_activation(write_config, tmp_path):
    """What systemd does for a .socket unit: bind, pass fd 3, LISTEN_FDS/LISTEN_PID, exec."""
    config = write_config({"echo": server("echo_fast")})
    sock = str(tmp_path / "activated.sock")
    argv = [bin_path("twistd"), "-n", "--pidfile=", "mcp-gateway", "--config", config, "--listen", "systemd:domain=UNIX:index=0"]
    proc = subprocess.Popen([PYTHON, "-c", _ACTIVATE, sock, *argv], env=gateway_env(), cwd=str(tmp_path),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_path(sock, 10)  # bound by the "systemd" wrapper before twistd even starts
        c = LineClient(sock)  # accepted by the kernel now, served once the gateway runs
        c.initialize()
        assert result_text(c.request(1, "tools/call", {"name": "echo__echo", "arguments": {"text": "activated"}})) == "activated"
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[0].decode()  # with -n and --listen, twistd logs to stdout
    assert proc.returncode == 0, err
    assert "listening on systemd:domain=UNIX:index=0" in err


# -- logs ---------------------------------------------------------------------------


def test_json_logs_carry_request_ids_and_never_secrets(daemon, tmp_path, monkeypatch):
    secrets = {
        "env": "s3cr3t-env-value-1",
        "header": "s3cr3t-header-value-2",
        "admin": "s3cr3t-admin-token-3",
    }
    sock = str(tmp_path / "gw.sock")
    port = free_port()
    pid, log = daemon(
        {
            "slow": server("slow", env={"API_KEY": secrets["env"]}, callTimeout=0.5),
            # Nothing listens there: the gateway keeps retrying it, with its header.
            "remote": {"url": f"http://127.0.0.1:{free_port()}/mcp", "headers": {"Authorization": f"Bearer {secrets['header']}"}},
        },
        f"unix:{sock}",
        admin=f"tcp:{port}:interface=127.0.0.1",
        args=("--log-format", "json"),
        adminToken=secrets["admin"],
    )
    wait_for_path(sock)
    c = LineClient(sock)
    c.initialize()
    c.request(1, "tools/list")
    timed_out = c.request("call-42", "tools/call", {"name": "slow__sleep", "arguments": {"seconds": 5}})
    assert timed_out["error"]["code"] == errors.BACKEND_TIMEOUT
    assert _admin(port, "/status", token=secrets["admin"])[0] == 200
    assert _admin(port, "/status", token="wrong")[0] == 401
    c.close()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()
    with open(log) as f:
        lines = f.read().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "namespace", "message"} <= set(e) for e in events)
    about_call = [e for e in events if e.get("request") == "call-42"]
    assert about_call and "did not answer tools/call within 0.5 s" in about_call[0]["message"]
    assert about_call[0]["level"] == "info" and about_call[0]["client"] == "unix#1"
    text = "\n".join(lines)
    for name, secret in secrets.items():
        assert secret not in text, f"the {name} secret is in the log"


def _large_valid_config(servers: dict, disabled: int, size: int) -> str:
    """A valid YAML config of about C{size} bytes: C{servers}, C{disabled}
    disabled servers, and comments to fill the rest."""
    lines = ["mcpServers:"]
    for name, spec in servers.items():
        lines.append(f"  {name}: {json.dumps(spec)}")
    for i in range(disabled):
        lines.append(f"  off{i}:\n    command: /bin/true\n    args: [a, b, c]\n    env: {{X: y}}\n    disabled: true")
    text = "\n".join(lines) + "\n"
    comment = "# " + "x" * 78 + "\n"
    return text + comment * ((size - len(text)) // len(comment))


def test_a_large_config_reloaded_by_the_admin_endpoint_stalls_no_client(daemon, tmp_path):
    """POST /reload reads and validates the file in a worker thread: a
    client is answered while a 3 MiB config is parsed, and the admin
    answer still says what changed."""
    import threading

    sock = str(tmp_path / "gw.sock")
    port = free_port()
    pid, log = daemon({"e": server("echo_fast")}, f"unix:{sock}", admin=f"tcp:{port}:interface=127.0.0.1", adminToken=ADMIN_TOKEN)
    wait_for_path(sock)
    client = LineClient(sock)
    client.initialize()
    with open(tmp_path / "gateway.yaml") as f:
        gateway = json.load(f)["gateway"]
    servers = {"e": server("echo_fast"), "f": server("echo_fast")}
    text = _large_valid_config(servers, 8000, 3 << 20).replace("mcpServers:", f"gateway: {json.dumps(gateway)}\nmcpServers:", 1)
    (tmp_path / "gateway.yaml").write_text(text)

    answers: list[tuple[int, str]] = []
    reload = threading.Thread(target=lambda: answers.append(_admin(port, "/reload", {})))
    reload.start()
    until(lambda: "admin endpoint: reload requested" in pathlib.Path(log).read_text(), what="the reload to start")
    sent = time.monotonic()
    assert client.request(1, "ping") == {"jsonrpc": "2.0", "id": 1, "result": {}}
    waited = time.monotonic() - sent
    reload.join(60)
    assert answers, "no answer to POST /reload"
    status, body = answers[0]
    assert (status, json.loads(body)) == (200, {"applied": True, "changes": ["backend f: added"]})
    assert waited < 1.5, f"a ping waited {waited:.1f} s while the config was parsed"
    client.close()
