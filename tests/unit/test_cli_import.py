"""
Tests for C{twisted-mcp import}: client configurations (Claude Desktop,
Claude Code, Cursor, VS Code) turned into gateway configurations that the
gateway's own loader accepts.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from twisted_mcp.cli import main
from twisted_mcp.cli.importer import detect, env_name, parse_jsonc, safe_name, strip_jsonc
from twisted_mcp.config import HttpServer, StdioServer
from twisted_mcp.config.loader import load

CLIENTS = Path(__file__).resolve().parent.parent / "data" / "clients"
DESKTOP = CLIENTS / "claude_desktop_config.json"
CLAUDE_JSON = CLIENTS / "claude.json"
MCP_JSON = CLIENTS / "claude-code-project" / ".mcp.json"
CURSOR = CLIENTS / "cursor" / ".cursor" / "mcp.json"
VSCODE = CLIENTS / "vscode" / ".vscode" / "mcp.json"
VSCODE_SETTINGS = CLIENTS / "vscode-user" / "settings.json"

#: Every secret value in the fixtures: none may ever be printed.
SECRETS = [
    "ghp_desktopSecret0123456789abcdef",
    "BSA-desktopSecret-42",
    "pa$$w0rd",
    "sntrys_codeSecret_0123456789",
    "obs-localSecret-77",
    "cursorSecret-abc123",
    "vscodeSecret-xyz789",
]

_VARIABLES = (
    "GITHUB_TOKEN",
    "DATABASE_URL",
    "SEARCH_KEY",
    "DOCS_API_KEY",
    "DOCS_MCP_URL",
    "BROWSER",
    "NOTION_TOKEN",
    "STRIPE_SECRET_KEY",
    "PERPLEXITY_KEY",
    "BRAVE_API_KEY",
    "WORKSPACE_FOLDER",
    "U",
)


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return home


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["import", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def imported(capsys: pytest.CaptureFixture[str], *argv: str, environ: dict[str, str] | None = None) -> tuple[Any, str]:
    """Import into gateway.yaml (in the scratch directory); the loaded config and stderr."""
    code, out, err = run(capsys, *argv, "-o", "gateway.yaml")
    assert code == 0, err
    assert out == ""
    for secret in SECRETS:
        assert secret not in err
    return load("gateway.yaml", environ if environ is not None else {}), err


def servers(config: Any) -> dict[str, Any]:
    return {s.name: s for s in config.servers}


def write(path: str, data: Any) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return path


class TestClaudeDesktop:
    def test_servers(self, capsys: pytest.CaptureFixture[str]) -> None:
        config, err = imported(capsys, str(DESKTOP))
        s = servers(config)
        assert sorted(s) == ["brave-search", "filesystem", "github", "postgres", "time"]
        assert s["filesystem"].command == "npx"
        assert s["filesystem"].args == (
            "-y",
            "@modelcontextprotocol/server-filesystem",
            "/home/dev/Desktop",
            "/home/dev/Downloads",
        )
        # The user's own secrets are copied into the output...
        assert dict(s["github"].env) == {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_desktopSecret0123456789abcdef"}
        assert dict(s["brave-search"].env) == {"BRAVE_API_KEY": "BSA-desktopSecret-42"}
        assert "read " in err and "as Claude Desktop (the file name)" in err
        assert "5 server(s) imported" in err
        # ...and the app's own settings are not servers, nor worth a warning.
        assert "globalShortcut" not in err and "preferences" not in err

    def test_dollars_are_literal(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Claude Desktop expands nothing: $$ and ${...} reach the server as written."""
        config, err = imported(capsys, str(DESKTOP))
        assert servers(config)["postgres"].args[-1] == "postgresql://app:pa$$w0rd-${not-a-var}@localhost:5432/app"
        assert "postgres: has ${...} in its values; Claude Desktop does not expand variables" in err

    def test_renamed(self, capsys: pytest.CaptureFixture[str]) -> None:
        _, err = imported(capsys, str(DESKTOP))
        assert "server \"brave search\" renamed to 'brave-search'" in err
        assert "brave-search (was 'brave search'): stdio, npx (2 argument(s))" in err

    def test_output_mode(self, capsys: pytest.CaptureFixture[str]) -> None:
        imported(capsys, str(DESKTOP))
        assert stat.S_IMODE(os.stat("gateway.yaml").st_mode) == 0o600
        with open("gateway.yaml", encoding="utf-8") as f:
            text = f.read()
        assert text.startswith("# twisted-mcp gateway configuration, imported from ")
        assert list(yaml.safe_load(text)) == ["mcpServers"]


class TestClaudeCode:
    def test_user_scope(self, capsys: pytest.CaptureFixture[str]) -> None:
        config, err = imported(capsys, str(CLAUDE_JSON), environ={"GITHUB_TOKEN": "t0k"})
        s = servers(config)
        assert sorted(s) == ["github", "legacy-search", "linear", "sentry"]
        assert isinstance(s["github"], StdioServer)
        assert dict(s["github"].env) == {"GITHUB_PERSONAL_ACCESS_TOKEN": "t0k"}
        assert isinstance(s["sentry"], HttpServer) and s["sentry"].transport == "streamable"
        assert s["sentry"].url == "https://mcp.sentry.dev/mcp"
        assert dict(s["sentry"].headers) == {"Authorization": "Bearer sntrys_codeSecret_0123456789"}
        assert s["legacy-search"].transport == "sse"
        assert dict(s["legacy-search"].headers) == {"X-Api-Key": "dev-key"}
        assert "as Claude Code (it has \"projects\" (~/.claude.json))" in err

    def test_projects_listed(self, capsys: pytest.CaptureFixture[str]) -> None:
        _, err = imported(capsys, str(CLAUDE_JSON), environ={"GITHUB_TOKEN": "t"})
        assert "2 project(s) have servers of their own" in err
        assert "/home/dev/notes: obsidian" in err
        assert "/home/dev/webapp: postgres, github" in err
        assert "/home/dev/scratch" not in err  # no servers there

    def test_variables_kept(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Claude Code's ${VAR} is the gateway's syntax: kept, and listed for the operator."""
        _, err = imported(capsys, str(CLAUDE_JSON), environ={"GITHUB_TOKEN": "t"})
        with open("gateway.yaml", encoding="utf-8") as f:
            data = yaml.safe_load(f)
        assert data["mcpServers"]["github"]["env"] == {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"}
        assert data["mcpServers"]["legacy-search"]["headers"] == {"X-Api-Key": "${SEARCH_KEY:-dev-key}"}
        assert "set them where it runs:\n  GITHUB_TOKEN  (not set here)" in err

    def test_oauth_warned(self, capsys: pytest.CaptureFixture[str]) -> None:
        _, err = imported(capsys, str(CLAUDE_JSON), environ={"GITHUB_TOKEN": "t"})
        assert "linear: oauth was not imported" in err

    def test_project(self, capsys: pytest.CaptureFixture[str]) -> None:
        config, err = imported(
            capsys, str(CLAUDE_JSON), "--project", "/home/dev/webapp/", environ={"GITHUB_TOKEN": "t", "DATABASE_URL": "postgres://db"}
        )
        s = servers(config)
        assert sorted(s) == ["github", "legacy-search", "linear", "postgres", "sentry"]
        assert s["github"].command == "docker"  # the project's server wins over the user's
        assert s["postgres"].args[-1] == "postgres://db"
        assert "github: the project's server replaces the user-scope server of the same name" in err
        assert "project /home/dev/webapp (2 server(s))" in err
        assert "obsidian" not in err

    def test_unknown_project(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, str(CLAUDE_JSON), "--project", "/home/dev/nowhere")
        assert code == 64
        assert out == ""
        assert "has no project /home/dev/nowhere; projects with servers:\n    /home/dev/notes\n    /home/dev/webapp" in err

    def test_mcp_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        config, err = imported(capsys, str(MCP_JSON), environ={"DOCS_API_KEY": "k"})
        s = servers(config)
        assert sorted(s) == ["api-docs", "playwright", "shell-tools"]
        assert s["playwright"].args == ("@playwright/mcp@latest", "--browser", "chromium")
        assert s["api-docs"].url == "https://docs.example.com/mcp"
        assert dict(s["api-docs"].headers) == {"X-API-Key": "k"}
        # A $ that is no variable reference stays a $.
        assert s["shell-tools"].args == ("--price", "$5")
        assert "as Claude Code (the file name)" in err
        assert "server \"shell.tools\" renamed to 'shell-tools'" in err

    def test_project_with_mcp_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, str(MCP_JSON), "--project", "/somewhere")
        assert code == 64
        assert "--project does not apply" in err


class TestCursor:
    def test_servers(self, capsys: pytest.CaptureFixture[str], _environment: Path) -> None:
        config, err = imported(capsys, str(CURSOR), environ={"NOTION_TOKEN": "n", "STRIPE_SECRET_KEY": "sk"})
        s = servers(config)
        assert sorted(s) == ["analytics", "notion", "repo-tools", "stripe"]
        assert dict(s["notion"].headers) == {"Authorization": "Bearer n"}
        assert s["notion"].transport == "streamable"
        assert dict(s["stripe"].env) == {"STRIPE_SECRET_KEY": "sk"}
        workspace = str(CLIENTS / "cursor")
        assert s["repo-tools"].args == (
            f"{workspace}/tools/mcp-server.js",
            "--home",
            f"{_environment}/.repo-tools",
        )
        assert dict(s["repo-tools"].env) == {"API_KEY": "cursorSecret-abc123", "LOG_LEVEL": "debug"}
        assert "as Cursor (the file is in a .cursor directory)" in err

    def test_env_syntax(self, capsys: pytest.CaptureFixture[str]) -> None:
        imported(capsys, str(CURSOR), environ={"NOTION_TOKEN": "n", "STRIPE_SECRET_KEY": "sk"})
        with open("gateway.yaml", encoding="utf-8") as f:
            data = yaml.safe_load(f)
        assert data["mcpServers"]["notion"]["headers"]["Authorization"] == "Bearer ${NOTION_TOKEN}"

    def test_warnings(self, capsys: pytest.CaptureFixture[str]) -> None:
        config, err = imported(capsys, str(CURSOR), environ={"NOTION_TOKEN": "n", "STRIPE_SECRET_KEY": "sk"})
        assert "repo-tools: envFile was not imported" in err
        assert servers(config)["analytics"].transport == "sse"
        assert "analytics: Cursor does not say which HTTP transport; the address ends in /sse" in err

    def test_global_file_has_no_workspace(self, capsys: pytest.CaptureFixture[str], _environment: Path) -> None:
        """~/.cursor/mcp.json belongs to no project: ${workspaceFolder} becomes a variable."""
        path = write(
            str(_environment / ".cursor" / "mcp.json"),
            {"mcpServers": {"t": {"command": "node", "args": ["${workspaceFolder}/x.js"]}}},
        )
        config, err = imported(capsys, path, environ={"WORKSPACE_FOLDER": "/srv/w"})
        assert servers(config)["t"].args == ("/srv/w/x.js",)
        assert "it became ${WORKSPACE_FOLDER} (or pass --project DIR" in err


class TestVSCode:
    ENV = {"PERPLEXITY_KEY": "p", "GITHUB_TOKEN": "g"}

    def test_servers(self, capsys: pytest.CaptureFixture[str]) -> None:
        config, err = imported(capsys, str(VSCODE), environ=self.ENV)
        s = servers(config)
        assert sorted(s) == ["docs-search", "github", "perplexity", "workspace-tools"]
        assert dict(s["perplexity"].env) == {"PERPLEXITY_API_KEY": "p"}
        assert s["docs-search"].transport == "sse"
        assert "as VS Code (it has a \"servers\" mapping)" in err

    def test_comments_do_not_break_strings(self, capsys: pytest.CaptureFixture[str]) -> None:
        config, _ = imported(capsys, str(VSCODE), environ=self.ENV)
        github = servers(config)["github"]
        assert github.url == "https://api.githubcopilot.com/mcp/"
        assert dict(github.headers) == {"Authorization": "Bearer g", "X-Trace": "a//b /* not a comment */"}

    def test_inputs(self, capsys: pytest.CaptureFixture[str]) -> None:
        _, err = imported(capsys, str(VSCODE), environ=self.ENV)
        with open("gateway.yaml", encoding="utf-8") as f:
            data = yaml.safe_load(f)
        assert data["mcpServers"]["perplexity"]["env"] == {"PERPLEXITY_API_KEY": "${PERPLEXITY_KEY}"}
        assert data["mcpServers"]["github"]["headers"]["Authorization"] == "Bearer ${GITHUB_TOKEN}"
        assert 'GITHUB_TOKEN    VS Code input "github.token": GitHub personal access token  (not set here)' in err
        assert 'PERPLEXITY_KEY  VS Code input "perplexity-key": Perplexity API Key  (not set here)' in err

    def test_workspace_folder(self, capsys: pytest.CaptureFixture[str]) -> None:
        config, _ = imported(capsys, str(VSCODE), environ=self.ENV)
        tools = servers(config)["workspace-tools"]
        workspace = str(CLIENTS / "vscode")
        assert tools.command == f"{workspace}/.venv/bin/python"
        assert tools.args == (f"{workspace}/mcp/server.py", "--config", f"{workspace}/mcp.toml")

    def test_project_option_is_the_workspace(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        config, _ = imported(capsys, str(VSCODE), "--project", str(tmp_path / "elsewhere"), environ=self.ENV)
        assert servers(config)["workspace-tools"].command == f"{tmp_path}/elsewhere/.venv/bin/python"

    def test_warnings(self, capsys: pytest.CaptureFixture[str]) -> None:
        config, err = imported(capsys, str(VSCODE), environ=self.ENV)
        assert "workspace-tools: envFile was not imported" in err
        assert "workspace-tools: dev was not imported: VS Code's development mode" in err
        assert "workspace-tools: not imported (no equivalent in the gateway): sandboxEnabled" in err
        assert "env.EDITOR_THEME: ${config:workbench.colorTheme} is a VS Code variable that means nothing outside" in err
        # Kept as literal text, never silently emptied.
        assert servers(config)["workspace-tools"].env["EDITOR_THEME"] == "${config:workbench.colorTheme}"
        assert "server \"docs.search\" renamed to 'docs-search'" in err

    def test_settings_json(self, capsys: pytest.CaptureFixture[str], _environment: Path) -> None:
        config, err = imported(
            capsys, str(VSCODE_SETTINGS), environ={"BRAVE_API_KEY": "b", "WORKSPACE_FOLDER": "/w"}
        )
        s = servers(config)
        assert sorted(s) == ["brave", "fetch", "notes"]
        assert dict(s["brave"].env) == {"BRAVE_API_KEY": "b"}
        assert s["fetch"].args == ("mcp-server-fetch", "--user-agent", "ua/1.0 (+https://example.com/bot)")
        assert s["notes"].args == (f"{_environment}/mcp/notes/index.js", "/w")
        assert "as VS Code (it has an \"mcp\": {\"servers\"} setting)" in err
        assert "notes: uses ${workspaceFolder}, but this file belongs to no particular project" in err
        assert "WORKSPACE_FOLDER  VS Code's ${workspaceFolder}: the project directory" in err
        assert "editor.fontSize" not in err

    def test_undeclared_input(self, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(".vscode/mcp.json", {"servers": {"s": {"type": "stdio", "command": "x", "env": {"K": "${input:my-key}"}}}})
        config, err = imported(capsys, path, environ={"MY_KEY": "v"})
        assert servers(config)["s"].env["K"] == "v"
        assert "s: env.K: ${input:my-key} is not declared in \"inputs\"; it became ${MY_KEY}" in err

    def test_socket_url_skipped(self, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(
            "mcp.json",
            {"servers": {"sock": {"type": "http", "url": "unix:///tmp/server.sock#/mcp"}, "ok": {"type": "stdio", "command": "x"}}},
        )
        config, err = imported(capsys, path)
        assert sorted(servers(config)) == ["ok"]
        assert "sock: url: a unix: socket address; the gateway reaches servers over http:// and https:// only; skipped" in err

    def test_unreadable_url_skipped(self, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(
            "mcp.json",
            {"servers": {"bad": {"type": "http", "url": "http://[::1/mcp"}, "env": {"url": "http://[${env:HOST}/sse"}, "ok": {"type": "stdio", "command": "x"}}},
        )
        config, err = imported(capsys, path, environ={"HOST": "::1]"})
        assert sorted(servers(config)) == ["env", "ok"]
        assert "bad: url: not an http:// or https:// address; skipped" in err


class TestJSONC:
    def test_comments_and_trailing_commas(self) -> None:
        text = """
        // a comment
        {
          "url": "https://example.com/a//b", /* block
             comment */ "s": "/* kept */ // kept",
          "q": "say \\"hi\\" // still a string",
          "list": [1, 2, 3,],
          "comma": "a,}",
        }
        """
        assert parse_jsonc(text) == {
            "url": "https://example.com/a//b",
            "s": "/* kept */ // kept",
            "q": 'say "hi" // still a string',
            "list": [1, 2, 3],
            "comma": "a,}",
        }

    def test_positions_kept(self) -> None:
        assert strip_jsonc('{"a": 1, // x\n}').count("\n") == 1
        with pytest.raises(ValueError, match=r"line 3, column"):
            parse_jsonc("{\n/* c\n */ nope}")

    def test_unclosed(self) -> None:
        with pytest.raises(ValueError, match="comment is not closed"):
            parse_jsonc('{"a": 1 /* forever')

    def test_duplicates(self) -> None:
        found: list[str] = []
        assert parse_jsonc('{"a": 1, "a": 2}', found) == {"a": 2}
        assert found == ["a"]


class TestNames:
    def test_safe_name(self) -> None:
        assert safe_name("brave search") == "brave-search"
        assert safe_name("my.server!") == "my-server"
        assert safe_name("a__b___c") == "a_b_c"
        assert safe_name("...") == "server"
        assert env_name("github.token") == "GITHUB_TOKEN"
        assert env_name("perplexity-key") == "PERPLEXITY_KEY"
        assert env_name("1st") == "_1ST"

    def test_collisions(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Valid names keep theirs; renamed ones yield, in the file's order."""
        path = write(
            "claude_desktop_config.json",
            {
                "mcpServers": {
                    "a.b": {"command": "one"},
                    "a-b": {"command": "two"},
                    "a b": {"command": "three"},
                    "x__y": {"command": "four"},
                }
            },
        )
        config, err = imported(capsys, path)
        s = servers(config)
        assert {n: v.command for n, v in s.items()} == {"a-b": "two", "a-b-2": "one", "a-b-3": "three", "x_y": "four"}
        assert "server \"a.b\" renamed to 'a-b-2' (a server name may use only A-Z a-z 0-9 _ -; 'a-b' was taken)" in err
        assert "server \"x__y\" renamed to 'x_y' (a server name may not contain '__'" in err

    def test_duplicate_keys(self, capsys: pytest.CaptureFixture[str]) -> None:
        path = write("claude_desktop_config.json", '{"mcpServers": {"t": {"command": "old"}, "t": {"command": "new"}}}')
        config, err = imported(capsys, path)
        assert servers(config)["t"].command == "new"
        assert 'the key "t" appears more than once in the file; the last one counts' in err


class TestDetection:
    @pytest.mark.parametrize(
        "name, data, expected",
        [
            ("mcp.json", {"servers": {}}, "vscode"),
            ("settings.json", {"mcp": {"servers": {}}}, "vscode"),
            ("claude_desktop_config.json", {"mcpServers": {}}, "claude-desktop"),
            ("whatever.json", {"mcpServers": {}, "projects": {}}, "claude-code"),
            (".mcp.json", {"mcpServers": {}}, "claude-code"),
            (".cursor/mcp.json", {"mcpServers": {}}, "cursor"),
            ("mcp.json", {"mcpServers": {"a": {"command": "x", "env": {"K": "${env:K}"}}}}, "cursor"),
            ("mcp.json", {"mcpServers": {"a": {"type": "stdio", "command": "x"}}}, "claude-code"),
            ("mcp.json", {"mcpServers": {"a": {"command": "x"}}}, "claude-desktop"),
        ],
    )
    def test_detect(self, name: str, data: Any, expected: str) -> None:
        assert detect(name, data)[0] == expected

    def test_unknown_format(self, capsys: pytest.CaptureFixture[str]) -> None:
        path = write("config.json", {"servers": [1, 2], "other": {}})
        code, out, err = run(capsys, path)
        assert code == 65
        assert out == ""
        assert "not an MCP client configuration this command knows" in err

    def test_wrong_from(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, str(DESKTOP), "--from", "vscode")
        assert code == 65
        assert "no \"servers\" mapping" in err

    def test_forced_format(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--from claude-code keeps ${VAR} that Claude Desktop would treat as text."""
        path = write("servers.json", {"mcpServers": {"t": {"command": "x", "args": ["${HOME_DIR}"]}}})
        config, err = imported(capsys, path, "--from", "claude-code", environ={"HOME_DIR": "/h"})
        assert servers(config)["t"].args == ("/h",)
        assert "as Claude Code (--from)" in err


class TestFiles:
    def test_stdout(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, str(DESKTOP))
        assert code == 0
        assert yaml.safe_load(out)["mcpServers"]["github"]["env"]["GITHUB_PERSONAL_ACCESS_TOKEN"] == (
            "ghp_desktopSecret0123456789abcdef"
        )
        assert "written to standard output" in err
        assert not os.path.exists("gateway.yaml")

    def test_no_overwrite(self, capsys: pytest.CaptureFixture[str]) -> None:
        write("gateway.yaml", "keep me\n")
        code, out, err = run(capsys, str(DESKTOP), "-o", "gateway.yaml")
        assert code == 73
        assert "gateway.yaml already exists; use --force to replace it" in err
        with open("gateway.yaml", encoding="utf-8") as f:
            assert f.read() == "keep me\n"

    def test_force(self, capsys: pytest.CaptureFixture[str]) -> None:
        write("gateway.yaml", "old\n")
        os.chmod("gateway.yaml", 0o644)
        code, _, err = run(capsys, str(DESKTOP), "-o", "gateway.yaml", "--force")
        assert code == 0, err
        assert stat.S_IMODE(os.stat("gateway.yaml").st_mode) == 0o600
        assert len(load("gateway.yaml", {}).servers) == 5
        assert [n for n in os.listdir(".") if n.endswith(".tmp")] == []

    def test_not_over_the_source(self, capsys: pytest.CaptureFixture[str]) -> None:
        path = write("claude_desktop_config.json", {"mcpServers": {"t": {"command": "x"}}})
        code, _, err = run(capsys, path, "-o", path, "--force")
        assert code == 73
        assert "is the file being imported" in err
        with open(path, encoding="utf-8") as f:
            assert json.load(f) == {"mcpServers": {"t": {"command": "x"}}}

    def test_cannot_create(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, str(DESKTOP), "-o", "no/such/dir/gateway.yaml")
        assert code == 73
        assert "cannot create no/such/dir/gateway.yaml" in err

    def test_missing_source(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "nowhere.json")
        assert code == 66
        assert out == ""
        assert "nowhere.json: no such file" in err

    def test_not_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        path = write("claude_desktop_config.json", '{"mcpServers": {"t": {"command": "hunter2secret"\n')
        code, _, err = run(capsys, path)
        assert code == 65
        assert "not valid JSON: " in err and "(line 2, column 1)" in err
        assert "hunter2secret" not in err


class TestSecrets:
    def test_never_printed(self, capsys: pytest.CaptureFixture[str]) -> None:
        secrets = ["argSecret-1111", "envSecret-2222", "hdrSecret-3333", "pathSecret-4444", "querySecret-5555", "userSecret-6666"]
        path = write(
            ".mcp.json",
            {
                "mcpServers": {
                    "local": {"command": "srv", "args": ["--key", secrets[0]], "env": {"TOKEN": secrets[1]}},
                    "remote": {
                        "type": "http",
                        "url": f"https://bob:{secrets[5]}@mcp.example.com/s/{secrets[3]}/mcp?key={secrets[4]}",
                        "headers": {"Authorization": f"Bearer {secrets[2]}", "Bad:Name": secrets[2]},
                    },
                    "broken": {"command": "x", "cwd": "/no/such/dir", "env": {"E": secrets[1], "N": None}},
                }
            },
        )
        code, out, err = run(capsys, path, "-o", "gateway.yaml")
        assert code == 0, err
        for s in secrets:
            assert s not in err
            assert s not in out
        assert "remote: Streamable HTTP at https://mcp.example.com" in err
        assert 'remote: headers: "Bad:Name" is not a valid header name; not imported' in err
        assert "broken: env.N: null (the client removes the variable); not imported" in err
        with open("gateway.yaml", encoding="utf-8") as f:
            text = f.read()
        for s in secrets:
            assert s in text  # the output has them all: it is the user's own config


class TestValidation:
    def test_broken_server_disabled(self, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(".mcp.json", {"mcpServers": {"bad": {"command": "x", "cwd": "/no/such/dir"}, "good": {"command": "y"}}})
        config, err = imported(capsys, path)
        assert [s.name for s in config.servers] == ["good"]
        assert config.disabled == ("bad",)
        assert "bad: imported with disabled: true, fix it first: mcpServers.bad.cwd: no such directory: /no/such/dir" in err
        assert "bad: stdio, x (disabled)" in err

    def test_unset_variables_not_checked(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A value read from an unset variable is checked when the gateway starts, not now."""
        path = write(".mcp.json", {"mcpServers": {"r": {"type": "http", "url": "${U}"}}})
        config, err = imported(capsys, path, environ={"U": "https://mcp.example.com/mcp"})
        assert servers(config)["r"].url == "https://mcp.example.com/mcp"
        assert "r: url could not be checked: it reads U, not set here" in err
        assert "r: Streamable HTTP at an address read from the environment" in err
        assert "U  (not set here)" in err

    def test_unconvertible_entries(self, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(
            ".mcp.json",
            {
                "mcpServers": {
                    "ws": {"type": "ws", "url": "ws://127.0.0.1:1"},
                    "nocmd": {"args": ["x"]},
                    "ok": {"command": "y", "alwaysAllow": ["t"], "timeout": 5},
                }
            },
        )
        config, err = imported(capsys, path)
        assert [s.name for s in config.servers] == ["ok"]
        assert 'ws: type "ws": the gateway speaks to stdio, http (Streamable HTTP) and sse servers; skipped' in err
        assert "nocmd: no command (the program to start); skipped" in err
        assert "ok: not imported (no equivalent in the gateway): alwaysAllow, timeout" in err
