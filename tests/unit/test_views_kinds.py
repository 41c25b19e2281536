"""
Profiles select prompts, resources and resource templates too (design of
issue 14, sections 2.2, 3.2 and 4.4): the lists show only the view's; a
prompt, URI or completion reference outside it is answered exactly as an
unknown one; capabilities offer prompts and resources only when the view
selects some.
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.config.models import Profile
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import line_caller
from twisted_mcp.mcp.versions import LATEST_HANDSHAKE

from .test_surface_core import Client, CoreTestCase

PROFILES = {
    "dev": Profile(name="dev", tools=("*",), prompts=("alpha__*",), resources=("alpha://item/*", "twisted-mcp://alpha/*", "file:///*")),
    "ops": Profile(name="ops", tools=("*",)),
    "docs": Profile(name="docs", tools=("*",), resources=("twisted-mcp://beta/*",)),
}


class ViewClient(Client):
    """A client whose connection is bound to a profile (as C{--listen profile:<name>:...} binds it)."""

    def __init__(self, gateway: Any, label: str, view: str | None) -> None:
        self.out: list[bytes] = []
        self.session = ClientSession(gateway, line_caller(self.out.append, label))
        self.session.caller.view = view
        self.request(0, "initialize", {"protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": {"name": label}})
        self.initialize = self.take()[0]


class KindsTestCase(CoreTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.gateway.profiles = PROFILES

    def on(self, view: str | None) -> ViewClient:
        return ViewClient(self.gateway, f"c-{view}", view)

    def answer(self, c: Client, method: str, params: dict[str, Any]) -> dict[str, Any]:
        c.request(1, method, params)
        (answer,) = c.take()
        result: dict[str, Any] = answer
        return result


class ListTests(KindsTestCase):
    def test_lists_show_only_the_views(self) -> None:
        dev = self.on("dev")
        self.assertEqual([p["name"] for p in self.answer(dev, "prompts/list", {})["result"]["prompts"]], ["alpha__greet"])
        uris = [r["uri"] for r in self.answer(dev, "resources/list", {})["result"]["resources"]]
        # alpha://only matches no pattern; the shared URI is listed in the gateway's form
        self.assertEqual(uris, ["twisted-mcp://alpha/file:///shared.txt"])
        templates = self.answer(dev, "resources/templates/list", {})["result"]["resourceTemplates"]
        self.assertEqual([t["uriTemplate"] for t in templates], ["alpha://item/{id}"])

    def test_a_profile_without_prompts_or_resources_selects_none(self) -> None:
        ops = self.on("ops")
        self.assertEqual(self.answer(ops, "prompts/list", {})["result"]["prompts"], [])
        self.assertEqual(self.answer(ops, "resources/list", {})["result"]["resources"], [])
        self.assertEqual(self.answer(ops, "resources/templates/list", {})["result"]["resourceTemplates"], [])

    def test_the_default_view_is_everything(self) -> None:
        plain = self.on(None)
        self.assertEqual(len(self.answer(plain, "prompts/list", {})["result"]["prompts"]), 2)
        self.assertEqual(len(self.answer(plain, "resources/list", {})["result"]["resources"]), 3)


class OutsideTests(KindsTestCase):
    def test_a_prompt_outside_the_view_is_unknown(self) -> None:
        dev = self.on("dev")
        outside = self.answer(dev, "prompts/get", {"name": "beta__greet"})
        unknown = self.answer(dev, "prompts/get", {"name": "gamma__greet"})
        self.assertEqual(outside["error"], {**unknown["error"], "message": "Unknown prompt: 'beta__greet'", "data": {"prompt": "beta__greet"}})
        self.assertEqual(unknown["error"]["message"], "Unknown prompt: 'gamma__greet'")
        dev.request(2, "prompts/get", {"name": "alpha__greet"})
        self.assertEqual(self.alpha.methods(), ["prompts/get"])
        self.assertEqual(self.beta.sent, [])

    def test_a_uri_outside_the_view_is_not_found_as_an_unknown_one(self) -> None:
        dev = self.on("dev")
        outside = self.answer(dev, "resources/read", {"uri": "alpha://only"})
        unknown = self.answer(dev, "resources/read", {"uri": "alpha://nothing"})
        self.assertEqual(outside["error"]["code"], unknown["error"]["code"])
        self.assertEqual(outside["error"]["message"], unknown["error"]["message"].replace("alpha://nothing", "alpha://only"))
        self.assertEqual(outside["error"]["data"], {"uri": "alpha://only"})
        subscribed = self.answer(dev, "resources/subscribe", {"uri": "alpha://only"})
        self.assertEqual(subscribed["error"]["message"], outside["error"]["message"])
        self.assertEqual(self.alpha.sent, [])

    def test_inside_the_view_routed(self) -> None:
        dev = self.on("dev")
        dev.request(1, "resources/read", {"uri": "alpha://item/7"})  # by the template the view selects
        dev.request(2, "resources/read", {"uri": "twisted-mcp://alpha/file:///shared.txt"})  # by its pattern
        self.assertEqual([c.params["uri"] for c in self.alpha.sent], ["alpha://item/7", "file:///shared.txt"])
        docs = self.on("docs")
        docs.request(2, "resources/read", {"uri": "twisted-mcp://beta/file:///shared.txt"})
        self.assertEqual([c.params["uri"] for c in self.beta.sent], ["file:///shared.txt"])
        refused = self.answer(docs, "resources/read", {"uri": "alpha://only"})
        self.assertIn("no server lists the resource 'alpha://only'", refused["error"]["message"])

    def test_ambiguous_uri_names_only_candidates_in_the_view(self) -> None:
        """The shared URI names its candidates in the gateway's form: only those the view selects."""
        docs = self.on("docs")
        answer = self.answer(docs, "resources/read", {"uri": "file:///shared.txt"})
        self.assertIn("twisted-mcp://beta/file:///shared.txt", answer["error"]["message"])
        self.assertNotIn("twisted-mcp://alpha/", answer["error"]["message"])

    def test_completion_outside_the_view_answers_nothing(self) -> None:
        nothing = {"completion": {"values": [], "hasMore": False}}
        ops = self.on("ops")
        argument = {"name": "who", "value": "w"}
        self.assertEqual(self.answer(ops, "completion/complete", {"ref": {"type": "ref/prompt", "name": "alpha__greet"}, "argument": argument})["result"], nothing)
        template = {"type": "ref/resource", "uri": "alpha://item/{id}"}
        self.assertEqual(self.answer(ops, "completion/complete", {"ref": template, "argument": argument})["result"], nothing)
        self.assertEqual(self.alpha.sent, [])
        dev = self.on("dev")
        dev.request(1, "completion/complete", {"ref": template, "argument": argument})
        self.assertEqual(self.alpha.methods(), ["completion/complete"])


class CapabilityTests(KindsTestCase):
    def test_offered_only_when_the_view_selects_some(self) -> None:
        ops = self.on("ops").initialize["result"]["capabilities"]
        self.assertEqual(sorted(ops), ["logging", "tools"])
        dev = self.on("dev").initialize["result"]["capabilities"]
        self.assertEqual(sorted(dev), ["completions", "logging", "prompts", "resources", "tools"])
        plain = self.on(None).initialize["result"]["capabilities"]
        self.assertEqual(sorted(plain), ["completions", "logging", "prompts", "resources", "tools"])

    def test_server_discover_too(self) -> None:
        from .test_eras import envelope

        ops = self.on("ops")
        answer = self.answer(ops, "server/discover", {"_meta": envelope()})
        self.assertNotIn("prompts", answer["result"]["capabilities"])
        self.assertNotIn("resources", answer["result"]["capabilities"])
