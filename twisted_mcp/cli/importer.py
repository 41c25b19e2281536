"""
C{twisted-mcp import}: turn an MCP client's configuration into a gateway
configuration.

Formats read (C{--from}, or detected from the file's name and contents):

- C{claude-desktop}: C{claude_desktop_config.json},
  C{{"mcpServers": {name: {command, args, env}}}}; other top-level keys
  (C{globalShortcut}, C{preferences}...) are the app's own and are ignored.
  Claude Desktop does not expand variables: a C{$} is kept as literal text.
- C{claude-code}: C{~/.claude.json} (top-level C{mcpServers} is the user
  scope; C{projects: {"/abs/path": {mcpServers}}} the local scope of each
  project) and a project's C{.mcp.json}.  Entries have C{type} C{stdio},
  C{http} or C{sse}.  Claude Code's C{${VAR}} and C{${VAR:-default}} are the
  gateway's own syntax and are kept as they are.
- C{cursor}: C{~/.cursor/mcp.json} or a project's C{.cursor/mcp.json},
  C{{"mcpServers": {...}}}; C{${env:NAME}}, C{${userHome}},
  C{${workspaceFolder}} are translated.
- C{vscode}: C{.vscode/mcp.json} or the user profile's C{mcp.json}
  (C{{"servers": {...}, "inputs": [...]}}), or a C{settings.json} with
  C{{"mcp": {"servers": {...}}}}.  JSON with comments and trailing commas.
  C{${input:ID}} (which VS Code prompts for) becomes the environment variable
  C{${ID}} in upper case; C{${workspaceFolder}} the project's directory.

Nothing is dropped silently: whatever cannot be converted (C{envFile}, OAuth
settings, VS Code's C{dev} section, unknown keys, unknown variables) is named
in a warning.  Values (which hold secrets: tokens in C{env} and C{headers})
are copied into the output and never into a message: messages name keys,
never values.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Mapping

import attrs

from twisted_mcp.config import ConfigError, json_document, read_file
from twisted_mcp.config._check import NAME_RE, _join
from twisted_mcp.config.loader import build
from twisted_mcp.urls import split_url

FORMATS = ("claude-desktop", "claude-code", "cursor", "vscode")
LABELS = {
    "claude-desktop": "Claude Desktop",
    "claude-code": "Claude Code",
    "cursor": "Cursor",
    "vscode": "VS Code",
}
#: The separator of the configuration produced (it has no gateway section).
SEPARATOR = "__"
#: The largest client configuration read: Claude Code's ~/.claude.json keeps
#: every project's history and grows far beyond a gateway config.
MAX_SOURCE_BYTES = 64 * 1024 * 1024

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CLAUDE_REF_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?$")
_TOKEN_RE = re.compile(r"\$\{([^}]*)\}|\$")
#: A variable reference as config.expand reads it: ${NAME} or ${NAME:-default}.
_GATEWAY_REF_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


class ImportFailure(Exception):
    """
    The source cannot be imported.  C{kind} is C{"noinput"} (the file cannot
    be read), C{"data"} (it is not a configuration this command knows) or
    C{"usage"} (the options do not fit the file).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@attrs.define
class Imported:
    """The outcome of reading one client configuration."""

    source: str
    format: str
    #: Why this format was chosen (for the summary).
    reason: str
    #: Gateway server entries by (gateway) name, in the source's order.
    servers: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: The server's name in the source, for servers that were renamed.
    renamed: dict[str, str] = attrs.field(factory=dict)
    warnings: list[str] = attrs.field(factory=list)
    #: Information that is not a problem (other projects, overrides).
    notes: list[str] = attrs.field(factory=list)
    #: Environment variables the output reads -> why (VS Code inputs...).
    variables: dict[str, str] = attrs.field(factory=dict)
    #: Values that must never appear in a message.
    secrets: set[str] = attrs.field(factory=set)

    def secret(self, *values: str) -> None:
        """Remember values that may hold a secret (not mere variable references)."""
        for v in values:
            if len(re.sub(r"\$\{[^}]*\}", "", v).strip()) >= 6:
                self.secrets.add(v)

    def redact(self, text: str) -> str:
        """
        Replace any secret value that slipped into C{text}: a safety net, as
        messages are written to name keys, never values.
        """
        for s in sorted(self.secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, "<redacted>")
        return text


# --- reading -----------------------------------------------------------------


class JSONCError(ValueError):
    def __init__(self, message: str, text: str, pos: int) -> None:
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        super().__init__(f"{message} (line {line}, column {column})")


def strip_jsonc(text: str) -> str:
    """
    Turn JSON with comments (C{//}, C{/* */}) and trailing commas into JSON.
    Comments and trailing commas become spaces (newlines are kept, so that
    positions in error messages stay right); strings are never touched, so
    C{"https://example.com"} stays whole.
    """
    out = list(text)
    i, n = 0, len(text)
    last_comma = -1  # position of a comma not yet followed by a value
    while i < n:
        c = text[i]
        if c == '"':
            last_comma = -1
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                raise JSONCError("a string is not closed", text, n)
            i += 1
            continue
        if c == "/" and i + 1 < n and text[i + 1] == "/":
            while i < n and text[i] != "\n":
                out[i] = " "
                i += 1
            continue
        if c == "/" and i + 1 < n and text[i + 1] == "*":
            end = text.find("*/", i + 2)
            if end < 0:
                raise JSONCError("a /* comment is not closed", text, i)
            for j in range(i, end + 2):
                if out[j] != "\n":
                    out[j] = " "
            i = end + 2
            continue
        if c == ",":
            last_comma = i
        elif c in "}]":
            if last_comma >= 0:
                out[last_comma] = " "
            last_comma = -1
        elif not c.isspace():
            last_comma = -1
        i += 1
    return "".join(out)


def parse_jsonc(text: str, duplicates: list[str] | None = None, source: str = "<text>") -> Any:
    """
    Parse JSON with comments and trailing commas; repeated keys are listed
    in C{duplicates}.  Nesting deeper than a configuration may (see
    L{json_document}) is a L{ConfigError} naming C{source}.
    """

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out and duplicates is not None:
                duplicates.append(k)
                del out[k]  # the last one wins, as in the clients, in its own place
            out[k] = v
        return out

    if text.startswith("\ufeff"):
        text = text[1:]
    clean = strip_jsonc(text)
    try:
        return json_document(clean, source, pairs)
    except json.JSONDecodeError as e:
        # e.msg and the position only: the message never quotes the text.
        raise JSONCError(e.msg, clean, e.pos) from None


def read_source(path: str) -> tuple[Any, list[str]]:
    duplicates: list[str] = []
    try:
        data = parse_jsonc(read_file(path, MAX_SOURCE_BYTES), duplicates, path)
    except FileNotFoundError:
        raise ImportFailure("noinput", f"{path}: no such file")
    except IsADirectoryError:
        raise ImportFailure("noinput", f"{path}: is a directory; give the client's configuration file")
    except OSError as e:
        raise ImportFailure("noinput", f"{path}: cannot read the file: {e.strerror or e}")
    except UnicodeDecodeError:
        raise ImportFailure("data", f"{path}: not UTF-8 text, so not a JSON configuration")
    except JSONCError as e:
        raise ImportFailure("data", f"{path}: not valid JSON: {e}")
    except ConfigError as e:  # beyond the bounds of a configuration file
        raise ImportFailure("data", e.problems[0])
    return data, duplicates


# --- detecting the format ----------------------------------------------------


def _strings(node: Any) -> Any:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def detect(path: str, data: Any) -> tuple[str, str]:
    """The format of C{data} read from C{path}, and why."""
    name = os.path.basename(path)
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if not isinstance(data, dict):
        raise ImportFailure("data", f"{path}: not an MCP client configuration (expected a JSON object at the top)")
    mcp = data.get("mcp")
    if isinstance(data.get("servers"), dict) or (isinstance(mcp, dict) and isinstance(mcp.get("servers"), dict)):
        return "vscode", "it has a \"servers\" mapping" if "servers" in data else "it has an \"mcp\": {\"servers\"} setting"
    if not isinstance(data.get("mcpServers"), dict) and not isinstance(data.get("projects"), dict):
        raise ImportFailure(
            "data",
            f"{path}: not an MCP client configuration this command knows: it has none of \"mcpServers\" "
            "(Claude Desktop, Claude Code, Cursor), \"projects\" (Claude Code's ~/.claude.json), \"servers\" "
            "or \"mcp\": {\"servers\"} (VS Code)",
        )
    if name == "claude_desktop_config.json":
        return "claude-desktop", "the file name"
    if isinstance(data.get("projects"), dict):
        return "claude-code", "it has \"projects\" (~/.claude.json)"
    if name in (".claude.json", "claude.json", ".mcp.json"):
        return "claude-code", "the file name"
    if parent == ".cursor":
        return "cursor", "the file is in a .cursor directory"
    entries = [e for e in data["mcpServers"].values() if isinstance(e, dict)]
    texts = list(_strings(data["mcpServers"]))
    if any("envFile" in e for e in entries) or any(
        m in t for t in texts for m in ("${env:", "${userHome}", "${workspaceFolder")
    ):
        return "cursor", "it uses Cursor's ${env:...} variables or envFile (guessed)"
    if any("type" in e for e in entries) or any(re.search(r"\$\{[A-Za-z_]", t) for t in texts):
        return "claude-code", "its entries have \"type\" or ${VAR} references (guessed)"
    return "claude-desktop", "a plain \"mcpServers\" mapping (guessed)"


# --- converting values ---------------------------------------------------------


def env_name(input_id: str) -> str:
    """The environment variable that stands for VS Code's C{${input:ID}}."""
    name = re.sub(r"[^A-Za-z0-9]", "_", input_id).upper()
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def _escape(text: str) -> str:
    """Literal text for the gateway's config: every C{$} doubled."""
    return text.replace("$", "$$")


class _Converter:
    def __init__(self, imported: Imported, fmt: str, workspace: str | None, home: str, inputs: dict[str, Any]) -> None:
        self.imported = imported
        self.fmt = fmt
        self.workspace = workspace
        self.home = home
        self.inputs = inputs
        self.server = ""
        self.server_warned: set[tuple[str, str]] = set()

    def warn(self, message: str) -> None:
        self.imported.warnings.append(f"{self.server}: {message}" if self.server else message)

    def warn_once(self, key: str, message: str) -> None:
        if (self.server, key) not in self.server_warned:
            self.server_warned.add((self.server, key))
            self.warn(message)

    def need(self, name: str, why: str) -> None:
        self.imported.variables.setdefault(name, why)

    # Strings -------------------------------------------------------------

    def text(self, value: str, where: str) -> str:
        """Translate one string value of the source into the gateway's syntax."""
        handler: Callable[[str, str], str] = {
            "claude-desktop": self._ref_literal,
            "claude-code": self._ref_claude_code,
            "cursor": self._ref_editor,
            "vscode": self._ref_editor,
        }[self.fmt]

        def sub(m: re.Match[str]) -> str:
            if m.group(1) is None:
                return "$$"  # a lone $: literal
            return handler(m.group(1), where)

        return _TOKEN_RE.sub(sub, value)

    def _ref_literal(self, inner: str, where: str) -> str:
        self.warn_once(
            "literal",
            "has ${...} in its values; Claude Desktop does not expand variables, so they were kept as literal "
            "text (write ${NAME} instead of $${NAME} in the output to have the gateway expand them)",
        )
        return "$${" + inner + "}"

    def _ref_claude_code(self, inner: str, where: str) -> str:
        if _CLAUDE_REF_RE.match(inner):
            return "${" + inner + "}"
        self.warn(f"{where}: ${{{inner}}} is not a variable reference the gateway understands; kept as literal text")
        return "$${" + inner + "}"

    def _ref_editor(self, inner: str, where: str) -> str:
        client = LABELS[self.fmt]
        if inner.startswith("env:"):
            name = inner[4:]
            if _ENV_NAME_RE.match(name):
                return "${" + name + "}"
            self.warn(f"{where}: ${{{inner}}} names an environment variable the gateway cannot read; kept as literal text")
            return "$${" + inner + "}"
        if inner.startswith("input:"):
            input_id = inner[6:]
            name = env_name(input_id)
            spec = self.inputs.get(input_id)
            if spec is None:
                self.warn(f"{where}: ${{input:{input_id}}} is not declared in \"inputs\"; it became ${{{name}}}")
                why = f"{client} input \"{input_id}\""
            else:
                description = spec.get("description") if isinstance(spec, dict) else None
                why = f"{client} input \"{input_id}\"" + (f": {description}" if isinstance(description, str) else "")
            self.need(name, why)
            return "${" + name + "}"
        if inner in ("workspaceFolder", "workspaceFolderBasename"):
            if self.workspace is None:
                self.warn_once(
                    "workspace",
                    f"uses ${{{inner}}}, but this file belongs to no particular project; it became "
                    "${WORKSPACE_FOLDER} (or pass --project DIR to fill in the directory)",
                )
                self.need("WORKSPACE_FOLDER", f"{client}'s ${{workspaceFolder}}: the project directory")
                return "${WORKSPACE_FOLDER}"
            value = self.workspace if inner == "workspaceFolder" else os.path.basename(self.workspace)
            return _escape(value)
        if inner == "userHome":
            return _escape(self.home)
        if inner in ("pathSeparator", "/"):
            return os.sep
        self.warn(
            f"{where}: ${{{inner}}} is a {client} variable that means nothing outside {client}; kept as literal "
            "text: edit it"
        )
        return "$${" + inner + "}"

    # Entries -------------------------------------------------------------

    def scalar(self, value: Any, where: str) -> str | None:
        """A value of env, headers or args as a string, or None (warned)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, str):
            return self.text(value, where)
        if value is None:
            self.warn(f"{where}: null (the client removes the variable); not imported")
        else:
            self.warn(f"{where}: expected a string, got a {type(value).__name__}; not imported")
        return None

    def string_map(self, value: Any, key: str, what: str) -> dict[str, str] | None:
        if not isinstance(value, dict):
            self.warn(f"{key}: expected a mapping; not imported")
            return None
        out: dict[str, str] = {}
        for k, v in value.items():
            where = f"{key}.{k}"
            bad_name = not k or "=" in k or "\n" in k or "\r" in k or (what == "header" and ":" in k)
            if bad_name:
                self.warn(f"{key}: {json.dumps(k)} is not a valid {what} name; not imported")
                continue
            s = self.scalar(v, where)
            if s is None:
                continue
            if "\n" in s or "\r" in s:
                self.warn(f"{where}: the value has a line break, which the gateway does not accept; not imported")
                continue
            if isinstance(v, str):
                self.imported.secret(v, s)
            out[k] = s
        return out

    def entry(self, raw: Any) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            self.warn("not a mapping; skipped")
            return None
        handled = {"type", "command", "args", "env", "cwd", "url", "headers", "disabled"}
        kind = raw.get("type")
        if kind is None:
            kind = "http" if "url" in raw and "command" not in raw else "stdio"
        if not isinstance(kind, str) or kind not in ("stdio", "http", "sse", "streamable-http", "streamableHttp"):
            self.warn(
                f"type {json.dumps(kind)}: the gateway speaks to stdio, http (Streamable HTTP) and sse servers; skipped"
            )
            return None
        out: dict[str, Any] = {}
        if kind == "stdio":
            if "url" in raw or "headers" in raw:
                self.warn("a stdio server with \"url\" or \"headers\": those were not imported")
            command = raw.get("command")
            if not isinstance(command, str) or not command.strip():
                self.warn("no command (the program to start); skipped")
                return None
            out["command"] = self.text(command, "command")
            if "args" in raw:
                args = raw["args"]
                if not isinstance(args, list):
                    self.warn("args: expected a list; skipped (starting it without its arguments would be wrong)")
                    return None
                converted = []
                for i, a in enumerate(args):
                    s = self.scalar(a, f"args[{i}]") if a is not None else None
                    if s is None:
                        self.warn(f"args[{i}] cannot be imported; skipped (starting it without it would be wrong)")
                        return None
                    if isinstance(a, str):
                        self.imported.secret(a, s)
                    converted.append(s)
                if converted:
                    out["args"] = converted
            if "env" in raw:
                env = self.string_map(raw["env"], "env", "environment variable")
                if env:
                    out["env"] = env
            if "cwd" in raw:
                cwd = raw["cwd"]
                if not isinstance(cwd, str) or not cwd:
                    self.warn("cwd: expected a directory; not imported")
                else:
                    cwd = self.text(cwd, "cwd")
                    if not os.path.isabs(os.path.expanduser(cwd)) and "${" not in cwd:
                        if self.workspace is not None:
                            cwd = _escape(os.path.normpath(os.path.join(self.workspace, cwd)))
                        else:
                            self.warn("cwd is relative: the gateway reads it relative to the output file's directory")
                    out["cwd"] = cwd
        else:
            for key in ("command", "args", "env", "cwd"):
                if key in raw:
                    self.warn(f"an HTTP server with \"{key}\": not imported")
            url = raw.get("url")
            if not isinstance(url, str) or not url:
                self.warn("no url; skipped")
                return None
            url = self.text(url, "url")
            if "${" not in url.replace("$${", ""):
                parts = split_url(url.replace("$$", "$"))
                if parts is not None and parts.scheme in ("unix", "pipe"):
                    self.warn(f"url: a {parts.scheme}: socket address; the gateway reaches servers over http:// and https:// only; skipped")
                    return None
                if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                    self.warn("url: not an http:// or https:// address; skipped")
                    return None
            if kind == "sse":
                out["type"] = "sse"
            elif "type" not in raw and _path_ends_in_sse(url):
                out["type"] = "sse"
                self.warn(
                    f"{LABELS[self.fmt]} does not say which HTTP transport; the address ends in /sse, so the legacy "
                    "HTTP+SSE transport was chosen (type: sse); change it to type: http for Streamable HTTP"
                )
            else:
                out["type"] = "http"
            out["url"] = url
            if "headers" in raw:
                headers = self.string_map(raw["headers"], "headers", "header")
                if headers:
                    out["headers"] = headers
        if "disabled" in raw:
            if raw["disabled"] is True:
                out["disabled"] = True
            elif raw["disabled"] is not False:
                self.warn("disabled: expected true or false; not imported")
        explained = {
            "envFile": "the gateway does not read env files: copy the variables the server needs into env",
            "oauth": "the gateway does not do OAuth for a server: give it a token in headers (Authorization: Bearer ${TOKEN})",
            "auth": "the gateway does not do OAuth for a server: give it a token in headers (Authorization: Bearer ${TOKEN})",
            "headersHelper": "the gateway does not run a command for headers: put them in headers (with ${VAR} for secrets)",
            "dev": "VS Code's development mode (watch, debug) has no equivalent in the gateway",
        }
        unknown = []
        for key in raw:
            if key in handled:
                continue
            if key in explained:
                self.warn(f"{key} was not imported: {explained[key]}")
            else:
                unknown.append(key)
        if unknown:
            self.warn(f"not imported (no equivalent in the gateway): {', '.join(sorted(unknown))}")
        return out


# --- the formats ---------------------------------------------------------------


def _servers_of(mapping: Any, where: str, imported: Imported) -> list[tuple[str, Any]]:
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        imported.warnings.append(f"{where}: expected a mapping of servers; nothing imported from it")
        return []
    return list(mapping.items())


def _norm(path: str) -> str:
    return path.rstrip("/\\") or path


def _claude_code(path: str, data: dict[str, Any], project: str | None, imported: Imported) -> list[tuple[str, Any]]:
    entries = _servers_of(data.get("mcpServers"), "mcpServers", imported)
    projects = data.get("projects")
    if not isinstance(projects, dict):
        if project is not None:
            raise ImportFailure(
                "usage",
                f"{path} has no \"projects\" (it is a project's .mcp.json, not ~/.claude.json): --project does not apply",
            )
        return entries
    with_servers = {
        k: list(v["mcpServers"])
        for k, v in projects.items()
        if isinstance(v, dict) and isinstance(v.get("mcpServers"), dict) and v["mcpServers"]
    }
    if project is None:
        if entries or with_servers:
            imported.notes.append(f"imported the user scope ({len(entries)} server(s), the top-level \"mcpServers\")")
        if with_servers:
            lines = [f"    {p}: {', '.join(names)}" for p, names in sorted(with_servers.items())]
            imported.notes.append(
                f"{len(with_servers)} project(s) have servers of their own (Claude Code's local scope); add one "
                "project's servers with --project PATH:\n" + "\n".join(lines)
            )
        return entries
    wanted = {_norm(project), _norm(os.path.abspath(project)), _norm(os.path.realpath(project))}
    key = next((k for k in projects if _norm(k) in wanted), None)
    if key is None:
        known = "".join(f"\n    {p}" for p in sorted(with_servers)) or " none"
        raise ImportFailure(
            "usage", f"{path} has no project {os.path.abspath(project)}; projects with servers:{known}"
        )
    spec = projects[key]
    local = _servers_of(spec.get("mcpServers") if isinstance(spec, dict) else None, f"projects[{key}].mcpServers", imported)
    imported.notes.append(f"imported the user scope ({len(entries)} server(s)) and project {key} ({len(local)} server(s))")
    merged = dict(entries)
    for name, entry in local:
        if name in merged:
            imported.notes.append(f"{name}: the project's server replaces the user-scope server of the same name")
        merged[name] = entry
    mcp_json = os.path.join(key, ".mcp.json")
    if os.path.isfile(mcp_json):
        imported.notes.append(
            f"{mcp_json} (Claude Code's project scope) may have more servers: import it on its own with "
            f"`twisted-mcp import {mcp_json}`"
        )
    return list(merged.items())


def _workspace(path: str, marker: str, project: str | None, home: str) -> str | None:
    if project is not None:
        return os.path.abspath(project)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.basename(directory) == marker:
        root = os.path.dirname(directory)
        if os.path.abspath(root) != os.path.abspath(home):
            return root
    return None


def import_config(
    path: str,
    fmt: str = "auto",
    project: str | None = None,
    home: str | None = None,
) -> Imported:
    """
    Read the client configuration at C{path} and convert its servers.

    @raise ImportFailure: when the file cannot be read or is not a client
        configuration, or C{project} does not fit it.
    """
    home = home if home is not None else os.path.expanduser("~")
    data, duplicates = read_source(path)
    if fmt == "auto":
        fmt, reason = detect(path, data)
    else:
        reason = "--from"
        if not isinstance(data, dict):
            raise ImportFailure("data", f"{path}: not an MCP client configuration (expected a JSON object at the top)")
    imported = Imported(source=path, format=fmt, reason=reason)
    for key in duplicates:
        imported.warnings.append(
            f"the key {json.dumps(key)} appears more than once in the file; the last one counts (as in the client)"
        )
    inputs: dict[str, Any] = {}
    workspace: str | None = None
    if fmt == "claude-desktop":
        if project is not None:
            raise ImportFailure("usage", "--project does not apply to a Claude Desktop configuration")
        if not isinstance(data.get("mcpServers"), dict):
            raise ImportFailure("data", f"{path}: no \"mcpServers\" mapping, so not a Claude Desktop configuration")
        entries = _servers_of(data["mcpServers"], "mcpServers", imported)
    elif fmt == "claude-code":
        if not isinstance(data.get("mcpServers"), dict) and not isinstance(data.get("projects"), dict):
            raise ImportFailure(
                "data", f"{path}: neither \"mcpServers\" nor \"projects\", so not a Claude Code configuration"
            )
        entries = _claude_code(path, data, project, imported)
    elif fmt == "cursor":
        if not isinstance(data.get("mcpServers"), dict):
            raise ImportFailure("data", f"{path}: no \"mcpServers\" mapping, so not a Cursor configuration")
        entries = _servers_of(data["mcpServers"], "mcpServers", imported)
        workspace = _workspace(path, ".cursor", project, home)
    elif fmt == "vscode":
        section = data
        if not isinstance(data.get("servers"), dict) and isinstance(data.get("mcp"), dict):
            section = data["mcp"]  # settings.json
        elif isinstance(data.get("servers"), dict):
            extra = sorted(set(data) - {"servers", "inputs", "$schema"})
            if extra:
                imported.warnings.append(f"top-level keys not imported: {', '.join(extra)}")
        if not isinstance(section.get("servers"), dict):
            raise ImportFailure(
                "data", f"{path}: no \"servers\" mapping (nor \"mcp\": {{\"servers\"}}), so not a VS Code configuration"
            )
        entries = _servers_of(section["servers"], "servers", imported)
        declared = section.get("inputs")
        for spec in declared if isinstance(declared, list) else []:
            if isinstance(spec, dict) and isinstance(spec.get("id"), str):
                inputs[spec["id"]] = spec
        workspace = _workspace(path, ".vscode", project, home)
    else:
        raise ImportFailure("usage", f"unknown format {fmt!r} (expected one of: auto, {', '.join(FORMATS)})")

    converter = _Converter(imported, fmt, workspace, home, inputs)
    converted: list[tuple[str, dict[str, Any]]] = []
    for name, raw in entries:
        converter.server = name
        out = converter.entry(raw)
        if out is not None:
            converted.append((name, out))
    converter.server = ""
    _name(imported, converted)
    if not entries:
        imported.warnings.append("no servers found in the file")
    return imported


def safe_name(name: str) -> str:
    """A server name the gateway accepts, close to C{name}."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", name)
    s = re.sub(r"_{2,}", "_", s)  # never the separator
    s = s.strip("-")
    return s or "server"


def _name(imported: Imported, converted: list[tuple[str, dict[str, Any]]]) -> None:
    """Give each server a valid, unique name; valid names are kept as they are."""
    taken = {n for n, _ in converted if NAME_RE.match(n) and SEPARATOR not in n}
    for name, entry in converted:
        if NAME_RE.match(name) and SEPARATOR not in name:
            imported.servers[name] = entry
            continue
        base = safe_name(name)
        candidate, i = base, 2
        while candidate in taken:
            candidate, i = f"{base}-{i}", i + 1
        taken.add(candidate)
        why = (
            f"a server name may not contain {SEPARATOR!r} (it separates server and tool)"
            if NAME_RE.match(name)
            else "a server name may use only A-Z a-z 0-9 _ -"
        )
        extra = f"; {base!r} was taken" if candidate != base else ""
        imported.warnings.append(f"server {json.dumps(name)} renamed to {candidate!r} ({why}{extra})")
        imported.renamed[candidate] = name
        imported.servers[candidate] = entry


# --- checking and writing ------------------------------------------------------


def references(node: Any) -> set[str]:
    """Environment variables C{node}'s strings read without a default."""
    found: set[str] = set()
    for s in _strings(node):
        for m in _GATEWAY_REF_RE.finditer(s):
            if m.group(1) and m.group(2) is None:
                found.add(m.group(1))
    return found


def _flat(node: Any, path: str) -> Any:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _flat(v, _join(path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _flat(v, f"{path}[{i}]")
    else:
        yield path, node


def validate(imported: Imported, base_dir: str, environ: Mapping[str, str]) -> None:
    """
    Check the servers with the gateway's own loader.  Variables that are not
    set here get a stand-in value for the check (the gateway needs them when
    it starts, not now); a problem in a value that reads one of them is
    reported as not checked.  A server that does not pass for another reason
    is kept with C{disabled: true} and a warning naming the problem.

    @raise ImportFailure: for a problem that concerns no server.
    """
    missing = {v for v in references(imported.servers) if v not in environ}
    env = {**environ, **{v: "stand-in" for v in missing}}
    reported: set[str] = set()
    while True:
        try:
            build({"mcpServers": imported.servers}, imported.source, env, base_dir)
            return
        except ConfigError as e:
            problems = e.problems
        progress = False
        fatal = []
        for problem in problems:
            name = next(
                (
                    n
                    for n in imported.servers
                    if any(problem.startswith(_join("mcpServers", n) + c) for c in (".", "[", ": "))
                ),
                None,
            )
            if name is None:
                fatal.append(problem)
                continue
            entry = imported.servers[name]
            prefix = _join("mcpServers", name)
            unset = set()
            for p, v in _flat(entry, prefix):
                if problem.startswith(p + ": ") and isinstance(v, str):
                    unset |= references(v) & missing
            if unset:
                if problem not in reported:
                    reported.add(problem)
                    key = problem[len(prefix) :].split(": ", 1)[0].lstrip(".")
                    imported.warnings.append(
                        f"{name}: {key} could not be checked: it reads {', '.join(sorted(unset))}, not set here"
                    )
                continue
            if entry.get("disabled"):
                fatal.append(problem)
                continue
            entry["disabled"] = True
            progress = True
            imported.warnings.append(imported.redact(f"{name}: imported with disabled: true, fix it first: {problem}"))
        if fatal:
            raise ImportFailure(
                "data",
                "the result does not pass the gateway's checks:\n"
                + "\n".join(f"  - {imported.redact(p)}" for p in fatal),
            )
        if not progress:
            return


def _path_ends_in_sse(url: str) -> bool:
    """Whether the address names the legacy transport's usual C{/sse} endpoint."""
    parts = split_url(url)
    return parts is not None and parts.path.rstrip("/").endswith("/sse")


def describe(entry: dict[str, Any]) -> str:
    """One line for the summary: never a value that may hold a secret."""
    if "command" in entry:
        n = len(entry.get("args", []))
        text = f"stdio, {entry['command'].replace('$$', '$')}" + (f" ({n} argument(s))" if n else "")
    else:
        # Only the origin: some services put a key in the path or the query.
        parts = split_url(entry["url"].replace("$$", "$"))
        if parts is None:
            shown = "an unreadable address"
        elif parts.hostname and "${" not in parts.netloc:
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            shown = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        else:
            shown = "an address read from the environment"
        kind = "legacy HTTP+SSE" if entry.get("type") == "sse" else "Streamable HTTP"
        text = f"{kind} at {shown}"
    if entry.get("disabled"):
        text += " (disabled)"
    return text


def render(imported: Imported) -> str:
    """The gateway configuration, as YAML."""
    import yaml

    source = re.sub(r"[\r\n]", " ", os.path.abspath(imported.source))
    header = [
        f"# twisted-mcp gateway configuration, imported from {source}",
        f"# ({LABELS[imported.format]}) by `twisted-mcp import`. Check it with `twisted-mcp check-config FILE`.",
    ]
    names = sorted(references(imported.servers))
    if names:
        header.append(f"# The gateway needs these environment variables: {', '.join(names)}")
    body = yaml.safe_dump(
        {"mcpServers": imported.servers}, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096
    )
    return "\n".join(header) + "\n" + body
