"""
The tool surface fitted to each client, through a session over fake
backends (L{twisted_mcp.dispatch.surface}, L{twisted_mcp.dispatch.handlers.tools},
L{twisted_mcp.dispatch.handlers.search}): budgets from clientInfo, search
mode, truncation, aliases, views, pages, caching hints, list_changed and
the policy's filter.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import attrs
from twisted.internet.task import Clock

from twisted_mcp.config.loader import build
from twisted_mcp.config.models import Profile
from twisted_mcp.config.surface import SurfaceSettings
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.handlers.search import IndexHolder
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import line_caller
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.versions import LATEST_HANDSHAKE
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import parse_policy

from .fakes import FakeBackend
from .test_eras import envelope
from .test_gateway import SessionTestCase


@attrs.frozen
class _Hit:
    name: str
    score: float


class StandInIndex:
    """The contract of C{dispatch.search.SearchIndex}, ranked by how many
    query words a tool's name contains (the real ranking is tested with it)."""

    def __init__(self) -> None:
        self.tools: dict[str, dict[str, Any]] = {}
        self.syncs = 0

    def sync(self, tools: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        self.syncs += 1
        self.tools = {name: definition for _, name, definition in tools}

    def search(self, query: str, visible: Sequence[str], limit: int) -> list[_Hit]:
        words = re.findall(r"[a-z0-9]+", query.lower())
        scored = [(sum(w in re.split(r"[^a-z0-9]+", name) for w in words), name) for name in visible]
        ranked = sorted((s, n) for s, n in scored if s)
        ranked.sort(key=lambda sn: (-sn[0], sn[1]))
        return [_Hit(n, float(s)) for s, n in ranked[:limit]]


def _tools(count: int) -> list[dict[str, Any]]:
    verbs = ("create", "delete", "list", "get", "update")
    return [
        {"name": f"{verbs[i % 5]}_item_{i}", "description": f"{verbs[i % 5]} item {i}", "inputSchema": {"type": "object"}}
        for i in range(count)
    ]


def _surface(**sections: Any) -> SurfaceSettings:
    surface: SurfaceSettings = build({"mcpServers": {"a": {"command": "x"}}, **sections}, "inline", {}).surface
    return surface


class FitTestCase(SessionTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.gen = FakeBackend("gen", _tools(60))
        self.other = FakeBackend("other", ["ping"])
        self.gateway = Gateway([self.gen, self.other], "__", self.clock, 5.0)
        self.gen._first_discovery_done()
        self.other._first_discovery_done()
        self.gateway.start()
        self.index = StandInIndex()
        self.gateway.search_index = IndexHolder(self.index)  # type: ignore[arg-type]
        self.out: list[bytes] = []
        self.session = ClientSession(self.gateway, line_caller(self.out.append, "test"))

    def initialize_as(self, client: str, session: ClientSession | None = None) -> dict[str, Any]:
        self.request(0, "initialize", {"protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": {"name": client, "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        (answer,) = self.take()
        result: dict[str, Any] = answer["result"]
        return result

    def list_names(self, params: dict[str, Any] | None = None) -> list[str]:
        self.request(1, "tools/list", params or {})
        (answer,) = self.take()
        return [t["name"] for t in answer["result"]["tools"]]

    def call(self, id: Any, name: str, arguments: Any = None) -> list[Any]:
        params: dict[str, Any] = {"name": name}
        if arguments is not None:
            params["arguments"] = arguments
        self.request(id, "tools/call", params)
        return self.take()


class SearchModeTests(FitTestCase):
    def test_cursor_gets_search_mode(self) -> None:
        """61 tools over Cursor's 40: the two search tools only, and the
        instructions say how to search."""
        result = self.initialize_as("cursor-vscode")
        self.assertIn("This server has 61 tools; call search_tools", result["instructions"])
        self.assertEqual(self.list_names(), ["search_tools", "call_tool"])

    def test_unknown_client_gets_everything(self) -> None:
        """No budget: today's list, today's names, no search sentence."""
        result = self.initialize_as("some-agent")
        self.assertNotIn("instructions", result)
        self.assertEqual(len(self.list_names()), 61)

    def test_search_then_call_tool(self) -> None:
        self.initialize_as("cursor-vscode")
        (answer,) = self.call(2, "search_tools", {"query": "delete item 6", "limit": 3})
        found = answer["result"]["structuredContent"]
        self.assertEqual(found["total"], 61)
        self.assertEqual(found["query"], "delete item 6")
        self.assertEqual(len(found["tools"]), 3)
        self.assertEqual(found["tools"][0]["name"], "gen__delete_item_6")
        self.assertFalse(answer["result"]["isError"])
        self.assertIn('"gen__delete_item_6"', answer["result"]["content"][0]["text"])
        self.assertEqual(self.call(3, "call_tool", {"name": "gen__delete_item_6", "arguments": {"x": 1}}), [])
        (call,) = self.gen.calls
        self.assertEqual((call.method, call.params["name"], call.params["arguments"]), ("tools/call", "delete_item_6", {"x": 1}))
        call.deferred.callback({"content": [{"type": "text", "text": "done"}]})
        (answer,) = self.take()
        self.assertEqual(answer["id"], 3)
        self.assertEqual(answer["result"]["content"][0]["text"], "done")

    def test_found_tool_called_directly(self) -> None:
        self.initialize_as("cursor-vscode")
        self.assertEqual(self.call(2, "gen__get_item_3", {}), [])
        self.assertEqual(self.gen.calls[0].params["name"], "get_item_3")

    def test_search_errors_are_tool_errors(self) -> None:
        self.initialize_as("cursor-vscode")
        for arguments, words in (
            ({"query": "x" * 1001}, "longer than 1000"),
            ({"query": "x", "limit": 21}, "limit must be a whole number from 1 to 20"),
            ({"limit": 2}, "query must be a string"),
        ):
            (answer,) = self.call(2, "search_tools", arguments)
            self.assertTrue(answer["result"]["isError"])
            self.assertIn(words, answer["result"]["content"][0]["text"])

    def test_an_empty_query_is_a_tool_error(self) -> None:
        """An empty or blank query: told so, not the first tools of the list."""
        self.initialize_as("cursor-vscode")
        for query in ("", "   "):
            (answer,) = self.call(2, "search_tools", {"query": query})
            self.assertTrue(answer["result"]["isError"])
            self.assertIn("query is empty", answer["result"]["content"][0]["text"])

    def test_call_tool_unknown_name(self) -> None:
        self.initialize_as("cursor-vscode")
        (answer,) = self.call(2, "call_tool", {"name": "gen__nothing"})
        self.assertError(answer, 2, -32602, "Unknown tool: 'gen__nothing'")

    def test_truncate(self) -> None:
        self.gateway.surface = _surface(surface={"overflow": "truncate"})
        self.initialize_as("cursor-vscode")
        names = self.list_names()
        self.assertEqual(len(names), 40)
        self.assertEqual(names[0], "gen__create_item_0")

    def test_search_tool_names_configurable(self) -> None:
        self.gateway.surface = _surface(search={"names": {"search": "find", "call": "run"}})
        self.initialize_as("cursor-vscode")
        self.assertEqual(self.list_names(), ["find", "run"])


class PolicyTests(FitTestCase):
    def setUp(self) -> None:
        super().setUp()
        rules = parse_policy({"killSwitch": {"tools": ["gen__delete_*"]}}, None, [], {"gen", "other"})
        self.gateway.policy = Policy(rules, "__", self.clock)

    def test_killed_tool_never_found_and_refused(self) -> None:
        self.initialize_as("cursor-vscode")
        (answer,) = self.call(2, "search_tools", {"query": "delete item 6"})
        found = answer["result"]["structuredContent"]
        self.assertNotIn("gen__delete_item_6", [t["name"] for t in found["tools"]])
        self.assertEqual(found["total"], 49)
        (answer,) = self.call(3, "call_tool", {"name": "gen__delete_item_6"})
        self.assertEqual(answer["error"]["code"], errors.TOOL_DISABLED)
        self.assertEqual(self.gen.calls, [])

    def test_lists_and_searches_audited_as_what_they_carried(self) -> None:
        """A list: what the answer carried of what the principal may see
        in the view (49 of 61, 12 killed); a search: a tools/call of the
        search tool saying what it found."""
        records: list[dict[str, Any]] = []

        class Trail:
            record = staticmethod(records.append)

        self.gateway.policy.audit = Trail()  # type: ignore[assignment]
        self.initialize_as("cursor-vscode")
        self.list_names()
        self.call(2, "search_tools", {"query": "create item", "limit": 3})
        listed = [r for r in records if r["method"] == "tools/list"]
        self.assertEqual([r["reason"] for r in listed], ["2 of 49 tool(s) visible"])
        searched = [r for r in records if r["method"] == "tools/call"]
        self.assertEqual([(r["tool"], r["subject"], r["reason"]) for r in searched], [("search_tools", "search_tools", "search: 3 of 49 tool(s) found")])

    def test_a_search_with_bad_arguments_is_audited(self) -> None:
        """A search the gateway answers with a tool error (an empty query, a
        limit out of range) still leaves its record: it used the principal's
        rate limit, and the trail must show the attempt."""
        records: list[dict[str, Any]] = []

        class Trail:
            record = staticmethod(records.append)

        self.gateway.policy.audit = Trail()  # type: ignore[assignment]
        self.initialize_as("cursor-vscode")
        (empty,) = self.call(2, "search_tools", {"query": "  "})
        (wide,) = self.call(3, "search_tools", {"query": "item", "limit": 0})
        self.assertTrue(empty["result"]["isError"] and wide["result"]["isError"])
        searched = [(r["tool"], r["outcome"], r["reason"]) for r in records if r["method"] == "tools/call"]
        self.assertEqual(
            searched,
            [
                ("search_tools", "tool_error", "search refused: query is empty: give a few words describing the task"),
                ("search_tools", "tool_error", "search refused: limit must be a whole number from 1 to 20, got 0"),
            ],
        )


class AliasTests(FitTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.gen.tools = [{"name": f"a_rather_long_tool_name_{t['name']}"} for t in self.gen.tools]
        self.gen._changed()
        self.gateway.surface = _surface(clients={"match": [{"name": "narrow", "maxNameLength": 30}]})

    def test_aliases_listed_and_called(self) -> None:
        self.initialize_as("narrow")
        self.request(1, "tools/list")
        (answer,) = self.take()
        tools = answer["result"]["tools"]
        self.assertEqual(len(tools), 61)
        aliased = [t for t in tools if "io.github.twisted-mcp/name" in t.get("_meta", {})]
        self.assertTrue(aliased)
        for t in tools:
            self.assertLessEqual(len(t["name"]), 30)
        shaped = "gen__a_rather_long_tool_name_update_item_54"
        one = next(t for t in aliased if t["_meta"]["io.github.twisted-mcp/name"] == shaped)
        self.assertTrue(one["name"].startswith("gen__a_rather_long_to_"))
        self.assertEqual(self.call(2, one["name"], {}), [])
        self.assertEqual(self.call(3, shaped, {}), [])  # the shaped name still works
        self.assertEqual([c.params["name"] for c in self.gen.calls], [shaped[5:]] * 2)


class ViewTests(FitTestCase):
    def test_profile_view(self) -> None:
        """A profile lists what it selects; a tool outside it is unknown."""
        self.gateway.profiles = {"dev": Profile(name="dev", tools=("other__*", "gen__get_item_3"), instructions="Dev tools.")}
        self.session.caller.view = "dev"
        result = self.initialize_as("some-agent")
        self.assertTrue(result["instructions"].startswith("Dev tools."))
        self.assertEqual(self.list_names(), ["other__ping", "gen__get_item_3"])
        (answer,) = self.call(2, "gen__get_item_4", {})
        self.assertError(answer, 2, -32602, "Unknown tool: 'gen__get_item_4'")
        self.assertEqual(self.gen.calls, [])


class PageTests(FitTestCase):
    def test_pages_and_stale_cursor(self) -> None:
        self.gateway.surface = _surface(surface={"pageSize": 25})
        self.initialize_as("some-agent")
        self.request(1, "tools/list")
        (first,) = self.take()
        cursor = first["result"]["nextCursor"]
        self.assertEqual(len(first["result"]["tools"]), 25)
        self.request(2, "tools/list", {"cursor": cursor})
        (second,) = self.take()
        everything = sorted(["other__ping"] + [f"gen__{t['name']}" for t in _tools(60)])
        self.assertEqual([t["name"] for t in second["result"]["tools"]], everything[25:50])
        self.gen.tools = self.gen.tools[:-1]
        self.gen._changed()
        self.take()
        self.request(3, "tools/list", {"cursor": cursor})
        (stale,) = self.take()
        self.assertError(stale, 3, -32602, "unknown cursor for tools", "list again")


class ModernTests(FitTestCase):
    def modern(self, id: Any, method: str, client: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        out = dict(params or {})
        out["_meta"] = envelope(**{"io.modelcontextprotocol/clientInfo": {"name": client, "version": "1"}})
        self.request(id, method, out)
        (answer,) = self.take()
        return answer

    def test_budget_per_request_and_ttl(self) -> None:
        """The envelope's clientInfo decides; a list that depended on it has ttlMs 0."""
        self.gateway.surface = _surface(surface={"ttlMs": 5000})
        cursor = self.modern(1, "tools/list", "cursor-vscode")["result"]
        self.assertEqual([t["name"] for t in cursor["tools"]], ["search_tools", "call_tool"])
        self.assertEqual(cursor["ttlMs"], 0)
        plain = self.modern(2, "tools/list", "some-agent")["result"]
        self.assertEqual(len(plain["tools"]), 61)
        self.assertEqual(plain["ttlMs"], 5000)
        found = self.modern(3, "tools/call", "cursor-vscode", {"name": "search_tools", "arguments": {"query": "ping"}})
        self.assertEqual(found["result"]["structuredContent"]["tools"][0]["name"], "other__ping")


class ListChangedTests(FitTestCase):
    def test_search_mode_not_told_of_backend_churn(self) -> None:
        """In search mode the list (the two tools) does not change with a backend's tools."""
        self.initialize_as("cursor-vscode")
        self.list_names()
        self.gen.tools = self.gen.tools[:-1]
        self.gen._changed()
        self.assertEqual(self.take(), [])

    def test_full_mode_told(self) -> None:
        self.initialize_as("some-agent")
        self.list_names()
        self.gen.tools = self.gen.tools[:-1]
        self.gen._changed()
        self.assertEqual([m["method"] for m in self.take()], ["notifications/tools/list_changed"])


class CacheTests(FitTestCase):
    def test_kill_switch_invalidates_the_fitted_list(self) -> None:
        """A fitted list is cached; a kill switch thrown changes it at once."""
        from twisted_mcp.policy.rules import PolicyConfig

        self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        self.gateway.surface = _surface(clients={"match": [{"name": "small", "maxTools": 100, "maxNameLength": 40}]})
        self.initialize_as("small")
        self.assertIn("gen__get_item_3", self.list_names())
        cached = len(self.gateway.fits)
        self.list_names()
        self.assertEqual(len(self.gateway.fits), cached)
        self.gateway.policy.set_kill("tool", "gen__get_item_3", True)
        names = self.list_names()
        self.assertNotIn("gen__get_item_3", names)
        self.assertEqual(len(names), 60)

    def test_modern_discover_instructions(self) -> None:
        """server/discover's instructions follow the budget of its own
        envelope's clientInfo, not the connection's."""

        def discover(id: int, client: str) -> dict[str, Any]:
            self.request(id, "server/discover", {"_meta": envelope(**{"io.modelcontextprotocol/clientInfo": {"name": client, "version": "1"}})})
            (answer,) = self.take()
            self.assertIn("result", answer, answer)
            result: dict[str, Any] = answer["result"]
            return result

        self.assertIn("call search_tools", discover(1, "cursor-vscode")["instructions"])
        self.assertNotIn("instructions", discover(2, "some-agent"))
        self.session.caller.info = {"name": "cursor-vscode"}
        self.assertNotIn("instructions", discover(3, "some-agent"))
        self.session.caller.info = {"name": "some-agent"}
        self.assertIn("call search_tools", discover(4, "cursor-vscode")["instructions"])


class SurfaceChangeTests(FitTestCase):
    def test_told_only_when_the_fitted_list_changed(self) -> None:
        """A reload that changes the surface: a client whose list it changes
        is told; one whose list stays the same is not."""
        self.initialize_as("cursor-vscode")
        self.list_names()
        self.gateway.surface = _surface(surface={"ttlMs": 10})  # search mode still
        self.gateway.surface_changed()
        self.assertEqual(self.take(), [])
        self.gateway.surface = _surface(clients={"match": [{"name": "cursor*", "maxTools": 100}]})
        self.gateway.surface_changed()
        self.assertEqual([m["method"] for m in self.take()], ["notifications/tools/list_changed"])
        self.assertEqual(len(self.list_names()), 61)


    def test_a_default_view_client_not_told_of_a_surface_change(self) -> None:
        """A client with no budget and no profile keeps the catalog's list:
        changing surface.ttlMs (or any surface key) does not tell it."""
        self.initialize_as("some-agent")
        self.list_names()
        self.gateway.surface = _surface(surface={"ttlMs": 10})
        self.gateway.surface_changed()
        self.assertEqual(self.take(), [])
        self.gateway.surface = _surface(clients={"match": [{"name": "some-agent", "maxTools": 10}]})
        self.gateway.surface_changed()
        self.assertEqual([m["method"] for m in self.take()], ["notifications/tools/list_changed"])


class ListenChangeTests(FitTestCase):
    def test_a_default_view_listen_not_told_of_a_surface_change(self) -> None:
        self.request(5, "subscriptions/listen", {"notifications": {"toolsListChanged": True}, "_meta": envelope()})
        (ack,) = self.take()
        self.assertEqual(ack["method"], "notifications/subscriptions/acknowledged")
        self.gateway.surface = _surface(surface={"ttlMs": 10})
        self.gateway.surface_changed()
        self.assertEqual(self.take(), [])
        self.gateway.surface = _surface(clients={"match": [{"name": "*", "maxTools": 10}]})
        self.gateway.surface_changed()
        self.assertEqual([m["method"] for m in self.take()], ["notifications/tools/list_changed"])

    def test_a_listen_is_told_only_of_its_fitted_list(self) -> None:
        """A 2026-07-28 listen whose request's client is in search mode is
        not told of a backend's churn; it is told when its list changes."""
        self.gateway.surface = _surface(clients={"match": [{"name": "modern-client", "maxTools": 10}]})
        self.request(5, "subscriptions/listen", {"notifications": {"toolsListChanged": True}, "_meta": envelope()})
        (ack,) = self.take()
        self.assertEqual(ack["method"], "notifications/subscriptions/acknowledged")
        self.gen.tools = self.gen.tools[:-1]
        self.gen._changed()
        self.assertEqual(self.take(), [])
        self.gateway.surface = _surface(clients={"match": [{"name": "modern-client", "maxTools": 100}]})
        self.gateway.surface_changed()
        self.assertEqual([m["method"] for m in self.take()], ["notifications/tools/list_changed"])
        self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}})


class RefusedSearchTests(FitTestCase):
    def test_a_disabled_principal_is_refused(self) -> None:
        """search_tools passes the kill switch on the principal like any call
        (in search mode: with nothing visible a list is in search mode only when
        the budget says always)."""
        from twisted_mcp.policy.rules import PolicyConfig

        self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        self.gateway.surface = _surface(clients={"match": [{"name": "cursor*", "search": "always"}]})
        self.initialize_as("cursor-vscode")
        self.gateway.policy.set_kill("principal", "local", True)
        (answer,) = self.call(2, "search_tools", {"query": "item"})
        self.assertEqual(answer["error"]["code"], errors.PRINCIPAL_DISABLED)

    def test_a_tool_named_like_a_search_tool_is_hidden_in_search_mode_and_logged_once(self) -> None:
        from twisted.logger import capturedLogs

        self.gateway.surface = _surface(search={"names": {"search": "other__ping"}})
        with capturedLogs() as logged:
            self.initialize_as("cursor-vscode")
            self.list_names()
            self.list_names()
        warnings = [e for e in logged if "tools hidden" in e["log_format"]]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["names"], "other__ping")
        (answer,) = self.call(2, "other__ping", {"query": "delete item 6"})
        self.assertEqual(answer["result"]["structuredContent"]["total"], 60)


class AuditTests(FitTestCase):
    def test_every_form_of_a_call_is_audited_under_the_real_tool(self) -> None:
        """Through call_tool, by alias and directly: three records naming the
        shaped tool, its backend and its own name; a search: one listing."""
        from twisted_mcp.policy.rules import PolicyConfig

        self.gen.tools = [{"name": f"a_rather_long_tool_name_{t['name']}"} for t in self.gen.tools]
        self.gen._changed()
        policy = self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        records: list[dict[str, Any]] = []
        policy._audit = records.append  # type: ignore[method-assign]
        listed: list[tuple[Any, ...]] = []
        policy.audit_listing = lambda *args, search=None: listed.append((*args, search))  # type: ignore[method-assign]
        self.gateway.surface = _surface(clients={"match": [{"name": "narrow", "maxNameLength": 30, "maxTools": 10}]})
        self.initialize_as("narrow")
        shaped = "gen__a_rather_long_tool_name_get_item_3"
        (found,) = self.call(1, "search_tools", {"query": "a_rather_long_tool_name_get_item_3", "limit": 1})
        alias = found["result"]["structuredContent"]["tools"][0]["name"]
        self.assertNotEqual(alias, shaped)
        for rid, (name, arguments) in enumerate(
            [("call_tool", {"name": alias, "arguments": {}}), (alias, {}), (shaped, {})], start=2
        ):
            self.call(rid, name, arguments)
            self.gen.calls[-1].deferred.callback({"content": []})
            self.take()
        calls = [r for r in records if r.get("method") == "tools/call"]
        self.assertEqual([(r["tool"], r["backend"]) for r in calls], [(shaped, "gen")] * 3)
        self.assertEqual([c.params["name"] for c in self.gen.calls], ["a_rather_long_tool_name_get_item_3"] * 3)
        self.assertEqual([(kind, shown, total, search) for _, kind, _, shown, total, _, search in listed], [("tool", 1, 61, "search_tools")])


class RebuildTests(FitTestCase):
    """The per-view caches follow each catalog rebuild, not its generation
    (a digest of the listings' text, equal across these rebuilds)."""

    def test_priority_only_change_reorders(self) -> None:
        """A reload that changes only a backend's priority (applied in place,
        then the catalog rebuilt) reorders the list at once."""
        self.initialize_as("some-agent")
        self.assertEqual(self.list_names()[-1], "other__ping")
        generation = self.gateway.catalog.generation
        self.other.priority = 5
        self.other._changed()
        self.assertEqual(self.gateway.catalog.generation, generation)
        self.assertEqual(self.list_names()[0], "other__ping")

    def test_restart_with_the_same_listing_calls_the_new_backend(self) -> None:
        """A backend replaced by one that lists the same tools: a call in a
        profile's view goes to the new backend object."""
        self.gateway.profiles = {"dev": Profile(name="dev", tools=("other__*",))}
        self.session.caller.view = "dev"
        self.initialize_as("some-agent")
        self.assertEqual(self.call(1, "other__ping", {}), [])
        generation = self.gateway.catalog.generation
        fresh = FakeBackend("other", ["ping"])
        fresh._first_discovery_done()
        self.gateway.add_backend(fresh, replacing=self.other)
        self.assertEqual(self.gateway.catalog.generation, generation)
        self.take()
        self.assertEqual(self.list_names(), ["other__ping"])
        self.assertEqual(self.call(2, "other__ping", {}), [])
        self.assertEqual([c.params["name"] for c in fresh.calls], ["ping"])
        self.assertEqual(len(self.other.calls), 1)


class SearchRateLimitTests(FitTestCase):
    def test_search_tools_takes_the_principals_tokens(self) -> None:
        """search_tools passes the principal's rate limit: a search takes a
        token, and one over the limit is refused with the error a call over
        it gets (searches and calls share the bucket)."""
        rules = parse_policy({"limits": {"principal": {"rate": 1, "burst": 2}}}, None, [], {"gen", "other"})
        self.gateway.policy = Policy(rules, "__", self.clock)
        self.initialize_as("cursor-vscode")
        (first,) = self.call(1, "search_tools", {"query": "item"})
        self.assertFalse(first["result"]["isError"])
        self.assertEqual(self.call(2, "call_tool", {"name": "other__ping"}), [])
        (search,) = self.call(3, "search_tools", {"query": "item"})
        (call,) = self.call(4, "call_tool", {"name": "other__ping"})
        self.assertEqual(search["error"]["code"], errors.RATE_LIMITED)
        self.assertEqual((search["error"]["code"], search["error"]["data"]["limit"]), (call["error"]["code"], call["error"]["data"]["limit"]))
        self.assertEqual(search["error"]["message"], call["error"]["message"])
        self.clock.advance(1)
        (again,) = self.call(5, "search_tools", {"query": "item"})
        self.assertFalse(again["result"]["isError"])


class NameLimitBelowAliasesTests(FitTestCase):
    """A client whose effective name limit is under MIN_ALIAS_LIMIT (here
    Cursor's 60 - 1 with a 40-character server key: 19) loses no tool."""

    def test_every_tool_listed_and_the_limit_logged_once(self) -> None:
        from twisted.logger import capturedLogs

        from twisted_mcp.config.surface import ClientsSettings
        from twisted_mcp.mcp.clients import ClientRule

        self.gen.tools = [{"name": "twenty_one_chars"}, {"name": "a_tool_whose_name_is_well_over_the_limit"}]
        self.gen._changed()
        self.gateway.surface = SurfaceSettings(clients=ClientsSettings(serverKeyLength=40, rules=(ClientRule("cursor*", maxTools=1000),)))
        with capturedLogs() as logged:
            self.initialize_as("cursor-vscode")
            names = self.list_names()
            self.list_names()
        self.assertEqual(len(names), 3)
        self.assertIn("gen__twenty_one_chars", names)  # 21 characters: over 19, served as it is
        self.assertIn("other__ping", names)
        long = [n for n in names if n.startswith("gen__a_tool")]
        self.assertEqual(len(long), 1)
        self.assertEqual(len(long[0]), 24)
        self.assertEqual(self.call(2, long[0], {}), [])
        below = [e for e in logged if "below" in e["log_format"]]
        self.assertEqual(len(below), 1)
        self.assertEqual(below[0]["limit"], 19)
        self.assertFalse([e for e in logged if "collide" in e["log_format"]])


class MalformedCallToolTests(FitTestCase):
    def test_malformed_call_tool_is_refused_and_audited(self) -> None:
        """call_tool without a string arguments.name, or with arguments not
        an object: refused as a malformed direct call is, with a record."""
        from twisted_mcp.policy.rules import PolicyConfig

        policy = self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        records: list[dict[str, Any]] = []
        policy._audit = records.append  # type: ignore[method-assign]
        self.initialize_as("cursor-vscode")
        for rid, arguments in enumerate([{"name": 5}, {}, 7], start=2):
            self.request(rid, "tools/call", {"name": "call_tool", "arguments": arguments})
            (answer,) = self.take()
            self.assertEqual(answer["error"]["code"], -32602)
            self.assertIn("call_tool needs arguments.name", answer["error"]["message"])
        refused = [r for r in records if r.get("method") == "tools/call"]
        self.assertEqual(len(refused), 3, records)
        self.assertEqual({r.get("decision") for r in refused}, {"deny"}, refused)


class DigestErrorsTests(FitTestCase):
    def test_only_a_refusal_gives_no_digest(self) -> None:
        """A bug while fitting is not taken for a refused caller."""
        from twisted_mcp.dispatch import surface

        self.initialize_as("cursor-vscode")

        def broken(*args: Any) -> Any:
            raise RuntimeError("a bug")

        self.patch(surface, "fitted_for", broken)
        self.assertRaises(RuntimeError, surface.tools_digest, self.session, None)


class FittedCacheKeyTests(FitTestCase):
    def test_hits_across_principals_and_refreshed_tokens_and_misses_on_a_kill(self) -> None:
        """Two principals alternating, one's token refreshed each time: every
        list after the first of each is a hit; a kill switch thrown is a miss
        and the killed tool is gone."""
        from twisted_mcp.dispatch.surface import fitted_for
        from twisted_mcp.policy.principal import Principal

        roles = {"dev": {"allow": ["gen__*"]}, "ops": {"allow": ["*"]}}
        rules = parse_policy({"roles": roles, "killSwitch": {"tools": ["gen__delete_*"]}}, None, [], {"gen", "other"})
        policy = self.gateway.policy = Policy(rules, "__", self.clock)
        self.initialize_as("some-agent")
        self.gateway.surface = _surface(clients={"match": [{"name": "some-agent", "maxTools": 100}]})
        alice = [Principal("alice", ("dev",), "jwt", expires_at=1000.0 + i) for i in range(4)]
        bob = Principal("bob", ("ops",), "config")
        first = {"alice": fitted_for(self.session, None, alice[0]), "bob": fitted_for(self.session, None, bob)}
        for token in alice[1:]:
            self.assertIs(fitted_for(self.session, None, token), first["alice"])
            self.assertIs(fitted_for(self.session, None, bob), first["bob"])
        self.assertIn("gen__create_item_0", first["alice"].visible)
        self.assertEqual(len(first["alice"].visible), 48)  # 60, less 12 killed; not other__ping
        self.assertEqual(len(first["bob"].visible), 49)
        policy.set_kill("tool", "gen__create_item_0", True)
        after = fitted_for(self.session, None, alice[-1])
        self.assertIsNot(after, first["alice"])
        self.assertNotIn("gen__create_item_0", after.visible)


class LogOnceBoundsTests(FitTestCase):
    def test_the_log_once_sets_are_bounded(self) -> None:
        """Each (view, budget) cut is remembered to log it once, but not
        without end: budgets come from self-reported clientInfo."""
        from twisted.logger import capturedLogs

        from twisted_mcp.dispatch import surface, views
        from twisted_mcp.dispatch.views import DEFAULT_VIEW
        from twisted_mcp.mcp.clients import Budget

        cache = surface.FittedCache()
        selection = self.gateway.views.selection(DEFAULT_VIEW, self.gateway.catalog)
        shown = [{"name": f"t{i}"} for i in range(3)]
        with capturedLogs():
            for i in range(surface.MOST_LOGGED + 50):
                budget = Budget(maxTools=2, search="never", source=f"row {i}")
                cache.put(i, surface.fit(selection, shown, budget, SurfaceSettings(), DEFAULT_VIEW))
        self.assertLessEqual(len(cache._cut), surface.MOST_LOGGED + 1)
        chosen = views.Views()
        for i in range(views._MOST_WARNED + 10):
            chosen.selection(chosen.of_profile(Profile(name=f"p{i}", tools=("gen__*",))), self.gateway.catalog)
        self.assertLessEqual(len(chosen._warned), views._MOST_WARNED)
