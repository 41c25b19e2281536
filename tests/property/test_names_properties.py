"""
Properties of the aliases a name-length budget gives tool names
(L{twisted_mcp.mcp.names.shortened}): short enough, in the alphabet every
client takes, unique, reversible, stable, and lengthened when they collide.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.mcp.names import shortened, valid_tool_name

_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABC0123456789_-"), min_size=1, max_size=90)
name_sets = st.sets(names, max_size=40)
limits = st.integers(min_value=24, max_value=70)


class ShortenedProperties(SynchronousTestCase):
    @given(name_sets, limits)
    def test_short_unique_and_reversible(self, shaped: set[str], limit: int) -> None:
        """Every name gets at most C{limit} characters in the alphabet; the
        names shown are unique and lead back to their shaped names."""
        alias_of, shaped_of = shortened(shaped, limit)
        shown = [alias_of.get(n, n) for n in shaped]
        self.assertEqual(len(set(shown)), len(shown))
        for name in shaped:
            alias = alias_of.get(name, name)
            self.assertLessEqual(len(alias), limit)
            self.assertTrue(_ALPHABET.fullmatch(alias), alias)
            if name in alias_of:
                self.assertEqual(shaped_of[alias], name)

    @given(name_sets, limits)
    def test_short_names_unchanged(self, shaped: set[str], limit: int) -> None:
        """A name within the limit is never renamed; every longer one is."""
        alias_of, _ = shortened(shaped, limit)
        self.assertEqual(set(alias_of), {n for n in shaped if len(n) > limit})

    @given(name_sets, name_sets, limits)
    def test_independent_of_unrelated_additions(self, first: set[str], more: set[str], limit: int) -> None:
        """Adding names changes no alias except one that now collides."""
        alone, _ = shortened(first, limit)
        together, _ = shortened(first | more, limit)
        taken_by_more = {together.get(n, n) for n in more - first}
        for name, alias in alone.items():
            if alias not in taken_by_more and alias not in more:
                self.assertEqual(together[name], alias)


class ShortenedCollisions(SynchronousTestCase):
    def test_forced_collision_lengthens_to_12_then_16(self) -> None:
        """Two names whose 8-digit aliases collide both get 12 digits; when
        12 collide too, 16; an alias equal to a kept name is lengthened."""
        a, b = "x" * 40 + "a", "x" * 40 + "b"

        def same_first_8(name: str) -> str:
            return "0" * 8 + ("1" if name == a else "2") * 56

        alias_of, shaped_of = shortened([a, b], 30, digest=same_first_8)
        self.assertEqual(alias_of[a], "x" * 17 + "_" + "0" * 8 + "1111")
        self.assertEqual(alias_of[b], "x" * 17 + "_" + "0" * 8 + "2222")
        self.assertEqual(shaped_of[alias_of[a]], a)

        def same_first_12(name: str) -> str:
            return "0" * 12 + ("1" if name == a else "2") * 52

        alias_of, _ = shortened([a, b], 30, digest=same_first_12)
        self.assertEqual(len(alias_of[a]), 30)
        self.assertTrue(alias_of[a].endswith("0" * 12 + "1111"))

        kept = "x" * 21 + "_" + "0" * 8
        alias_of, _ = shortened([a, kept], 30, digest=same_first_8)
        self.assertNotIn(kept, alias_of)
        self.assertEqual(alias_of[a], "x" * 17 + "_" + "0" * 8 + "1111")

    def test_unresolvable_collision_gets_no_alias(self) -> None:
        """Names whose digests share 16 digits get no alias (the caller hides them)."""
        alias_of, shaped_of = shortened(["y" * 40 + "a", "y" * 40 + "b"], 30, digest=lambda n: "0" * 64)
        self.assertEqual((alias_of, shaped_of), ({}, {}))

    def test_limit_below_minimum_refused(self) -> None:
        self.assertRaises(ValueError, shortened, ["a"], 23)


class ValidToolName(SynchronousTestCase):
    def test_sep986(self) -> None:
        for good in ("a", "get_user", "DATA_EXPORT_v2", "admin.tools.list", "x" * 128):
            self.assertTrue(valid_tool_name(good), good)
        for bad in ("", "put file", "a,b", "x" * 129, "naïve", 3, None):
            self.assertFalse(valid_tool_name(bad), bad)
