"""
Pinning over the served definition (design §0.3, §11 step 3): the digest
covers the config's overrides, the lock keeps the server's own digest
(C{upstream}) beside it, a review says whether the server or the config
changed, and lock files written before C{upstream} still read.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.catalog import Entry
from twisted_mcp.policy.pinning import Pins, digest, pinned_definitions, read_lock, write_lock


class PinningServedTests(SynchronousTestCase):
    """Pinning over the served definition, with the server's own digest beside it (design §0.3)."""

    server = {"name": "t", "description": "the server's", "inputSchema": {"type": "object"}}

    def entry(self, definition: dict[str, Any], upstream: dict[str, Any] | None = None) -> Entry:
        return Entry(Backend("a"), "t", {**definition, "name": "a__t"}, upstream)

    def test_anOverrideChangesTheDigestNotARename(self) -> None:
        served, upstream = pinned_definitions(self.entry({**self.server, "description": "the config's"}, self.server))
        self.assertNotEqual(digest(served), digest(upstream))
        self.assertEqual(digest(upstream), digest(self.server))
        renamed = Entry(Backend("a"), "t", {**self.server, "name": "a__put"}, self.server)
        served, upstream = pinned_definitions(renamed)
        self.assertEqual(digest(served), digest(self.server))
        self.assertEqual(digest(upstream), digest(self.server))

    def test_upstreamRecorded(self) -> None:
        path = self.mktemp()
        served = {**self.server, "description": "the config's"}
        pins = write_lock(path, [("a__t", "a", "t", served, self.server), ("a__u", "a", "u", {"name": "u"})])
        self.assertEqual(pins["a__t"], {"backend": "a", "tool": "t", "digest": digest(served), "upstream": digest(self.server)})
        self.assertNotIn("upstream", pins["a__u"], "written only where the config changed the definition")
        self.assertEqual(read_lock(path), pins)

    def test_reasonsSayWhichChanged(self) -> None:
        path = self.mktemp()
        write_lock(path, [("a__t", "a", "t", self.server), ("a__u", "a", "u", {"name": "u"})])
        pins = Pins("enforce", path)
        config = {**self.server, "description": "the config's"}
        server = {**self.server, "description": "the server's, new"}
        pins.review([("a__t", config, self.server), ("a__u", {"name": "u", "title": "new"}, {"name": "u", "title": "new"})])
        self.assertTrue((pins.blocks("a__t") or "").startswith("config changed: "), pins.blocks("a__t"))
        self.assertTrue((pins.blocks("a__u") or "").startswith("server changed: "), pins.blocks("a__u"))
        pins.review([("a__t", {**server, "description": "x"}, server)])
        self.assertTrue((pins.blocks("a__t") or "").startswith("server changed: "))
        pins.review([("a__t", self.server, self.server)])
        self.assertIsNone(pins.blocks("a__t"))

    def test_aLockWithoutUpstreamStillReads(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump({"version": 1, "tools": {"a__t": {"backend": "a", "tool": "t", "digest": digest(self.server)}}}, f)
        pins = Pins("enforce", path)
        self.assertIsNone(pins.error)
        self.assertEqual(pins.review([("a__t", self.server, self.server)]), [])
        pins.review([("a__t", {**self.server, "description": "x"}, self.server)])
        self.assertTrue((pins.blocks("a__t") or "").startswith("config changed: "))
        pins.review([("a__t", {"name": "t"}, {"name": "t"})])
        self.assertTrue((pins.blocks("a__t") or "").startswith("server changed: "))
