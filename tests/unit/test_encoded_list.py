"""
A C{tools/list} answer written from its L{Fitted}'s encoded list
(L{twisted_mcp.wire.jsonrpc.EncodedList}): the same JSON as encoding the
list each time, for both eras, with and without the policy and aliases;
encoded once for every later answer; and still right when orjson refuses
the message (a request id beyond 64 bits) or the list (a lone surrogate).
"""

from __future__ import annotations

import json
from typing import Any

from twisted_mcp.dispatch.surface import Fitted
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import parse_policy
from twisted_mcp.wire import jsonrpc
from twisted_mcp.wire.jsonrpc import EncodedList, encode, encode_or_explain

from .test_eras import envelope
from .test_surface_fit import FitTestCase, _surface


def _plain(self: Fitted) -> list[dict[str, Any]]:
    return self.tools


class EncodedAnswerTests(FitTestCase):
    def lines(self, id: Any = 1, modern: bool = False) -> bytes:
        params: dict[str, Any] = {}
        if modern:
            params["_meta"] = envelope(**{"io.modelcontextprotocol/clientInfo": {"name": "narrow", "version": "1"}})
        self.request(id, "tools/list", params)
        (line,) = self.out
        del self.out[:]
        return line

    def both_ways(self, modern: bool) -> tuple[bytes, bytes]:
        """The answer as written from the encoded list, then as written
        from the plain list (the path before the encoded list)."""
        if not modern:
            self.initialize_as("narrow")
        spliced = self.lines(modern=modern)
        self.patch(Fitted, "listed", property(_plain))
        plain = self.lines(modern=modern)
        return spliced, plain

    def assertSameAnswer(self, modern: bool) -> None:
        spliced, plain = self.both_ways(modern)
        self.assertEqual(json.loads(spliced), json.loads(plain))
        (fitted,) = [f for f in self.gateway.fits._entries.values() if f._listed is not None]
        encoded = fitted._listed
        assert encoded is not None
        # Written from the kept bytes, which are the list's own JSON.
        data = encoded.json()
        assert data is not None
        self.assertIn(b'"tools":' + data, spliced)
        self.assertEqual(json.loads(data), fitted.tools)
        self.assertEqual(len(json.loads(spliced)["result"]["tools"]), len(fitted.tools))

    def use_policy(self) -> None:
        rules = parse_policy({"killSwitch": {"tools": ["gen__delete_*"]}}, None, [], {"gen", "other"})
        self.gateway.policy = Policy(rules, "__", self.clock)

    def use_aliases(self) -> None:
        self.gen.tools = [{"name": f"a_rather_long_tool_name_{t['name']}", "description": "d\u00e9j\u00e0 \u2713"} for t in self.gen.tools]
        self.gen._changed()
        self.gateway.surface = _surface(clients={"match": [{"name": "narrow", "maxNameLength": 30}]})

    def test_legacy(self) -> None:
        self.assertSameAnswer(modern=False)

    def test_modern(self) -> None:
        self.assertSameAnswer(modern=True)

    def test_legacy_policy(self) -> None:
        self.use_policy()
        self.assertSameAnswer(modern=False)

    def test_modern_policy(self) -> None:
        self.use_policy()
        self.assertSameAnswer(modern=True)

    def test_legacy_aliases(self) -> None:
        self.use_aliases()
        self.assertSameAnswer(modern=False)
        self.assertIn("io.github.twisted-mcp/name", json.dumps(json.loads(self.lines())))

    def test_modern_policy_aliases(self) -> None:
        self.use_policy()
        self.use_aliases()
        self.assertSameAnswer(modern=True)

    def test_encoded_once(self) -> None:
        """A second list writes the bytes the first encoded: orjson runs
        once for the message alone."""
        self.initialize_as("some-agent")
        calls: list[int] = []
        dumps = jsonrpc._orjson_dumps

        def counted(*args: Any, **kwargs: Any) -> bytes:
            calls.append(1)
            return dumps(*args, **kwargs)

        self.patch(jsonrpc, "_orjson_dumps", counted)
        first = self.lines()
        self.assertEqual(len(calls), 2)  # the list, then the message around it
        second = self.lines()
        self.assertEqual(len(calls), 3)
        self.assertEqual(first, second)
        self.assertEqual(len(json.loads(second)["result"]["tools"]), 61)

    def test_id_beyond_64_bits(self) -> None:
        """orjson refuses the id: the standard library writes the answer,
        the same tools, and the client's exact id."""
        self.initialize_as("some-agent")
        normal = json.loads(self.lines(1))
        big = 2**70 + 1
        line = self.lines(big)
        answer = json.loads(line)
        self.assertEqual(answer["id"], big)
        self.assertEqual(answer["result"], normal["result"])
        self.assertEqual(len(answer["result"]["tools"]), 61)

    def test_list_orjson_refuses(self) -> None:
        """A lone surrogate in a definition: no kept bytes, the standard
        library writes it, as before."""
        self.gen.tools = [{"name": "odd", "description": "half \udc00 a pair"}]
        self.gen._changed()
        self.initialize_as("some-agent")
        answer = json.loads(self.lines())
        self.assertEqual([t.get("description") for t in answer["result"]["tools"]], ["half \udc00 a pair", None])
        fitted = list(self.gateway.fits._entries.values())[-1]
        assert fitted._listed is not None
        self.assertIsNone(fitted._listed.json())


class EncodeTests(FitTestCase):
    def test_encoded_list_alone(self) -> None:
        items = EncodedList([{"name": "a", "n": 2**63}, {"name": "\u00e9"}])
        self.assertEqual(items, [{"name": "a", "n": 2**63}, {"name": "\u00e9"}])
        line = encode({"jsonrpc": "2.0", "id": 1, "result": {"tools": items}})
        self.assertEqual(json.loads(line)["result"]["tools"], list(items))
        self.assertIs(items.json(), items.json())
        data, why = encode_or_explain({"jsonrpc": "2.0", "id": 2**64, "result": {"tools": items}})
        assert data is not None
        self.assertIsNone(why)
        self.assertEqual(json.loads(data), {"jsonrpc": "2.0", "id": 2**64, "result": {"tools": list(items)}})

    def test_other_subclasses_as_before(self) -> None:
        """Subclasses of str, int, dict and list are written as their base type."""

        class Text(str):
            def __str__(self) -> str:
                return "not this"

        class Number(int):
            pass

        class Mapping(dict[str, Any]):
            pass

        class Items(list[Any]):
            pass

        message = {"a": Text("x"), "b": Number(3), "c": Mapping(k=Items([1, True, None]))}
        self.assertEqual(encode(message), b'{"a":"x","b":3,"c":{"k":[1,true,null]}}\n')


class EncodedPageTests(FitTestCase):
    def test_pages_encoded_once_each(self) -> None:
        """Each page keeps its own bytes: listing the pages again runs
        orjson for the messages alone, and gets the same pages."""
        self.gateway.surface = _surface(surface={"pageSize": 25})
        self.initialize_as("some-agent")
        calls: list[int] = []
        dumps = jsonrpc._orjson_dumps

        def counted(*args: Any, **kwargs: Any) -> bytes:
            calls.append(1)
            return dumps(*args, **kwargs)

        self.patch(jsonrpc, "_orjson_dumps", counted)

        def pages() -> list[list[str]]:
            out: list[list[str]] = []
            params: dict[str, Any] = {}
            while True:
                self.request(1, "tools/list", params)
                (answer,) = self.take()
                out.append([t["name"] for t in answer["result"]["tools"]])
                if "nextCursor" not in answer["result"]:
                    return out
                params = {"cursor": answer["result"]["nextCursor"]}

        first = pages()
        self.assertEqual([len(p) for p in first], [25, 25, 11])
        self.assertEqual(len(calls), 6)  # each page's list, then its message
        self.assertEqual(pages(), first)
        self.assertEqual(len(calls), 9)
