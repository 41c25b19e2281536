"""
Defects the fuzz targets (fuzz/) found in code that other work owns, kept
as strict expected failures: each turns into an unexpected pass, and so a
failure to be removed, when its defect is fixed.  The fuzz targets skip
these known cases; drop the skip there too when the fix lands.
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


@pytest.mark.xfail(
    strict=True,
    raises=ValueError,
    reason="config: an http server url that urlsplit refuses (an unclosed '[' or a bad IPv6 host) "
    "raises urlsplit's ValueError ('Invalid IPv6 URL') out of config.build: a traceback at start-up "
    "instead of a ConfigError naming mcpServers.NAME.url",
)
@pytest.mark.parametrize("url", ["https://example[com/mcp", "http://[::1/mcp", "http://[zz]/mcp"])
def test_badUrlIsAConfigError(url: str) -> None:
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
