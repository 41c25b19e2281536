"""
A server's C{priority} and its C{tools:}, C{prompts:}, C{resources:}
sections (design §2.1): parsed into L{Shaping}, every problem with the
message of design §2.4, byte for byte, and its key path.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from twisted_mcp.config import ConfigError
from twisted_mcp.config.loader import build
from twisted_mcp.config.models import Shaping


def server(**keys: Any) -> dict[str, Any]:
    return {"mcpServers": {"github": {"command": "npx", **keys}}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        build(data, "test")
    return e.value.problems


def test_no_shaping_keys_leave_the_server_as_it_was() -> None:
    config = build(server(), "test")
    (github,) = config.servers
    assert (github.priority, github.tools, github.prompts, github.resources) == (0, None, None, None)


def test_every_key_is_parsed() -> None:
    config = build(
        server(
            priority=10,
            tools={
                "deny": ["delete_*", "fork_repository"],
                "rename": {"create_or_update_file": "put_file"},
                "overrides": {
                    "search_repositories": {
                        "title": "Search GitHub repositories",
                        "description": "Search public repositories.",
                        "annotations": {"readOnlyHint": True, "destructiveHint": None},
                    }
                },
            },
            prompts={"deny": ["*"]},
            resources={"allow": ["repo://*"], "overrides": {"repo://readme": {"title": "README", "name": "readme"}}},
        ),
        "test",
    )
    (github,) = config.servers
    assert github.priority == 10
    assert github.tools == Shaping(
        deny=("delete_*", "fork_repository"),
        rename={"create_or_update_file": "put_file"},
        overrides={
            "search_repositories": {
                "title": "Search GitHub repositories",
                "description": "Search public repositories.",
                "annotations": {"readOnlyHint": True, "destructiveHint": None},
            }
        },
    )
    assert github.prompts == Shaping(deny=("*",))
    assert github.resources == Shaping(allow=("repo://*",), overrides={"repo://readme": {"title": "README", "name": "readme"}})


def test_an_http_server_takes_them_too() -> None:
    config = build({"mcpServers": {"remote": {"url": "https://example.com/mcp", "priority": -1, "tools": {"deny": ["x"]}}}}, "test")
    (remote,) = config.servers
    assert (remote.priority, remote.tools) == (-1, Shaping(deny=("x",)))


@pytest.mark.parametrize(
    "keys, message",
    [
        (
            {"tools": {"alow": ["*"]}},
            'mcpServers.github.tools: unknown key "alow" (expected allow, deny, rename, overrides)',
        ),
        (
            {"tools": {"deny": ["delete_*", 3]}},
            'mcpServers.github.tools.deny[1]: expected a glob such as "delete_*", got 3',
        ),
        (
            {"tools": {"deny": [""]}},
            'mcpServers.github.tools.deny[0]: expected a glob such as "delete_*", got ""',
        ),
        (
            {"tools": {"allow": "delete_*"}},
            'mcpServers.github.tools.allow: expected a list of globs such as ["delete_*"], got "delete_*"',
        ),
        (
            {"tools": {"deny": ["[a"]}},
            "mcpServers.github.tools.deny[0]: \"[a\" is not a valid glob: the '[' at position 1 is never closed with ']'",
        ),
        (
            {"tools": {"rename": {"create_file": "put file"}}},
            'mcpServers.github.tools.rename.create_file: "put file" is not a valid tool name '
            "(letters, digits, _ - . only, 1-128 characters)",
        ),
        (
            {"prompts": {"rename": {"p": "x" * 129}}},
            f'mcpServers.github.prompts.rename.p: "{"x" * 129}" is not a valid prompt name '
            "(letters, digits, _ - . only, 1-128 characters)",
        ),
        (
            {"tools": {"rename": {"create_file": "put_file", "put_file": "put_file"}}},
            "mcpServers.github.tools.rename: create_file and put_file would both be named put_file",
        ),
        (
            {"tools": {"rename": {"create_file": "put.file", "put_file": "put_file"}}},
            "mcpServers.github.tools.rename: create_file and put_file would both be named put_file",
        ),
        (
            {"tools": {"overrides": {"search_repositories": {"inputSchema": {}}}}},
            "mcpServers.github.tools.overrides.search_repositories: cannot override inputSchema "
            "(only title, description, annotations)",
        ),
        (
            {"tools": {"overrides": {"x": {"description": "d" * 4097}}}},
            "mcpServers.github.tools.overrides.x.description: longer than 4096 characters",
        ),
        (
            {"tools": {"overrides": {"x": {"annotations": {"readOnlyHint": "yes"}}}}},
            'mcpServers.github.tools.overrides.x.annotations.readOnlyHint: expected true or false, got "yes"',
        ),
        (
            {"tools": {"overrides": {"x": {"annotations": {"since": datetime.date(2024, 1, 1)}}}}},
            'mcpServers.github.tools.overrides.x.annotations.since: expected a string, a number, true, false or null, '
            'got date "2024-01-01"',
        ),
        (
            {"tools": {"overrides": {"x": {"annotations": {"weight": float("nan")}}}}},
            "mcpServers.github.tools.overrides.x.annotations.weight: expected a string, a number, true, false or null, "
            "got a number NaN",
        ),
        (
            {"tools": {"overrides": {"x": {"annotations": {"tags": ["a"]}}}}},
            "mcpServers.github.tools.overrides.x.annotations.tags: expected a string, a number, true, false or null, got a list",
        ),
        (
            {"tools": {"overrides": {"x": {"annotations": {3: "three"}}}}},
            "mcpServers.github.tools.overrides.x.annotations.3: an annotation's name is a string, got a number 3",
        ),
        (
            {"resources": {"rename": {"a": "b"}}},
            "mcpServers.github.resources.rename: resources cannot be renamed (their URIs are addresses)",
        ),
        (
            {"resources": {"overrides": {"repo://readme": {"inputSchema": {}}}}},
            'mcpServers.github.resources.overrides["repo://readme"]: cannot override inputSchema '
            "(only title, description, name, annotations)",
        ),
        (
            {"prompts": {"overrides": {"p": {"arguments": []}}}},
            "mcpServers.github.prompts.overrides.p: cannot override arguments (only title, description)",
        ),
        (
            {"priority": "high"},
            'mcpServers.github.priority: expected a whole number, got a string "high"',
        ),
    ],
)
def test_each_problem_names_its_key_path(keys: dict[str, Any], message: str) -> None:
    assert problems(server(**keys)) == [message]


def test_a_disabled_server_is_not_checked_beyond_its_keys() -> None:
    config = build(server(disabled=True, tools={"deny": ["x"]}), "test")
    assert config.disabled == ("github",)


def test_check_config_warns_of_a_role_naming_a_renamed_tool_by_its_old_name(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from twisted_mcp.cli import main

    path = tmp_path / "gateway.yaml"
    path.write_text(
        "mcpServers:\n"
        "  github:\n"
        "    command: npx\n"
        "    tools: {rename: {create_or_update_file: put_file}}\n"
        "roles:\n"
        "  dev: {allow: [github__create_or_update_file, 'github__*'], deny: [github__create_or_update_file, github__put_file]}\n"
    )
    assert main(["check-config", str(path)]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: roles.dev.allow[0]: 'github__create_or_update_file' names github__create_or_update_file, "
        "which mcpServers.github.tools.rename serves as github__put_file",
        "warning: roles.dev.deny[0]: 'github__create_or_update_file' names github__create_or_update_file, "
        "which mcpServers.github.tools.rename serves as github__put_file",
    ]


def test_check_config_says_nothing_without_renames(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from twisted_mcp.cli import main

    path = tmp_path / "gateway.yaml"
    path.write_text("mcpServers:\n  github: {command: npx}\nroles:\n  dev: {allow: [github__create_or_update_file]}\n")
    assert main(["check-config", str(path)]) == 0
    assert "warning" not in capsys.readouterr().out
