"""
Properties of the config loader, with hypothesis: whatever text or
structure it is given, the only exception it raises is L{ConfigError};
valid configurations survive a round trip through YAML and JSON.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twisted_mcp.config import ConfigError, parse_text
from twisted_mcp.config.loader import build

# No example database: the tests write nothing into the checkout.
SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

#: Pieces of YAML syntax (and of the config's own keys), to make text that
#: gets past the first character of the parser more often than random text.
YAML_PIECES = st.sampled_from(
    [
        "mcpServers", "gateway", "command", "args", "env", "url", "type", "roles", "allow", "limits", "a", "x",
        ":", ": ", "- ", "\n", "  ", "    ", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "<<: ", "!!str ",
        "!!set ", "!!binary ", "!!timestamp ", "!!int ", "!!float ", "!!bool ", "!!null ", "!!omap ", "!!python/object ", "? ", "'", '"', "#", "|", ">", "~", "1", "-1.5e9", "9" * 5000, "0x", "maybe", "2026-13-45",
        "true", "no", "2026-12-02", "0x1f", "${HOME}", "$$", "${X:-d}", "%YAML 1.1\n", "---\n", "...\n", "\t", "\\",
    ]
)
YAMLISH = st.lists(YAML_PIECES, max_size=60).map("".join)

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
KEYS = st.sampled_from(["mcpServers", "gateway", "command", "args", "env", "url", "type", "roles", "tls"]) | st.text(max_size=10)
NESTED = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=5), max_leaves=40)


def load_text(text: str, source: str) -> Any:
    return build(parse_text(text, source), source, environ={"HOME": "/home/x"})


@SETTINGS
@given(text=st.text(max_size=300) | YAMLISH, source=st.sampled_from(["gw.yaml", "gw.json", "gw"]))
def test_any_text_is_a_config_or_a_config_error(text: str, source: str) -> None:
    try:
        load_text(text, source)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and "\n" not in p for p in e.problems)


@SETTINGS
@given(data=NESTED)
def test_any_structure_is_a_config_or_a_config_error(data: Any) -> None:
    for step in (
        lambda: build(data, "gw.yaml", environ={}),
        lambda: load_text(yaml.safe_dump(data), "gw.yaml"),
        lambda: load_text(json.dumps(data), "gw.json"),
    ):
        try:
            step()
        except ConfigError as e:
            assert e.problems


NAMES = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=12)
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
ENV_NAMES = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789", min_size=1, max_size=10)


def literal(value: str) -> str:
    """How a config writes a text that must not be expanded."""
    return value.replace("$", "$$")


STDIO = st.fixed_dictionaries(
    {"command": TEXT.filter(bool), "args": st.lists(TEXT, max_size=4), "env": st.dictionaries(ENV_NAMES, TEXT, max_size=4)},
    optional={"callTimeout": st.integers(1, 86400), "required": st.booleans()},
)
GATEWAY = st.fixed_dictionaries({}, optional={"separator": st.sampled_from(["__", "--", "_x_"]), "maxMessageBytes": st.integers(1024, 1 << 30)})


@SETTINGS
@given(servers=st.dictionaries(NAMES, STDIO, max_size=5), gateway=GATEWAY, form=st.sampled_from(["yaml", "json"]))
def test_valid_configs_round_trip(servers: dict[str, Any], gateway: dict[str, Any], form: str) -> None:
    separator = gateway.get("separator", "__")
    servers = {n: s for n, s in servers.items() if separator not in n}
    written = {
        "gateway": gateway,
        "mcpServers": {
            name: {
                **spec,
                "command": literal(spec["command"]),
                "args": [literal(a) for a in spec["args"]],
                "env": {k: literal(v) for k, v in spec["env"].items()},
            }
            for name, spec in servers.items()
        },
    }
    text = yaml.safe_dump(written, allow_unicode=True) if form == "yaml" else json.dumps(written)
    config = build(parse_text(text, f"gw.{form}"), f"gw.{form}", environ={})
    assert config.gateway.separator == separator
    assert config.gateway.maxMessageBytes == gateway.get("maxMessageBytes", 16 * 1024 * 1024)
    assert {s.name: s for s in config.servers}.keys() == servers.keys()
    for loaded in config.servers:
        spec = servers[loaded.name]
        assert (loaded.command, list(loaded.args), dict(loaded.env)) == (spec["command"], spec["args"], spec["env"])
        assert loaded.callTimeout == spec.get("callTimeout", 60.0)
        assert loaded.required == spec.get("required", False)
