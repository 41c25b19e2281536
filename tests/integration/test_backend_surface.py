"""
What backends list beyond tools, through the real `twistd ... mcp-gateway`
command: server-everything over stdio and over Streamable HTTP lists its
prompts, resources and resource templates (the HTTP one once its event
stream is connected), and a legacy HTTP+SSE SDK server (tools only) still
comes up; and the backend alone (tests/integration/backend_driver.py, the
real reactor) hands server-everything's sampling and roots requests to its
events, related to the call over Streamable HTTP, and sends their answers
back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

from .backend_driver import SAMPLED
from .conftest import NODE_DIR, PYTHON, TESTS, everything, gateway_env
from .test_http import http_server  # noqa: F401  (a fixture)

ROOT = os.path.dirname(TESTS)

UP = re.compile(r"backend (\w+) is up: (.*) from (\S+) ")


def test_every_kind_discovered_over_every_transport(http_server, write_config, raw_gateway):  # noqa: F811
    streamable = http_server("everything")
    legacy = http_server("http_sdk", "--transport", "sse")
    config = write_config(
        {
            "local": everything(),
            "remote": {"type": "http", "url": f"{streamable.url}/mcp"},
            "old": {"type": "sse", "url": f"{legacy.url}/sse"},
        }
    )
    gw = raw_gateway(config)
    gw.initialize()
    for name in ("local", "remote", "old"):
        gw.wait_for_log(f"backend {name} is up")
    ups = {m.group(1): m.group(2) for m in UP.finditer(gw.stderr_text())}
    listed = {}
    for name in ("local", "remote"):
        counts = {kind: int(n) for n, kind in re.findall(r"(\d+) ([a-z ]+?)\(s\)", ups[name])}
        assert counts["tool"] > 0, ups[name]
        # (server-everything adds tools once it knows the client's
        # capabilities, with a list_changed: the first count may vary.)
        del counts["tool"]
        listed[name] = counts
    # Both transports list the same server alike.
    assert listed["local"] == listed["remote"], ups
    assert set(listed["local"]) == {"prompt", "resource", "resource template"}, ups
    assert re.fullmatch(r"\d+ tool\(s\)", ups["old"]), ups["old"]
    text = gw.stderr_text()
    assert "could not list" not in text and "was refused" not in text and "malformed" not in text, text
    # The Streamable HTTP backend's event stream answered before it was declared up.
    assert "its event stream did not answer" not in text and "no event stream" not in text, text


def drive(kind: str, where: str) -> dict:
    """Run backend_driver.py (the backend alone, real reactor) and read its report."""
    proc = subprocess.run(
        [PYTHON, "-m", "tests.integration.backend_driver", kind, where],
        cwd=ROOT,
        env=gateway_env(),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(proc.stdout)


def test_server_requests_answered_over_stdio():
    report = drive("stdio", NODE_DIR)
    assert report["state"] == "up", report
    assert "trigger-sampling-request" in report["tools"] and "get-roots-list" in report["tools"]
    assert (report["prompts"], report["resources"], report["templates"]) != (0, 0, 0), report
    # The answers the events gave reached the server, whose tools returned them.
    assert SAMPLED in report["sampling_result"], report
    assert "file:///tmp" in report["roots_result"], report
    # A stdio backend cannot tell which call a request belongs to.
    methods = sorted((r["method"], r["related"]) for r in report["requests"])
    assert ("sampling/createMessage", None) in methods and ("roots/list", None) in methods, report


def test_server_requests_related_over_streamable_http(http_server):  # noqa: F811
    server = http_server("everything")
    report = drive("http", f"{server.url}/mcp")
    assert report["state"] == "up", report
    assert "trigger-sampling-request" in report["tools"], report
    assert SAMPLED in report["sampling_result"], report
    assert "file:///tmp" in report["roots_result"], report
    # The sampling request came on the stream answering the call's POST: it
    # is related to that call.  server-everything sends roots/list on its
    # standalone stream (not tied to the call that made it ask): delivered,
    # unrelated.
    requests = report["requests"]
    assert sorted(requests, key=lambda r: r["method"]) == [
        {"method": "roots/list", "related": None},
        {"method": "sampling/createMessage", "related": "ctx-1"},
    ], requests
