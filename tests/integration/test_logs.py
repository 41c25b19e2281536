"""
The log of the real daemon (`twistd --logfile ... mcp-gateway --listen ...`)
under hostile input: client text with control characters, a backend that
floods its stderr, and rotation that keeps a bounded number of files.
"""

from __future__ import annotations

import json
import os

import pytest

from .conftest import LineClient, server, until, wait_for_path

HOSTILE = "\x1b[2J\x1b[31mevil\r\n2026-01-01T00:00:00+0000 [twisted_mcp.dispatch.gateway#info] forged\u202e"
SHOWN = "\\x1b[2J\\x1b[31mevil\\r\\n2026-01-01T00:00:00+0000 [twisted_mcp.dispatch.gateway#info] forged\\u202e"
MAX_FIELD_CHARS = 8192


#: Log lines can be slow to land on a loaded machine.
LOG_WAIT = 30.0


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _log_with(path: str, text: str) -> str:
    return until(lambda: (lambda log: log if text in log else None)(_read(path)), timeout=LOG_WAIT, what=f"{text!r} in the log")


@pytest.fixture
def connect(daemon, tmp_path):
    """connect(servers, *gateway_args) -> (a client of a new daemon, its log file's path)."""
    clients: list[LineClient] = []

    def start(servers: dict, *args: str) -> tuple[LineClient, str]:
        sock = str(tmp_path / "gw.sock")
        _, log = daemon(servers, f"unix:{sock}", args=args)
        wait_for_path(sock)
        clients.append(LineClient(sock))
        return clients[-1], log

    yield start
    for client in clients:
        client.close()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_client_info_escaped_and_bounded(connect, fmt):
    """A client's clientInfo reaches the log with its control characters escaped, and cut."""
    client, log = connect({"echo": server("echo_fast")}, "--log-format", fmt)
    version = "1\x07" + "v" * 50_000  # under maxHandshakeBytes (64 KiB), far over the 8192 a log field keeps
    params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": HOSTILE, "version": version}}
    assert "result" in client.request(0, "initialize", params)
    text = _log_with(log, "connected (protocol")
    shown_version = "1\\x07" + "v" * (MAX_FIELD_CHARS - 2) + f"...[{len(version) - MAX_FIELD_CHARS} more characters]"
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    if fmt == "json":
        assert "\\u001b" not in text
        [line] = [json.loads(line) for line in text.splitlines() if "connected (protocol" in line]
        assert line["message"].endswith(f": {SHOWN} {shown_version} connected (protocol 2025-06-18)")
        assert (line["name"], line["version"]) == (SHOWN, shown_version)
    else:
        [line] = [line for line in text.splitlines() if "connected (protocol" in line]
        assert line.endswith(f": {SHOWN} {shown_version} connected (protocol 2025-06-18)")
        assert not any(line.startswith("2026-01-01T00:00:00+0000") for line in text.splitlines())
    # The gateway goes on serving that client.
    assert client.request(1, "tools/list")["result"]["tools"]


def _stderr(client: LineClient, rid: int, count: int, length: int, text: str = "") -> None:
    answer = client.request(rid, "tools/call", {"name": "noisy__stderr", "arguments": {"count": count, "length": length, "text": text}})
    assert answer["result"]["content"][0]["text"] == str(count), answer


def test_backend_stderr_cut_escaped_and_rate_limited(connect):
    client, log = connect({"noisy": server("noisy")})
    client.initialize()
    # One line of 1 MiB with control characters: its first 4 KiB, escaped, and how much was cut.
    _stderr(client, 1, 1, 1 << 20, "\x1b[31mred\x1b[0m")
    text = _log_with(log, "more bytes]")
    assert "\x1b" not in text
    [line] = [line for line in text.splitlines() if "more bytes]" in line]
    head = "\\x1b[31mred\\x1b[0m" + "." * (4096 - 12)
    assert line.endswith(f"[noisy] {head}...[{(1 << 20) - 4096} more bytes]")
    # 5000 lines at once: a burst is logged, the rest counted and summarised; none is lost unaccounted.
    _stderr(client, 2, 5000, 100, "flood")

    def accounted():
        lines = _read(log).splitlines()
        logged = sum(1 for line in lines if "[noisy] flood" in line)
        summaries = [line for line in lines if "stderr lines suppressed" in line]
        suppressed = sum(int(line.split("backend noisy: ")[1].split()[0]) for line in summaries)
        return (logged, suppressed) if logged + suppressed == 5000 else None

    logged, suppressed = until(accounted, timeout=LOG_WAIT, what="every flood line to be logged or counted")
    assert 200 <= logged < 5000 and suppressed > 0
    # The gateway and the backend go on serving.
    assert client.request(3, "tools/call", {"name": "noisy__pid", "arguments": {}})["result"]["content"][0]["text"].isdigit()


def test_logfile_rotation_keeps_n_files(connect, tmp_path):
    """--log-max-bytes and --log-keep: a flood leaves at most N rotated files, old ones included."""
    with open(tmp_path / "gw.log.9", "w") as f:
        f.write("left by an earlier run\n")
    client, log = connect({"noisy": server("noisy")}, "--log-max-bytes", "16K", "--log-keep", "3")
    client.initialize()
    _stderr(client, 1, 150, 4000, "big")  # 600 kB of log (within the stderr burst): about 37 rotations
    _stderr(client, 2, 1, 10, "end")
    _log_with(log, "[noisy] end")
    assert _logs(tmp_path) == [log, f"{log}.1", f"{log}.2", f"{log}.3"]
    for path in _logs(tmp_path)[1:]:
        assert 16 * 1024 <= os.path.getsize(path) < 16 * 1024 + 5000


def _logs(directory) -> list[str]:
    return sorted(str(directory / name) for name in os.listdir(directory) if name.startswith("gw.log"))
