"""
What a server lists: tools, prompts, resources and resource templates.

L{LISTINGS} names, for each kind, the request that lists it, the member
of the answer that holds the entries, and the field every entry needs;
L{fetch} follows C{nextCursor} from page to page within bounds (pages and
bytes), skipping malformed entries with a warning.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR, JsonRpcError, encode

log = Logger()

#: Pages one listing may span; a server that goes on is refused.
MAX_LISTING_PAGES = 1000


@attrs.frozen
class Listing:
    """
    One kind of listing.

    @ivar kind: the name the backend and its listeners use (C{"tools"},
        C{"prompts"}, C{"resources"}, C{"resourceTemplates"}).
    @ivar method: the request that lists it.
    @ivar capability: the server capability that offers it.
    @ivar field: the member every entry needs, a non-empty string.
    @ivar noun: what one entry is called in the log.
    """

    kind: str
    method: str
    capability: str
    field: str
    noun: str

    def valid(self, entry: Any) -> bool:
        if type(entry) is not dict:
            return False
        value = entry.get(self.field)
        return isinstance(value, str) and value != ""


TOOLS = Listing("tools", "tools/list", "tools", "name", "tool")
PROMPTS = Listing("prompts", "prompts/list", "prompts", "name", "prompt")
RESOURCES = Listing("resources", "resources/list", "resources", "uri", "resource")
RESOURCE_TEMPLATES = Listing(
    "resourceTemplates", "resources/templates/list", "resources", "uriTemplate", "resource template"
)
#: Every listing, in the order discovery asks for them.
LISTINGS = (TOOLS, PROMPTS, RESOURCES, RESOURCE_TEMPLATES)
#: What each C{notifications/.../list_changed} makes the gateway list again.
RELISTED_ON = {
    "notifications/tools/list_changed": (TOOLS,),
    "notifications/prompts/list_changed": (PROMPTS,),
    "notifications/resources/list_changed": (RESOURCES, RESOURCE_TEMPLATES),
}


#: Sends one request (method, params, timeout): a peer's C{request}, or a
#: session's, which stamps the envelope a modern server needs.
Request = Callable[[str, "dict[str, Any] | None", float], "Deferred[Any]"]


async def fetch(
    request: Request, listing: Listing, timeout: float, max_bytes: int, backend: str
) -> list[dict[str, Any]]:
    """
    Every entry of one listing, page after page.

    @param max_bytes: what the entries may add up to, encoded
        (C{gateway.maxMessageBytes}).
    @raise JsonRpcError: the server refused, answered something that is not
        a page, repeated a cursor, or went past the bounds.
    @raise twisted_mcp.wire.jsonrpc.RequestTimeout: a page took longer than
        C{timeout}.
    """
    entries: list[dict[str, Any]] = []
    size = 0
    seen_cursors: set[str] = set()
    cursor: Any = None
    method, key = listing.method, listing.kind
    for _ in range(MAX_LISTING_PAGES):
        params = {"cursor": cursor} if cursor is not None else None
        page = await request(method, params, timeout)
        if type(page) is not dict or type(page.get(key)) is not list:
            raise JsonRpcError(INTERNAL_ERROR, f"{method} answered {str(page)[:200]}")
        for entry in page[key]:
            if listing.valid(entry):
                entries.append(entry)
                # What decode() accepted, encode() writes (depth and numbers are checked there).
                size += len(encode(entry))
            else:
                log.warn(
                    "backend {backend}: ignoring a malformed {noun} definition (it needs a string {field}): {entry}",
                    backend=backend,
                    noun=listing.noun,
                    field=listing.field,
                    entry=str(entry)[:200],
                )
        if size > max_bytes:
            raise JsonRpcError(
                INTERNAL_ERROR,
                f"{method} gave more than {max_bytes} bytes of {listing.noun} definitions (gateway.maxMessageBytes)",
            )
        cursor = page.get("nextCursor")
        if cursor is None:
            return entries
        if not isinstance(cursor, str) or cursor in seen_cursors:
            raise JsonRpcError(INTERNAL_ERROR, f"{method} repeated or gave a bad nextCursor {str(cursor)[:100]!r}")
        seen_cursors.add(cursor)
    raise JsonRpcError(INTERNAL_ERROR, f"{method} gave more than {MAX_LISTING_PAGES} pages")


__all__ = ["LISTINGS", "MAX_LISTING_PAGES", "RELISTED_ON", "Listing", "fetch"]
