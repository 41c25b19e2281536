"""
Tool list cursors bound to what the list was made of
(L{twisted_mcp.dispatch.pages.bound_page}): refused for another binding
(view, generation, budget), signed with the first configured key and read
with any.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.dispatch.pages import bound_page
from twisted_mcp.wire.jsonrpc import JsonRpcError

ITEMS = [{"name": f"t{i:03}"} for i in range(30)]
KEY_A, KEY_B = "a" * 32, "b" * 32


class BoundPageTests(SynchronousTestCase):
    def test_pages(self) -> None:
        first = bound_page("tools", "dev|g1", ITEMS, None, 25)
        self.assertEqual(len(first["tools"]), 25)
        second = bound_page("tools", "dev|g1", ITEMS, first["nextCursor"], 25)
        self.assertEqual(second, {"tools": ITEMS[25:]})

    def test_another_binding_is_refused(self) -> None:
        cursor = bound_page("tools", "dev|g1", ITEMS, None, 10)["nextCursor"]
        for binding in ("ops|g1", "dev|g2"):
            e = self.assertRaises(JsonRpcError, bound_page, "tools", binding, ITEMS, cursor, 10)
            self.assertIn("unknown cursor for tools", e.message)
            self.assertNotIn(binding, e.message)

    def test_keys_sign_with_the_first_and_read_with_any(self) -> None:
        cursor = bound_page("tools", "v|g", ITEMS, None, 10, (KEY_A,))["nextCursor"]
        self.assertEqual(bound_page("tools", "v|g", ITEMS, cursor, 10, (KEY_B, KEY_A))["tools"], ITEMS[10:20])
        self.assertRaises(JsonRpcError, bound_page, "tools", "v|g", ITEMS, cursor, 10, (KEY_B,))
        self.assertRaises(JsonRpcError, bound_page, "tools", "v|g", ITEMS, cursor, 10)
