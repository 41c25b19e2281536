"""
Tests for L{twisted_mcp.mcp.errors}: where the gateway's codes lie, that
none is a code MCP or JSON-RPC defines, and that the README's table of
error codes is L{errors.TABLE}.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.mcp import errors
from twisted_mcp.wire import jsonrpc
from twisted_mcp.wire.jsonrpc import JsonRpcError

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")

#: The codes JSON-RPC 2.0 defines (its specification, "Error object").
JSON_RPC_CODES = {-32700, -32600, -32601, -32602, -32603}

#: Every error code any MCP specification defines, from
#: docs/specification/2026-07-28/basic/index.mdx, "Error Codes" (and each
#: version's schema.json): -32020 HeaderMismatch, -32021
#: MissingRequiredClientCapability, -32022 UnsupportedProtocolVersion
#: (2026-07-28); -32042 URL elicitation required (2025-11-25); -32002
#: resource not found (2025-11-25 and earlier, still accepted by clients).
#: Written out here: CI has the repository, not the specification.
MCP_CODES = {-32002, -32020, -32021, -32022, -32042}

#: The codes as published (README, CHANGELOG): operators' alert rules and
#: client scripts match these numbers, so a change must be deliberate.
PUBLISHED = {
    "AUTHENTICATION_FAILED": -31000,
    "PRINCIPAL_DISABLED": -31001,
    "TOOL_DISABLED": -31002,
    "BACKEND_DISABLED": -31003,
    "ACCESS_DENIED": -31004,
    "TOOL_QUARANTINED": -31005,
    "RATE_LIMITED": -31006,
    "BUSY": -31007,
    "CIRCUIT_OPEN": -31008,
    "AUDIT_UNAVAILABLE": -31009,
    "TOO_MANY_CALLS": -31010,
    "TOO_MANY_CONNECTIONS": -31011,
    "STREAM_LOST": -31012,
    "STATE_UNAVAILABLE": -31013,
    "BACKEND_UNAVAILABLE": -31030,
    "BACKEND_TIMEOUT": -31031,
    "BACKEND_LOST": -31032,
    "GATEWAY_SHUTTING_DOWN": -31033,
    "BACKEND_RESPONSE_TOO_LARGE": -31034,
    "BACKEND_HTTP_ERROR": -31035,
    "AUTHORIZATION_REQUIRED": -31040,
    "AUTHORIZATION_FAILED": -31041,
    "AUTHORIZATION_UNAVAILABLE": -31042,
}


def readme_table() -> list[tuple[int, str, str]]:
    """The rows of the README's table under "### Error codes"."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("\n### Error codes\n") :]
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first + 2 :]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append((int(cells[0]), cells[1], cells[2]))
    return rows


class CodeTests(SynchronousTestCase):
    def test_codesAsPublished(self) -> None:
        """Each constant has its published value, and L{errors.GATEWAY_CODES}
        is exactly those values."""
        self.assertEqual({name: getattr(errors, name) for name in PUBLISHED}, PUBLISHED)
        self.assertEqual(errors.GATEWAY_CODES, frozenset(PUBLISHED.values()))

    def test_everyCodeConstantIsAGatewayCodeOrJsonRpcs(self) -> None:
        """A new code constant cannot be added to the module without being
        listed in L{errors.GATEWAY_CODES} (or being JSON-RPC's own, or MCP's
        own "Resource not found" and "Unsupported protocol version", which the
        gateway answers as MCP defines them)."""
        constants = {v for k, v in vars(errors).items() if k.isupper() and type(v) is int}
        mcp_own = {errors.RESOURCE_NOT_FOUND, errors.UNSUPPORTED_PROTOCOL_VERSION, errors.HEADER_MISMATCH, errors.MISSING_CLIENT_CAPABILITY}
        self.assertLessEqual(constants - set(errors.GATEWAY_CODES), JSON_RPC_CODES | mcp_own)
        self.assertEqual(errors.NOT_INITIALIZED, jsonrpc.INVALID_REQUEST)

    def test_outsideJsonRpcReservedRange(self) -> None:
        """MCP: new codes SHOULD be allocated outside -32768 to -32000; the
        gateway's all lie in its own band, -31000 to -31099."""
        for code in errors.GATEWAY_CODES:
            self.assertFalse(-32768 <= code <= -32000, code)
            self.assertTrue(-31099 <= code <= -31000, code)

    def test_noCollisionWithMcpOrJsonRpc(self) -> None:
        self.assertEqual(errors.GATEWAY_CODES & (MCP_CODES | JSON_RPC_CODES), frozenset())

    def test_tableCoversEveryCodeOnce(self) -> None:
        """L{errors.TABLE} has one row for each gateway code, each JSON-RPC
        code and each MCP code the gateway sends itself, and nothing else."""
        codes = [row[0] for row in errors.TABLE]
        self.assertEqual(len(codes), len(set(codes)))
        self.assertEqual(set(codes), set(errors.GATEWAY_CODES) | JSON_RPC_CODES | {errors.UNSUPPORTED_PROTOCOL_VERSION, errors.HEADER_MISMATCH, errors.MISSING_CLIENT_CAPABILITY})


class ReadmeTableTests(SynchronousTestCase):
    def test_readmeTableIsTheModulesTable(self) -> None:
        """The README's error table is L{errors.TABLE}, row for row.  On a
        mismatch, the expected Markdown rows are in the failure message."""
        expected = [(code, meaning, data) for code, meaning, data in errors.TABLE]
        markdown = "\n".join(f"| {code} | {meaning} | {data} |" for code, meaning, data in errors.TABLE)
        self.assertEqual(readme_table(), expected, f"README.md's error table should be:\n{markdown}")

    def test_readmeStatesTheRenumberingRule(self) -> None:
        with open(README, encoding="utf-8") as f:
            section = f.read().split("\n### Error codes\n", 1)[1].split("\n|", 1)[0]
        self.assertIn("-320NN became -310NN", section)


class GatewayErrorTests(SynchronousTestCase):
    def test_backendErrorIsTheGateways(self) -> None:
        e = errors.backend_error(errors.BACKEND_LOST, "alpha", "gone", pid=7)
        self.assertIsInstance(e, errors.GatewayError)
        self.assertIsInstance(e, JsonRpcError)
        self.assertEqual(e.to_dict(), {"code": errors.BACKEND_LOST, "message": "gone", "data": {"pid": 7, "backend": "alpha"}})

    def test_peersErrorIsNot(self) -> None:
        """An error the wire layer reads from a peer's answer is a plain
        L{JsonRpcError}, whatever its code: never taken for the gateway's."""
        sent: list[dict[str, Any]] = []
        peer = jsonrpc.JsonRpcPeer(sent.append, Clock(), lambda m: None, lambda m: None, lambda rid, why: None)
        d = peer.request("tools/call", {}, None)
        peer.messageReceived({"jsonrpc": "2.0", "id": sent[0]["id"], "error": {"code": errors.TOOL_DISABLED, "message": "mine"}})
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((type(e), e.code, e.message), (JsonRpcError, errors.TOOL_DISABLED, "mine"))
