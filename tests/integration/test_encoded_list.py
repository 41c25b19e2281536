"""
A C{tools/list} answer written from the kept encoding of its list, through
the real daemon (`twistd ... mcp-gateway --listen`): the same tools on every
answer, and the client's exact id even when it is beyond 64 bits (orjson
refuses the message, the standard library writes it).
"""

from __future__ import annotations

from .conftest import LineClient, server, wait_for_path


def test_a_second_list_and_a_huge_id_get_the_same_tools(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    daemon({f"gen{i}": server("many_tools", env={"MANY_TOOLS_SEED": str(i)}, protocol="legacy") for i in range(3)}, f"unix:{sock}")
    wait_for_path(sock)
    client = LineClient(sock)
    client.initialize()
    first = client.request(1, "tools/list")
    tools = first["result"]["tools"]
    assert len(tools) == 300 and {t["name"].split("__")[0] for t in tools} == {"gen0", "gen1", "gen2"}
    assert client.request(2, "tools/list")["result"] == first["result"]
    huge = 2**70 + 3
    answer = client.request(huge, "tools/list")
    assert answer["id"] == huge and type(answer["id"]) is int
    assert answer["result"] == first["result"]
    client.close()
