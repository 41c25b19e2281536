"""
What each MCP client can take of a tool list: how many tools, how long a
name (and what it adds to a name before its own limit applies), and
whether to switch to search mode.  L{BUILT_IN} is the table the gateway
ships, matched on the C{clientInfo.name} a client announces; every row says
what it rests on (C{source}) and whether that was checked (C{verified}).

A budget only protects a client from its own limits: it is never a
security input (C{clientInfo} is self-reported), and the policy filters
before any budget applies.
"""

from __future__ import annotations

import fnmatch
from typing import Sequence

import attrs

#: The effective name limit at and above which no name is aliased.
NO_ALIASES = 64
#: How search mode is chosen: when the list is over budget, always, never.
SEARCH_MODES = ("auto", "always", "never")
#: The length of the name users give the gateway in their client's config,
#: counted by clients that prefix tool names with it (clients.serverKeyLength).
DEFAULT_SERVER_KEY_LENGTH = 16


@attrs.frozen(cache_hash=True)
class Budget:
    """
    What one client is given of the tool list.

    @ivar maxTools: the most tools listed; None: no limit.
    @ivar maxNameLength: the longest name the client takes, as it counts.
    @ivar nameOverhead: what the client adds to a tool's name before its
        limit applies (its prefix, the user's server key).
    @ivar search: C{auto} (search mode when over C{maxTools}), C{always}
        or C{never}.
    @ivar source: where the numbers came from, for logs and C{/status}.
    @ivar from_client_info: a row matched on C{clientInfo.name} gave some
        of it (a modern list then gets C{ttlMs: 0}).
    """

    maxTools: int | None = None
    maxNameLength: int = NO_ALIASES
    nameOverhead: int = 0
    search: str = "auto"
    source: str = "default"
    from_client_info: bool = False

    @property
    def name_limit(self) -> int:
        """The effective limit on a name as the gateway serves it."""
        return self.maxNameLength - self.nameOverhead


@attrs.frozen(cache_hash=True)
class ClientRule:
    """
    One row of a client table: what clients whose C{clientInfo.name}
    matches C{name} (a case-insensitive glob) take.  A key left None comes
    from the next row that matches, then the default.

    @ivar countsServerKey: the client puts the user's server key before tool
        names: C{clients.serverKeyLength} is added to C{nameOverhead}.
    """

    name: str
    maxTools: int | None = None
    maxNameLength: int | None = None
    nameOverhead: int | None = None
    search: str | None = None
    countsServerKey: bool = False
    client: str = ""
    source: str = ""
    verified: str = ""


BUILT_IN: tuple[ClientRule, ...] = (
    ClientRule(
        "cursor*",
        maxTools=40,
        maxNameLength=60,
        nameOverhead=1,
        countsServerKey=True,
        client="Cursor",
        source="count: Cursor forum thread 'Tool-Specialized Agent Switching', community write-ups; "
        "name: awslabs/mcp#1283, ComposioHQ/composio#2788",
        verified="count: user reports only, not Cursor docs; name rule: user reports; clientInfo cursor-vscode: corroborated",
    ),
    ClientRule(
        "windsurf*",
        maxTools=100,
        maxNameLength=64,
        nameOverhead=0,
        client="Windsurf (Cascade)",
        source="docs.windsurf.com /windsurf/cascade/mcp: 'Cascade has a limit of 100 total tools'",
        verified="count: in the docs page as stored; clientInfo windsurf-client: corroborated",
    ),
    *(
        ClientRule(
            glob,
            maxTools=128,
            maxNameLength=64,
            nameOverhead=5,
            countsServerKey=True,
            client="VS Code / GitHub Copilot",
            source="128: postmanlabs/postman-mcp-server README, zuplo compatibility page; 64: microsoft/vscode#243602",
            verified="count: third-party pages; prefix length not verified; clientInfo 'Visual Studio Code': corroborated",
        )
        for glob in ("visual studio code*", "visual-studio-code*", "vscode*")
    ),
    ClientRule(
        "claude-code*",
        maxNameLength=64,
        nameOverhead=7,
        countsServerKey=True,
        client="Claude Code",
        source="naming rule mcp__<key>__<tool> <= 64: community notes",
        verified="rule: not verified in Anthropic docs; clientInfo claude-code: corroborated",
    ),
    ClientRule(
        "claude-ai*",
        maxNameLength=64,
        nameOverhead=0,
        client="Claude Desktop / claude.ai",
        source="twisted_mcp.mcp.names (Claude's ^[A-Za-z0-9_-]{1,64}$)",
        verified="regex: as the project already assumes; clientInfo claude-ai: corroborated",
    ),
    ClientRule(
        "gemini-cli*",
        maxNameLength=64,
        nameOverhead=0,
        client="Gemini CLI",
        source="clientInfo gemini-cli-mcp-client in two detection tables",
        verified="limits not verified",
    ),
    ClientRule(
        "codex*",
        maxNameLength=64,
        nameOverhead=0,
        client="Codex",
        source="clientInfo codex-mcp-client in two detection tables",
        verified="limits not verified",
    ),
    ClientRule(
        "openai-mcp*",
        maxTools=128,
        maxNameLength=64,
        nameOverhead=0,
        client="OpenAI (Responses API MCP tool, ChatGPT)",
        source="'maximum length 64' error (microsoft/foundry-dev-tools#201); 128 tools: OpenAI function-calling limit",
        verified="128 not verified; clientInfo openai-mcp: one detection table only",
    ),
)

#: The keys of a budget, wherever one is written (a client row, a profile's C{budget:}).
BUDGET_KEYS = ("maxTools", "maxNameLength", "nameOverhead", "search")


def matching(client_name: str, rows: Sequence[ClientRule]) -> ClientRule | None:
    """The first of C{rows} whose glob matches C{client_name}, ignoring case."""
    lowered = client_name.lower()
    for row in rows:
        if fnmatch.fnmatchcase(lowered, row.name.lower()):
            return row
    return None


def match(
    client_name: str | None,
    config_rows: Sequence[ClientRule] = (),
    use_client_info: bool = True,
    server_key_length: int = DEFAULT_SERVER_KEY_LENGTH,
    default: ClientRule | None = None,
) -> Budget:
    """
    The budget of a client that announced C{client_name}: each key from the
    first of, in order, the first matching row of C{config_rows}, the first
    matching built-in row, C{default} (the config's C{clients.default}),
    then the gateway's default (no count limit, 64 characters, no overhead).
    Without C{use_client_info} (or a name), only C{default} applies.
    """
    rows: list[tuple[ClientRule, str]] = []
    if use_client_info and client_name:
        for table, label in ((config_rows, "clients.match[{}]"), (BUILT_IN, "built-in {}")):
            row = matching(client_name, table)
            if row is not None:
                shown = label.format(config_rows.index(row)) if table is config_rows else label.format(row.client)
                rows.append((row, shown))
    matched = bool(rows)
    if default is not None:
        rows.append((default, "clients.default"))
    values: dict[str, object] = {}
    sources: list[str] = []
    counts_key = False
    for row, shown in rows:
        gave = False
        for key in BUDGET_KEYS:
            value = getattr(row, key)
            if value is not None and key not in values:
                values[key] = value
                gave = True
                if key == "nameOverhead":
                    counts_key = row.countsServerKey
        if gave:
            sources.append(shown)
    if counts_key:
        values["nameOverhead"] = int(values["nameOverhead"]) + server_key_length  # type: ignore[call-overload]
    return Budget(
        source="; ".join(sources) or "default",
        from_client_info=matched and any(not s.startswith("clients.default") for s in sources),
        **values,  # type: ignore[arg-type]
    )


__all__ = ["BUDGET_KEYS", "BUILT_IN", "DEFAULT_SERVER_KEY_LENGTH", "NO_ALIASES", "SEARCH_MODES", "Budget", "ClientRule", "match", "matching"]
