"""
A gateway started without TLS (its reactor imported without pyOpenSSL:
twisted_mcp.tls_on_demand) takes TLS on when a reload brings it in: an
https backend with its own CA and a client certificate.  (Whether
cryptography's native library is in the process's memory map tells if
pyOpenSSL, which imports it, has been loaded.)
"""

from __future__ import annotations

import signal
import time
from typing import Any

from .conftest import server
from .test_http import http_server  # noqa: F401  (the fixture)


def cryptography_mapped(gw: Any) -> bool:
    with open(f"/proc/{gw.proc.pid}/maps") as f:
        return "/cryptography/hazmat/bindings/" in f.read()


def test_a_reload_that_adds_an_https_backend(http_server, write_config, raw_gateway, tmp_path):  # noqa: F811
    from .certs import make

    config = write_config({"plain": server("echo_fast")})
    gw = raw_gateway(config)
    gw.initialize()
    assert [t["name"] for t in gw.request("tools/list")["result"]["tools"]] == ["plain__echo"]
    assert not cryptography_mapped(gw)

    certs = make(str(tmp_path))
    https = http_server(
        "http_faults",
        "--tls-cert",
        certs["server.pem"],
        "--tls-key",
        certs["server-key.pem"],
        "--tls-client-ca",
        certs["ca.pem"],
    )
    tls = {"caFile": certs["ca.pem"], "certFile": certs["client.pem"], "keyFile": certs["client-key.pem"]}
    write_config({"plain": server("echo_fast"), "good": {"url": f"https://127.0.0.1:{https.port}/mcp", "tls": tls}})
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while True:
        names = [t["name"] for t in gw.request("tools/list")["result"]["tools"]]
        if "good__echo" in names or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "good__echo" in names, gw.stderr_text()
    out = gw.request("tools/call", {"name": "good__echo", "arguments": {"text": "over tls, added by a reload"}})
    assert out["result"]["content"][0]["text"] == "over tls, added by a reload"
    assert cryptography_mapped(gw)
