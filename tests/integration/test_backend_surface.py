"""
What backends list beyond tools, through the real `twistd ... mcp-gateway`
command: server-everything over stdio and over Streamable HTTP lists its
prompts, resources and resource templates (the HTTP one once its event
stream is connected), and a legacy HTTP+SSE SDK server (tools only) still
comes up.
"""

from __future__ import annotations

import re

from .conftest import everything
from .test_http import http_server  # noqa: F401  (a fixture)

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
