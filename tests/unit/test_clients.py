"""
The client budget tables (L{twisted_mcp.mcp.clients}): globs matched
without case, the first row winning, config rows before built-in ones, keys
layered from row to row, and C{useClientInfo: false}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.mcp.clients import BUILT_IN, Budget, ClientRule, match


class MatchTests(SynchronousTestCase):
    def test_unknown_client_gets_the_default(self) -> None:
        """No row matches: no count limit, 64 characters, nothing from clientInfo."""
        self.assertEqual(match("some-agent"), Budget())
        self.assertEqual(match(None), Budget())
        self.assertEqual(Budget().name_limit, 64)

    def test_cursor_counts_the_server_key(self) -> None:
        """Cursor's row: 40 tools, 60 characters less the server key and one."""
        budget = match("cursor-vscode")
        self.assertEqual((budget.maxTools, budget.maxNameLength, budget.nameOverhead), (40, 60, 17))
        self.assertEqual(budget.name_limit, 43)
        self.assertTrue(budget.from_client_info)
        self.assertEqual(budget.source, "built-in Cursor")
        self.assertEqual(match("cursor-vscode", server_key_length=2).name_limit, 57)

    def test_case_insensitive_globs(self) -> None:
        self.assertEqual(match("Visual Studio Code").maxTools, 128)
        self.assertEqual(match("CLAUDE-CODE").name_limit, 64 - 7 - 16)

    def test_config_rows_first_and_layered(self) -> None:
        """A config row wins for the keys it sets; the rest come from the built-in row."""
        rows = (ClientRule("my-agent", maxTools=30, maxNameLength=40, search="always"), ClientRule("cursor*", maxTools=80))
        budget = match("cursor-vscode", rows)
        self.assertEqual((budget.maxTools, budget.maxNameLength, budget.nameOverhead), (80, 60, 17))
        self.assertEqual(budget.source, "clients.match[1]; built-in Cursor")
        mine = match("my-agent", rows)
        self.assertEqual((mine.maxTools, mine.maxNameLength, mine.search, mine.nameOverhead), (30, 40, "always", 0))

    def test_first_row_wins(self) -> None:
        rows = (ClientRule("a*", maxTools=5), ClientRule("ab*", maxTools=7))
        self.assertEqual(match("abc", rows).maxTools, 5)

    def test_use_client_info_false(self) -> None:
        """Only the config's default applies; the budget does not come from clientInfo."""
        budget = match("cursor-vscode", (), use_client_info=False, default=ClientRule("*", maxNameLength=50))
        self.assertEqual(budget, Budget(maxNameLength=50, source="clients.default"))
        self.assertFalse(budget.from_client_info)

    def test_every_row_says_what_it_rests_on(self) -> None:
        for row in BUILT_IN:
            self.assertTrue(row.client and row.source and row.verified, row)
