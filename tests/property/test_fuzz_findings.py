"""
Defects the fuzz targets (fuzz/) found in code that other work owns.  Each
was kept here as a strict expected failure until it was fixed; a new
finding goes in the same way (and the fuzz target skips it until the fix
lands).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from twisted_mcp.config import ConfigError, parse_text
from twisted_mcp.config.loader import build
from twisted_mcp.policy.rules import matches

RECURSIVE_CONFIGS = [
    "mcpServers: &a {x: *a}\n",
    "mcpServers:\n  s: &a\n    command: x\n    args: *a\n",
    "a: &x [*x]\nmcpServers: {}\n",
]


@pytest.mark.parametrize("text", RECURSIVE_CONFIGS)
def test_recursiveYamlAliasIsAConfigError(text: str) -> None:
    """A YAML alias inside the node it names is a clean error, not a RecursionError."""
    with pytest.raises(ConfigError):
        build(parse_text(text, "gateway.yaml"), "gateway.yaml", {}, "/etc")


@pytest.mark.parametrize("url", ["https://example[com/mcp", "http://[::1/mcp", "http://[zz]/mcp"])
def test_badUrlIsAConfigError(url: str) -> None:
    """An address urlsplit refuses is a ConfigError naming its key, not urlsplit's ValueError."""
    data = {"mcpServers": {"api": {"type": "http", "url": url}}}
    with pytest.raises(ConfigError) as caught:
        build(data, "gateway.json", {}, "/etc")
    assert "mcpServers.api.url" in caught.value.render()


@given(st.sampled_from("cde"), st.text("abcdefghijklmnopqrstuvwxyz_", max_size=8))
@example("d", "elete")
def test_foldedRangesStillMatch(first: str, rest: str) -> None:
    """A folded match covers at least what the exact match covers, ranges included."""
    name = f"time__{first}{rest}"
    assert matches("*__[c-e]*", name, "__", "time")
    assert matches("*__[c-e]*", name, "__", "time", fold=True)


@pytest.mark.parametrize("kind", [{"Authorization": "Bearer x"}, ["http"], 42])
def test_aServerTypeThatIsNotTextIsAConfigError(kind: object) -> None:
    """Found by fuzz_config: a mapping or list as a server's type raised TypeError (unhashable)."""
    data = {"mcpServers": {"api": {"type": kind, "url": "http://127.0.0.1:9/mcp"}}}
    with pytest.raises(ConfigError) as caught:
        build(data, "gateway.json", {}, "/etc")
    assert "mcpServers.api.type" in caught.value.render()
