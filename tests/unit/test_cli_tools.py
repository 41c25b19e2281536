"""
Tests for C{twisted-mcp tools} (design §7.1): the admin endpoint's C{GET
/tools} over a real L{Gateway} with fake backends (L{World}), the report
it answers (L{twisted_mcp.ops.tools_report}), the command's formatter, and
the command's C{--admin} path against a stand-in admin endpoint.
"""

from __future__ import annotations

import json
from http.server import ThreadingHTTPServer
from types import MappingProxyType
from typing import Any

import attrs
import pytest

from twisted_mcp.cli.tools import render
from twisted_mcp.config.models import Profile, Shaping
from twisted_mcp.config.surface import ClientsSettings, SurfaceSettings
from twisted_mcp.dispatch.surface import budget_for
from twisted_mcp.dispatch.views import DEFAULT_VIEW
from twisted_mcp.mcp.clients import BUILT_IN, ClientRule
from twisted_mcp.ops.tools_report import ReportProblem, budget_sources, principal_named
from twisted_mcp.policy.identity import IdentityConfig, Principal
from twisted_mcp.policy.peers import PeerRule
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig, Role

from .test_admin import World, config

ALICE = Principal(name="alice", roles=("dev",), source="config")
TINY = ClientRule("tiny*", maxTools=2)


def world(**surface: Any) -> World:
    w = World()
    if surface:
        w.gateway.surface = SurfaceSettings(**surface)
    w.ready()
    return w


def tools(w: World, query: bytes = b"", **kw: Any) -> Any:
    return w.get(b"/tools" + (b"?" + query if query else b""), **kw)


def names(rows: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in rows]


# -- GET /tools ----------------------------------------------------------------


def test_default_lists_every_tool_in_full_mode() -> None:
    answer = tools(world())
    assert answer.code == 200
    report = answer.json()
    assert report["mode"] == "full"
    assert report["principal"] == {"name": "local", "roles": [], "source": "local", "allAccess": True}
    assert names(report["surface"]) == ["alpha__add", "alpha__echo", "beta__get_time"]
    assert report["surface"][0] == {"position": 1, "name": "alpha__add", "shaped": "alpha__add", "backend": "alpha", "tool": "add", "marks": []}
    # The backend's own name is shown beside the shaped one.
    assert report["surface"][2]["tool"] == "get.time"
    assert report["budget"]["keys"]["maxTools"] == {"value": None, "source": "default"}
    assert report["down"] == [] and report["ready"] is True


def test_a_small_budget_gives_search_mode_with_its_source() -> None:
    w = world(clients=ClientsSettings(rules=(TINY,)))
    report = tools(w, b"client=tiny-client").json()
    assert report["mode"] == "search"
    assert names(report["surface"]) == ["search_tools", "call_tool"]
    assert all(row["marks"] == ["gateway"] and row["backend"] is None for row in report["surface"])
    # The whole list the principal may use comes with it.
    assert names(report["catalog"]) == ["alpha__add", "alpha__echo", "beta__get_time"]
    assert report["budget"]["keys"]["maxTools"] == {"value": 2, "source": "clients.match[0]"}
    assert report["budget"]["keys"]["maxNameLength"] == {"value": 64, "source": "default"}
    # Without the client name, the same gateway lists everything.
    assert tools(w).json()["mode"] == "full"


def test_truncate_mode_lists_the_first_and_shows_the_rest() -> None:
    w = world(overflow="truncate", clients=ClientsSettings(rules=(TINY,)))
    report = tools(w, b"client=tiny").json()
    assert report["mode"] == "truncate"
    assert names(report["surface"]) == ["alpha__add", "alpha__echo"]
    assert len(report["catalog"]) == 3
    lines = render(report)
    assert lines[lines.index("every tool the principal may use (those past the cut are not listed):") + 3].endswith("beta__get_time  <- beta: get.time")


def test_a_built_in_row_says_what_it_rests_on() -> None:
    report = tools(world(), b"client=cursor-vscode").json()
    cursor = next(r for r in BUILT_IN if r.name == "cursor*")
    assert report["budget"]["keys"]["maxTools"] == {"value": 40, "source": "built-in Cursor (cursor*)", "verified": cursor.verified}
    overhead = report["budget"]["keys"]["nameOverhead"]
    assert overhead["value"] == 17 and overhead["source"].endswith("plus clients.serverKeyLength 16")
    assert report["budget"]["nameLimit"] == 43


def test_the_sources_name_the_row_that_gave_each_number() -> None:
    """For every built-in row, each number the row sets is attributed to it
    (the values are budget_for's own)."""
    settings = SurfaceSettings()
    for row in BUILT_IN:
        client = row.name.rstrip("*")
        budget = budget_for(settings, DEFAULT_VIEW, client)
        sources = budget_sources(settings, DEFAULT_VIEW, client, budget)
        for key, shown in sources.items():
            assert shown["value"] == getattr(budget, key)
            expected = "built-in" if getattr(row, key) is not None else "default"
            assert shown["source"].startswith(expected), (row.name, key, shown)


def test_a_profile_selects_and_sets_the_budget() -> None:
    w = world()
    w.gateway.profiles = {"ops": Profile(name="ops", tools=("alpha__*",), pinned=("alpha__echo",), maxTools=1)}
    report = tools(w, b"profile=ops").json()
    assert report["profile"] == "ops" and report["selected"] == 2
    assert report["mode"] == "search"
    assert report["budget"]["keys"]["maxTools"] == {"value": 1, "source": "profile ops"}
    # Search mode lists the gateway's two tools; the pinned tool does not fit in 1.
    assert names(report["surface"]) == ["search_tools"]
    assert [r["marks"] for r in report["catalog"]] == [[], ["pinned"]]


def test_an_unknown_profile_is_refused_with_the_known_ones() -> None:
    w = world()
    w.gateway.profiles = {"ops": Profile(name="ops", tools=("*",))}
    answer = tools(w, b"profile=nope")
    assert answer.code == 400
    assert answer.json() == {"error": "--profile nope: no such profile (profiles: ops)"}


def policed_world() -> World:
    rules = PolicyConfig(roles={"dev": Role(allow=("alpha__*",))}, roles_configured=True, active=True)
    w = World(policy=Policy(rules, "__", World().clock, lambda peer: ALICE))
    w.service.config = attrs.evolve(config(), identity=IdentityConfig(principal=ALICE, peers=(PeerRule("uid", 0, "root", ("admin",)),)))
    w.ready()
    return w


def test_the_principal_sees_what_its_roles_allow() -> None:
    report = tools(policed_world()).json()
    assert report["principal"]["name"] == "alice" and report["principal"]["roles"] == ["dev"]
    assert names(report["surface"]) == ["alpha__add", "alpha__echo"]
    assert report["visible"] == 2 and report["selected"] == 3
    assert report["withheld"] == [
        {"shaped": "beta__get_time", "backend": "beta", "tool": "get.time", "reason": "'alice' (roles: dev) may not call 'beta__get_time'"}
    ]
    # A peer rule's principal may be named; it has no role that allows anything.
    root = tools(policed_world(), b"principal=root").json()
    assert root["principal"]["roles"] == ["admin"] and root["surface"] == []


def test_an_unknown_principal_is_refused_with_the_known_ones() -> None:
    answer = tools(policed_world(), b"principal=mallory")
    assert answer.code == 400
    assert "no such principal (known: alice, root" in answer.json()["error"]


def test_a_role_set_stands_for_a_principal_only_a_token_names() -> None:
    report = tools(policed_world(), b"principal=bob&roles=dev").json()
    assert report["principal"] == {"name": "bob", "roles": ["dev"], "source": "roles", "allAccess": False}
    assert names(report["surface"]) == ["alpha__add", "alpha__echo"]
    answer = tools(policed_world(), b"roles=dev,ops")
    assert answer.code == 400 and answer.json() == {"error": "--roles: no role 'ops' (roles: dev)"}
    with pytest.raises(ReportProblem, match="no identity is configured"):
        principal_named(None, None, ("dev",), {"dev": Role()})


def test_principals_without_identity() -> None:
    assert principal_named(None, None).all_access
    with pytest.raises(ReportProblem, match="no identity is configured"):
        principal_named(None, "alice")
    with pytest.raises(ReportProblem, match=r"name one with --principal \(known: root\)"):
        principal_named(IdentityConfig(peers=(PeerRule("uid", 0, "root"),)), None)


def test_marks_renamed_overridden_quarantined() -> None:
    w = World()
    w.alpha.shaping = MappingProxyType({"tools": Shaping(rename={"echo": "say"}, overrides={"echo": {"title": "Say"}})})
    w.ready()
    w.gateway.policy.pins.quarantined["alpha__add"] = "new"
    rows = {r["name"]: r for r in tools(w).json()["surface"]}
    assert rows["alpha__say"]["tool"] == "echo"
    assert rows["alpha__say"]["marks"] == ["renamed", "overridden"]
    assert rows["alpha__add"]["marks"] == ["quarantined"]


LONG = "alpha__echo_with_a_rather_long_name_indeed"


def aliased_world() -> World:
    """A tool whose shaped name (L{LONG}) is longer than client C{short}'s 30 characters."""
    w = World()
    w.alpha.shaping = MappingProxyType({"tools": Shaping(rename={"echo": LONG.removeprefix("alpha__")})})
    w.gateway.surface = SurfaceSettings(clients=ClientsSettings(rules=(ClientRule("short*", maxNameLength=30),)))
    w.ready()
    return w


def test_aliases_are_shown_with_their_shaped_name() -> None:
    rows = tools(aliased_world(), b"client=short").json()["surface"]
    [aliased] = [r for r in rows if r["name"] != r["shaped"]]
    assert aliased["shaped"] == LONG and len(aliased["name"]) == 30 and aliased["tool"] == "echo"
    assert {r["shaped"] for r in rows} == {"alpha__add", LONG, "beta__get_time"}


def test_search_ranks_and_explains() -> None:
    report = tools(world(), b"search=echo&limit=2&explain=1").json()
    search = report["search"]
    assert search["query"] == "echo" and search["limit"] == 2 and search["total"] == 3
    first = search["results"][0]
    assert first["rank"] == 1 and first["shaped"] == "alpha__echo" and first["score"] > 0
    assert first["explain"]["name"] > 0
    assert abs(sum(first["explain"].values()) - first["score"]) < 0.01


def test_search_never_ranks_what_the_principal_cannot_see() -> None:
    results = tools(policed_world(), b"search=time").json()["search"]["results"]
    assert all(r["backend"] == "alpha" for r in results)


@pytest.mark.parametrize(
    "query, reason",
    [
        (b"search=x&limit=0", "--limit: expected a whole number from 1 to 20"),
        (b"search=x&limit=two", "parameter 'limit': expected a whole number"),
        (b"limit=3", "parameter 'limit' goes with 'search'"),
        (b"explain=1", "parameter 'explain' goes with 'search'"),
        (b"search=x&limit=" + b"9" * 5000, "parameter 'limit': expected a whole number"),
        (b"colour=red", "unknown parameter 'colour'"),
        (b"client=a&client=b", "parameter 'client' is given 2 times"),
        (b"search=" + b"x" * 1001, "longer than 1000 characters"),
    ],
)
def test_bad_parameters_are_named(query: bytes, reason: str) -> None:
    answer = tools(world(), query)
    assert answer.code == 400
    assert reason in answer.json()["error"]


def test_the_admin_token_protects_it() -> None:
    w = world()
    w.service.config = config(token="secret-admin-token")
    assert tools(w, unix=False).code == 401
    assert tools(w, unix=False, headers={"Authorization": "Bearer secret-admin-token"}).code == 200


# -- the formatter -----------------------------------------------------------


def test_render_search_mode() -> None:
    w = world(clients=ClientsSettings(rules=(TINY,)))
    lines = render(tools(w, b"client=tiny&search=add").json())
    assert lines[0] == "principal: local (no identity is configured: every permission)"
    assert "mode: search: 2 tool(s) listed of 3 the principal may use (3 in the view)" in lines
    assert "  maxTools: 2  (clients.match[0])" in lines
    assert "     1  search_tools  (the gateway's own)  [gateway]" in lines
    at = lines.index("every tool the principal may use (found with search):")
    assert lines[at + 3] == "     3  beta__get_time  <- beta: get.time"
    assert lines[lines.index("search 'add' (limit 8, over 3 tool(s)):") + 1].startswith("     1  alpha__add  <- alpha: add  score ")


def test_render_full_mode_has_no_second_list_and_notes_the_built_in_row() -> None:
    lines = render(tools(world(), b"client=cursor-vscode").json())
    assert not any(line.startswith("every tool") for line in lines)
    assert any(line.startswith("  built-in Cursor (cursor*) rests on: count: user reports only") for line in lines)


def test_render_withheld_and_aliases() -> None:
    lines = render(tools(policed_world()).json())
    assert "in the view, not for this principal:" in lines
    assert any(f"(alias of {LONG})  <- alpha: echo  [renamed]" in line for line in render(tools(aliased_world(), b"client=short").json()))


# -- the command's --admin path ----------------------------------------------


def test_the_command_asks_the_admin_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    from .test_cli_admin import FakeGateway, _serve, run

    report = tools(world(clients=ClientsSettings(rules=(TINY,))), b"client=tiny&search=add").json()
    fake = FakeGateway()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    fake.address = f"http://127.0.0.1:{server.server_address[1]}"
    fake.routes[("GET", "/tools?client=tiny&search=add")] = (200, report)
    fake.routes[("GET", "/tools?profile=nope")] = (400, {"error": "--profile nope: no such profile (profiles: ops)"})
    for _ in _serve(server):
        code, out, err = run(capsys, "tools", "--admin", fake.address, "--client", "tiny", "--search", "add")
        assert code == 0, err
        assert out.splitlines() == render(report)
        code, out, _ = run(capsys, "tools", "--admin", fake.address, "--client", "tiny", "--search", "add", "--json")
        assert json.loads(out) == report
        code, _, err = run(capsys, "tools", "--admin", fake.address, "--profile", "nope")
        assert code == 64 and "no such profile (profiles: ops)" in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from .test_cli_admin import run

    assert run(capsys, "tools", "--admin", "127.0.0.1:9", "--explain")[0] == 64
    assert run(capsys, "tools", "--admin", "127.0.0.1:9", "--limit", "3")[0] == 64
    with pytest.raises(SystemExit) as exit:
        run(capsys, "tools", "--config", "gw.yaml", "--token-file", "t")
    assert exit.value.code == 64
