"""
The audit trail through the real `twistd ... mcp-gateway` command and the
`twisted-mcp audit` commands: what one record may store, and what happens
to records while the sink fails; the MCP version each record names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest
from mcp import MCPError
from prometheus_client.parser import text_string_to_metric_families

from tests import mcpclient as mc
from twisted_mcp.mcp import errors

from .conftest import LineClient, bin_path, free_port, gateway_argv, gateway_env, server, wait_for_path, wait_gone
from .test_http_front import start_http
from .test_policy import call, policy_config, read_audit, start  # noqa: F401  (fixture)


def audit_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bin_path("twisted-mcp"), "audit", *args], capture_output=True, text=True, timeout=60, env=gateway_env())


def test_a_huge_tool_name_is_stored_bounded(policy_config, raw_gateway, monkeypatch, tmp_path):
    """A refused call naming a 4 MiB tool adds about a kilobyte per field to the trail, not 8 MiB."""
    path = tmp_path / "audit.jsonl"
    config = policy_config({"echo": server("echo_fast")}, audit={"sink": "file", "path": str(path)})
    gw = start(raw_gateway, monkeypatch, config)
    name = "x" * (4 << 20)
    answer = call(gw, name)
    assert answer["error"]["code"] == -32602
    assert "result" in call(gw, "echo__echo", {"text": "still serving"})
    gw.close_stdin()
    assert gw.wait(30) == 0
    assert path.stat().st_size < 16 * 1024
    [refused] = [r for r in read_audit(path) if r.get("error_code") == -32602]
    assert refused["tool"].endswith(f"…[{4 << 20} bytes, sha256:{hashlib.sha256(name.encode()).hexdigest()}]")
    assert len(refused["reason"].encode()) <= 1024
    verify = audit_command("verify", "--config", config)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_audit_outage_never_drops_calls_that_ran(daemon, tmp_path):
    """
    The daemon's file sink fails (its path now leads to /dev/full) while a
    client makes calls that run and calls that are refused.  Records of the
    calls that ran are all kept (past maxQueue the gate refuses, even with
    onFailure: allow); refusals are dropped and counted, in the metrics and,
    once the sink is back, in a gap record that `audit verify` reports.
    """
    trail = tmp_path / "trail.jsonl"
    link = tmp_path / "audit.jsonl"
    os.symlink(trail, link)
    sock = str(tmp_path / "gw.sock")
    port = free_port()
    pid, _ = daemon(
        {"echo": server("echo_fast")},
        f"unix:{sock}",
        admin=f"tcp:{port}:interface=127.0.0.1",
        extra={
            "identity": {"principal": {"name": "tester", "roles": ["all"]}},
            "roles": {"all": {"allow": ["*"]}},
            "audit": {"sink": "file", "path": str(link), "onFailure": "allow", "maxQueue": 5},
        },
    )
    wait_for_path(sock)
    client = LineClient(sock)
    client.initialize()
    assert "result" in client.request(1, "tools/call", {"name": "echo__echo", "arguments": {"text": "before"}})

    os.remove(link)
    os.symlink("/dev/full", link)
    ran, codes = 1, []
    for n in range(40):
        answer = client.request(100 + n, "tools/call", {"name": "echo__echo" if n % 2 else "nope__missing", "arguments": {"text": str(n)}})
        if "result" in answer:
            ran += 1
        else:
            codes.append(answer["error"]["code"])
    assert errors.AUDIT_UNAVAILABLE in codes, codes  # fail closed once the queue is full of calls that ran
    assert 5 <= ran < 21
    lost = _metric(port, "twisted_mcp_audit_dropped_total")
    assert lost > 0

    os.remove(link)
    os.symlink(trail, link)
    deadline = time.monotonic() + 20
    while not _metric(port, "twisted_mcp_audit_queue_depth") == 0:
        assert time.monotonic() < deadline, "the audit queue was never written"
        time.sleep(0.1)
    assert "result" in client.request(2, "tools/call", {"name": "echo__echo", "arguments": {"text": "after"}})
    client.close()
    os.kill(pid, signal.SIGTERM)
    wait_gone({pid})

    records = read_audit(trail)
    assert sum(1 for r in records if r.get("outcome") == "ok") == ran + 1
    gaps = [r for r in records if r.get("method") == "audit/gap"]
    assert sum(g["lost"] for g in gaps) == lost
    verify = audit_command("verify", "--config", str(tmp_path / "gateway.yaml"))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{int(lost)} record(s) of refusals and listings were dropped" in verify.stdout


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15) as r:
        text = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_a_keyed_trail_and_its_checkpoint_catch_what_the_plain_chain_cannot(policy_config, raw_gateway, monkeypatch, tmp_path):
    """
    The gateway writes an HMAC chain with the key of audit.keyFile; `audit
    checkpoint` signs its head.  Records rewritten with recomputed hashes,
    a cut tail and an emptied trail are all caught; the key shows nowhere.
    """
    secret = "audit-key-" + "7" * 30
    key_file = tmp_path / "audit.key"
    key_file.write_text(secret + "\n")
    path = tmp_path / "audit.jsonl"
    config = policy_config({"echo": server("echo_fast")}, audit={"sink": "file", "path": str(path), "keyFile": str(key_file)})
    port = free_port()
    monkeypatch.setenv("TEST_JWT_SECRET", "unused")
    gw = raw_gateway(config, argv=gateway_argv(config) + ["--admin", f"tcp:{port}:interface=127.0.0.1"])
    gw.initialize()
    for i in range(5):
        assert "result" in call(gw, "echo__echo", {"text": str(i)})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status?format=json", timeout=15) as r:
        status = r.read().decode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15) as r:
        metrics = r.read().decode()
    gw.close_stdin()
    assert gw.wait(30) == 0
    for text in (status, metrics, gw.stderr_text(), path.read_text()):
        assert secret not in text

    records = read_audit(path)
    assert all(r["digest"].startswith("hmac-sha256:") for r in records)
    checkpoint = tmp_path / "checkpoint.json"
    made = audit_command("checkpoint", "--config", config, "-o", str(checkpoint))
    assert made.returncode == 0, made.stdout + made.stderr
    assert secret not in checkpoint.read_text() + made.stdout + made.stderr
    verified = audit_command("verify", "--config", config, "--checkpoint", str(checkpoint))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"still holds seq {len(records)}" in verified.stdout

    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-2]))  # the tail cut: the chain alone is still intact
    assert audit_command("verify", "--config", config).returncode == 0
    cut = audit_command("verify", "--config", config, "--checkpoint", str(checkpoint))
    assert cut.returncode == 65 and "records were cut" in cut.stdout, cut.stdout + cut.stderr
    path.write_text("")
    emptied = audit_command("verify", "--config", config, "--checkpoint", str(checkpoint))
    assert emptied.returncode == 65 and f"ends at seq 0, but the checkpoint vouches for seq {len(records)}" in emptied.stdout

    # Rewritten by someone who can write the file but lacks the key: every hash recomputed.
    records[1]["principal"] = "mallory"
    prev = ""
    with open(path, "w") as f:
        for seq, record in enumerate(records, 1):
            body = {k: v for k, v in record.items() if k != "digest"}
            body.update(seq=seq, prev=prev)
            prev = "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
            f.write(json.dumps({**body, "digest": prev}) + "\n")
    rewritten = audit_command("verify", "--config", config)
    assert rewritten.returncode == 65 and "is keyed" in rewritten.stdout, rewritten.stdout + rewritten.stderr

    key_file.write_text("short")
    bad = subprocess.run([bin_path("twisted-mcp"), "check-config", config], capture_output=True, text=True, timeout=60, env=gateway_env())
    assert bad.returncode == 78 and "audit.keyFile: the key is 5 byte(s)" in bad.stderr + bad.stdout


def test_records_unwritten_at_shutdown_reach_the_trail_at_the_next_start(daemon, tmp_path):
    """
    The file sink fails (its path leads to /dev/full) while calls run, and
    the daemon is stopped during the outage: their records are kept in the
    spill file beside the trail, `audit verify` says so, and the next start
    writes them to the trail first, so that every call that ran is there.
    """
    trail = tmp_path / "trail.jsonl"
    link = tmp_path / "audit.jsonl"
    spill = tmp_path / "audit.jsonl.spill.jsonl"
    os.symlink(trail, link)
    extra = {
        "identity": {"principal": {"name": "tester", "roles": ["all"]}},
        "roles": {"all": {"allow": ["*"]}},
        "audit": {"sink": "file", "path": str(link), "onFailure": "allow"},
    }

    def run(sock: str, texts: list[str], during_outage: bool) -> str:
        pid, log = daemon({"echo": server("echo_fast")}, f"unix:{sock}", extra=extra)
        wait_for_path(sock)
        client = LineClient(sock)
        client.initialize()
        if during_outage:
            os.remove(link)
            os.symlink("/dev/full", link)
        for n, text in enumerate(texts):
            answer = client.request(10 + n, "tools/call", {"name": "echo__echo", "arguments": {"text": text}})
            assert "result" in answer, answer
        client.close()
        os.kill(pid, signal.SIGTERM)
        assert wait_gone({pid}, 30) == set()
        with open(log) as f:
            return f.read()

    logged = run(str(tmp_path / "first.sock"), ["before"] + [f"outage {n}" for n in range(5)], during_outage=True)
    assert f"kept in the spill file {spill}" in logged
    assert spill.exists() and oct(spill.stat().st_mode & 0o777) == "0o600"

    os.remove(link)
    os.symlink(trail, link)
    config = str(tmp_path / "gateway.yaml")
    waiting = audit_command("verify", "--config", config)
    assert waiting.returncode == 0, waiting.stdout + waiting.stderr
    assert f"record(s) in the spill file {spill} are not in the trail yet" in waiting.stdout

    run(str(tmp_path / "second.sock"), ["after"], during_outage=False)
    assert not spill.exists()
    calls = [r for r in read_audit(trail) if r.get("method") == "tools/call"]
    assert [r["outcome"] for r in calls] == ["ok"] * 7
    verify = audit_command("verify", "--config", config)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "spill" not in verify.stdout


@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")
def test_each_record_names_the_protocol_of_its_request(policy_config, tmp_path):
    """
    A handshake-era SDK client (it negotiates 2025-11-25) and a 2026-07-28
    one, each through its own `twistd -n mcp-gateway` writing one file
    trail: every record of their requests (listing, call, refusal) names
    the version it was made under, and the trail verifies across both.
    """
    path = tmp_path / "audit.jsonl"
    config = policy_config({"echo": server("echo_fast")}, audit={"sink": "file", "path": str(path)})

    async def scenario(mode: str) -> str:
        async with mc.connect(
            gateway_argv(config), env=gateway_env(), cwd=str(tmp_path), errlog=str(tmp_path / "gw.stderr"), mode=mode, read_timeout=60
        ) as client:
            assert await mc.call_text(client, "echo__echo", {"text": mode}) == mode
            with pytest.raises(MCPError):
                await client.call_tool("echo__nope", {})
            return client.protocol_version

    versions = [mc.run(functools.partial(scenario, mode), timeout=90) for mode in ("legacy", "2026-07-28")]
    assert versions == ["2025-11-25", "2026-07-28"]
    records = [(r["method"], r["decision"], r.get("protocol")) for r in read_audit(path)]
    for version in versions:
        assert ("tools/call", "allow", version) in records, records
        assert ("tools/call", "deny", version) in records, records
        assert ("tools/list", "allow", version) in records, records  # the SDK lists the tools to learn their schema
    assert all(protocol in versions for _, _, protocol in records), records
    verified = audit_command("verify", "--config", config)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")
def test_records_of_http_clients_name_their_protocol_too(daemon, tmp_path):
    """Over the HTTP front: a handshake-era session's records say what it negotiated, a 2026-07-28 client's its own version."""
    path = tmp_path / "audit.jsonl"
    pid, url = start_http(daemon, {"echo": server("echo_fast")}, extra={"audit": {"sink": "file", "path": str(path)}})

    async def scenario(mode: str) -> str:
        async with mc.connect_http(f"{url}/mcp", mode=mode) as client:
            assert await mc.call_text(client, "echo__echo", {"text": mode}) == mode
            return client.protocol_version

    versions = [mc.run(functools.partial(scenario, mode), timeout=60) for mode in ("legacy", "2026-07-28")]
    assert versions == ["2025-11-25", "2026-07-28"]
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()
    calls = [(r["session"], r.get("protocol")) for r in read_audit(path) if r["method"] == "tools/call"]
    assert [protocol for _, protocol in calls] == versions, calls
    assert calls[0][0] != calls[1][0]
