"""
Tests for L{twisted_mcp.config}: loading YAML and JSON, variable
expansion, and problems reported with their key paths.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import DEFAULT_INHERIT_ENV, Config, ConfigError, parse_text
from twisted_mcp.config.loader import build, expand, load


class ConfigTestCase(SynchronousTestCase):
    def write(self, text: str, suffix: str = ".yaml") -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "gateway" + suffix)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def problems(self, text: str, suffix: str = ".yaml", environ: dict[str, str] | None = None) -> list[str]:
        path = self.write(text, suffix)
        e = self.assertRaises(ConfigError, load, path, {} if environ is None else environ)
        self.assertEqual(e.source, path)
        self.assertIn(f"{len(e.problems)} problem(s)", str(e))
        return e.problems

    def assertProblem(self, problems: list[str], path: str, *words: str) -> None:
        """One of C{problems} is about C{path} and mentions every word."""
        for p in problems:
            if p.startswith(path + ": ") and all(w in p for w in words):
                return
        self.fail(f"no problem about {path!r} mentioning {words!r} in {problems!r}")


class LoadTests(ConfigTestCase):
    def test_yaml(self) -> None:
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        path = self.write(
            f"""
gateway:
  separator: "--"
  callTimeout: 12
  restartMaxDelay: 30
  inheritEnv: [PATH, HOME]
mcpServers:
  zeta:
    command: uvx
    args: [mcp-server-time, --local-timezone, UTC, 8080]
    env: {{TZ: UTC, PORT: 8080}}
    cwd: {workdir}
    discoveryTimeout: 5
  alpha:
    command: node
"""
        )
        config = load(path, environ={})
        self.assertIsInstance(config, Config)
        self.assertEqual(config.source, path)
        self.assertEqual(config.gateway.separator, "--")
        self.assertEqual(config.gateway.callTimeout, 12.0)
        self.assertEqual(config.gateway.inheritEnv, ("PATH", "HOME"))
        self.assertEqual([s.name for s in config.servers], ["alpha", "zeta"])
        alpha, zeta = config.servers
        self.assertEqual(alpha.command, "node")
        self.assertEqual(alpha.args, ())
        self.assertEqual(dict(alpha.env), {})
        self.assertIsNone(alpha.cwd)
        self.assertEqual(zeta.command, "uvx")
        self.assertEqual(zeta.args, ("mcp-server-time", "--local-timezone", "UTC", "8080"))
        self.assertEqual(dict(zeta.env), {"TZ": "UTC", "PORT": "8080"})
        self.assertEqual(zeta.cwd, workdir)
        # Server settings: its own, else the gateway's, else the default.
        self.assertEqual(zeta.discoveryTimeout, 5.0)
        self.assertEqual(zeta.callTimeout, 12.0)
        self.assertEqual(zeta.restartMaxDelay, 30.0)
        self.assertEqual(alpha.discoveryTimeout, 30.0)

    def test_claudeDesktopJson(self) -> None:
        data = {
            "mcpServers": {
                "time": {
                    "command": "uvx",
                    "args": ["mcp-server-time", "--local-timezone=Europe/Paris"],
                    "env": {"LOG_LEVEL": "debug"},
                }
            }
        }
        config = load(self.write(json.dumps(data, indent=2), ".json"), environ={})
        (server,) = config.servers
        self.assertEqual(server.name, "time")
        self.assertEqual(server.command, "uvx")
        self.assertEqual(server.args, ("mcp-server-time", "--local-timezone=Europe/Paris"))
        self.assertEqual(dict(server.env), {"LOG_LEVEL": "debug"})
        self.assertEqual(config.gateway.inheritEnv, DEFAULT_INHERIT_ENV)

    def test_jsonTextInYamlFile(self) -> None:
        config = load(self.write('{"mcpServers": {"a": {"command": "x"}}}'), environ={})
        self.assertEqual([s.name for s in config.servers], ["a"])

    def test_disabled(self) -> None:
        config = load(
            self.write("mcpServers:\n  old: {disabled: true}\n  new: {command: x, disabled: false}\n"),
            environ={},
        )
        self.assertEqual([s.name for s in config.servers], ["new"])
        self.assertEqual(config.disabled, ("old",))

    def test_relativeCwdAgainstConfigDirectory(self) -> None:
        path = self.write("mcpServers:\n  a: {command: x, cwd: work}\n")
        base = os.path.dirname(os.path.abspath(path))
        os.makedirs(os.path.join(base, "work"))
        config = load(path, environ={})
        self.assertEqual(config.servers[0].cwd, os.path.join(base, "work"))
        # Not against the process's current directory.
        self.assertNotEqual(os.path.abspath("work"), config.servers[0].cwd)

    def test_relativeCwdMissing(self) -> None:
        path = self.write("mcpServers:\n  a: {command: x, cwd: work}\n")
        base = os.path.dirname(os.path.abspath(path))
        e = self.assertRaises(ConfigError, load, path, {})
        self.assertProblem(e.problems, "mcpServers.a.cwd", "no such directory", os.path.join(base, "work"))

    def test_emptyServers(self) -> None:
        config = load(self.write("mcpServers: {}\n"), environ={})
        self.assertEqual(config.servers, ())

    def test_unreadable(self) -> None:
        path = self.mktemp()
        e = self.assertRaises(ConfigError, load, path, {})
        self.assertIn("cannot read", e.problems[0])

    def test_notUtf8(self) -> None:
        path = self.write("")
        with open(path, "wb") as f:
            f.write(b"mcpServers:\n  a: {command: \xff}\n")
        e = self.assertRaises(ConfigError, load, path, {})
        self.assertIn("UTF-8", e.problems[0])


class ExpansionTests(ConfigTestCase):
    def test_expand(self) -> None:
        env = {"HOME": "/home/u", "EMPTY": ""}
        self.assertEqual(expand("${HOME}/x", env), ("/home/u/x", []))
        self.assertEqual(expand("${NOPE:-fallback}", env), ("fallback", []))
        self.assertEqual(expand("${HOME:-fallback}", env), ("/home/u", []))
        self.assertEqual(expand("${EMPTY:-fallback}", env), ("fallback", []))
        self.assertEqual(expand("${EMPTY}", env), ("", []))
        self.assertEqual(expand("${NOPE:-}", env), ("", []))
        self.assertEqual(expand("cost: $$5", env), ("cost: $5", []))
        self.assertEqual(expand("$${HOME}", env), ("${HOME}", []))
        self.assertEqual(expand("$HOME", env), ("$HOME", []))

    def test_expandProblems(self) -> None:
        text, problems = expand("${NOPE}", {})
        self.assertEqual(text, "")
        self.assertEqual(len(problems), 1)
        self.assertIn("NOPE", problems[0])
        for bad in ["${", "${1X}", "${A B}"]:
            _, problems = expand(bad, {})
            self.assertEqual(len(problems), 1, bad)
            self.assertIn("malformed", problems[0])

    def test_expandedInConfig(self) -> None:
        path = self.write(
            """
mcpServers:
  gh:
    command: ${NODE_BIN:-npx}
    args: ["-y", "${PKG}", "price$$"]
    env:
      GITHUB_TOKEN: ${GH_TOKEN}
      LITERAL: "$${GH_TOKEN}"
"""
        )
        config = load(path, environ={"PKG": "server-github", "GH_TOKEN": "t0k"})
        (server,) = config.servers
        self.assertEqual(server.command, "npx")
        self.assertEqual(server.args, ("-y", "server-github", "price$"))
        self.assertEqual(dict(server.env), {"GITHUB_TOKEN": "t0k", "LITERAL": "${GH_TOKEN}"})

    def test_buildEnviron(self) -> None:
        config = build({"mcpServers": {"a": {"command": "${CMD}"}}}, "inline", environ={"CMD": "run"})
        self.assertEqual(config.servers[0].command, "run")

    def test_unsetVariableNamesKeyPath(self) -> None:
        problems = self.problems("mcpServers:\n  gh:\n    command: x\n    env: {TOKEN: '${GH_TOKEN}'}\n")
        self.assertProblem(problems, "mcpServers.gh.env.TOKEN", "GH_TOKEN", "not set")

    def test_unsetVariableInListNamesIndex(self) -> None:
        problems = self.problems("mcpServers:\n  gh:\n    command: x\n    args: [a, '${X}']\n")
        self.assertProblem(problems, "mcpServers.gh.args[1]", "X")


class ProblemTests(ConfigTestCase):
    def test_unknownTopLevelKey(self) -> None:
        problems = self.problems("mcpServers: {}\nservers: {}\n")
        self.assertProblem(problems, "servers", "unknown key", "mcpServers")

    def test_missingMcpServers(self) -> None:
        self.assertProblem(self.problems("gateway: {}\n"), "mcpServers", "missing")

    def test_unknownServerKey(self) -> None:
        problems = self.problems("mcpServers:\n  time: {command: x, argz: []}\n")
        self.assertProblem(problems, "mcpServers.time.argz", "unknown key", "args")

    def test_unknownGatewayKey(self) -> None:
        problems = self.problems("gateway: {timeout: 3}\nmcpServers: {}\n")
        self.assertProblem(problems, "gateway.timeout", "unknown key")

    def test_wrongTypes(self) -> None:
        problems = self.problems(
            """
gateway:
  callTimeout: soon
  maxMessageBytes: 1.5
  separator: "::"
mcpServers:
  time:
    command: [uvx]
    args: [ok, {bad: 1}, true]
    env: [A=B]
    discoveryTimeout: -1
    cwd: 7
"""
        )
        self.assertProblem(problems, "gateway.callTimeout", "expected a number", "soon")
        self.assertProblem(problems, "gateway.maxMessageBytes", "whole number")
        self.assertProblem(problems, "gateway.separator", "A-Z")
        self.assertProblem(problems, "mcpServers.time.command", "expected a string", "list")
        self.assertProblem(problems, "mcpServers.time.args[1]", "expected a string", "mapping")
        self.assertProblem(problems, "mcpServers.time.args[2]", "expected a string", "boolean")
        self.assertProblem(problems, "mcpServers.time.env", "expected a mapping")
        self.assertProblem(problems, "mcpServers.time.discoveryTimeout", "from 0.1 to 3600")
        self.assertProblem(problems, "mcpServers.time.cwd", "expected a string")

    def test_argsNotAList(self) -> None:
        problems = self.problems("mcpServers:\n  time: {command: x, args: --flag}\n")
        self.assertProblem(problems, "mcpServers.time.args", "expected a list")

    def test_envValues(self) -> None:
        problems = self.problems("mcpServers:\n  time: {command: x, env: {A: null, B: [1], 'C=D': x}}\n")
        self.assertProblem(problems, "mcpServers.time.env.A", "expected a string", "null")
        self.assertProblem(problems, "mcpServers.time.env.B", "expected a string")
        self.assertProblem(problems, 'mcpServers.time.env["C=D"]', "not a valid environment variable name")

    def test_missingCommand(self) -> None:
        problems = self.problems("mcpServers:\n  time: {args: [x]}\n")
        self.assertProblem(problems, "mcpServers.time.command", "missing")

    def test_missingCommandAmongOthers(self) -> None:
        problems = self.problems("extra: 1\nmcpServers:\n  time: {args: [x]}\n  web: {type: http}\n")
        self.assertProblem(problems, "extra", "unknown key")
        self.assertProblem(problems, "mcpServers.time.command", "missing")
        self.assertProblem(problems, "mcpServers.web.url", "missing")

    def test_emptyCommand(self) -> None:
        self.assertProblem(self.problems("mcpServers:\n  time: {command: ''}\n"), "mcpServers.time.command", "non-empty")

    def test_badServerNames(self) -> None:
        problems = self.problems(
            "mcpServers:\n  'my server': {command: x}\n  a__b: {command: x}\n  'caf\u00e9': {command: x}\n  42: {command: x}\n"
        )
        self.assertProblem(problems, 'mcpServers["my server"]', "A-Z a-z 0-9 _ -")
        self.assertProblem(problems, "mcpServers.a__b", "separator")
        self.assertProblem(problems, 'mcpServers["caf\\u00e9"]', "A-Z a-z 0-9 _ -")
        self.assertProblem(problems, "mcpServers.42", "must be a string")

    def test_serverNotAMapping(self) -> None:
        self.assertProblem(self.problems("mcpServers:\n  time: uvx\n"), "mcpServers.time", "expected a mapping")

    def test_serversNotAMapping(self) -> None:
        self.assertProblem(self.problems("mcpServers: [a, b]\n"), "mcpServers", "expected a mapping")

    def test_topLevelNotAMapping(self) -> None:
        e = self.assertRaises(ConfigError, build, ["a"], "inline", {})
        self.assertIn("expected a mapping", e.problems[0])

    def test_nonExistentCwd(self) -> None:
        missing = os.path.join(os.path.abspath(self.mktemp()), "nowhere")
        problems = self.problems(f"mcpServers:\n  time: {{command: x, cwd: '{missing}'}}\n")
        self.assertProblem(problems, "mcpServers.time.cwd", "no such directory", missing)

    def test_httpType(self) -> None:
        problems = self.problems("mcpServers:\n  remote: {type: http}\n")
        self.assertProblem(problems, "mcpServers.remote.url", "missing")
        problems = self.problems("mcpServers:\n  remote: {type: carrier-pigeon, command: x}\n")
        self.assertProblem(problems, "mcpServers.remote.type", "stdio", "http", "sse")
        problems = self.problems("mcpServers:\n  remote: {url: 'ftp://x/mcp', command: x}\n")
        self.assertProblem(problems, "mcpServers.remote.url", "unknown key")
        problems = self.problems("mcpServers:\n  remote: {url: 'ftp://x/mcp'}\n")
        self.assertProblem(problems, "mcpServers.remote.url", "http:// or https://")
        problems = self.problems("mcpServers:\n  remote: {type: sse, url: 'http://h/sse', command: x, tls: {keyFile: k}}\n")
        self.assertProblem(problems, "mcpServers.remote.command", "unknown key")
        self.assertProblem(problems, "mcpServers.remote.tls.keyFile", "no such file")

    def test_httpServers(self) -> None:
        config = build(
            {
                "mcpServers": {
                    "a": {"url": "https://example.test/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}},
                    "b": {"type": "sse", "url": "http://127.0.0.1:9/sse", "callTimeout": 5, "maxConnections": 4},
                    "c": {"type": "http", "url": "http://127.0.0.1:9/mcp"},
                }
            },
            "inline",
            {"TOKEN": "t0k"},
        )
        a, b, c = config.servers
        self.assertEqual((a.transport, a.url, dict(a.headers)), ("streamable", "https://example.test/mcp", {"Authorization": "Bearer t0k"}))
        self.assertEqual((b.transport, b.callTimeout, b.maxConnections), ("sse", 5.0, 4))
        self.assertEqual(c.transport, "streamable")

    def test_inventoryLimits(self) -> None:
        """gateway.maxKillSwitchEntries and mcpServers.<name>.maxRequests:
        read, checked, and named in their errors."""
        config = build(
            {"gateway": {"maxKillSwitchEntries": 10}, "mcpServers": {"a": {"url": "http://127.0.0.1:9/mcp", "maxRequests": 8}}},
            "inline",
            {},
        )
        self.assertEqual((config.gateway.maxKillSwitchEntries, config.servers[0].maxRequests), (10, 8))
        problems = self.problems(
            "gateway: {maxKillSwitchEntries: 0}\nmcpServers:\n  a: {url: 'http://127.0.0.1:9/mcp', maxRequests: 0}\n"
            "  b: {command: x, maxRequests: 3}\n"
        )
        self.assertProblem(problems, "gateway.maxKillSwitchEntries", "from 1 to 1000000", "got 0")
        self.assertProblem(problems, "mcpServers.a.maxRequests", "from 1 to 100000", "got 0")
        self.assertProblem(problems, "mcpServers.b.maxRequests", "unknown key")

    def test_urlCredentialsBecomeAnAuthorizationHeader(self) -> None:
        config = build({"mcpServers": {"a": {"url": "https://bob:s3cr%40t@example.test/mcp"}}}, "inline", {})
        (a,) = config.servers
        self.assertEqual(a.url, "https://example.test/mcp")
        self.assertEqual(dict(a.headers), {"Authorization": "Basic Ym9iOnMzY3JAdA=="})  # bob:s3cr@t

    def test_urlCredentialsAndAnAuthorizationHeaderAreRefused(self) -> None:
        problems = self.problems(
            "mcpServers:\n  a: {url: 'https://bob:s3cret@example.test/mcp', headers: {authorization: 'Bearer x'}}\n"
        )
        self.assertProblem(problems, "mcpServers.a.url", "headers.Authorization")
        self.assertNotIn("s3cret", "\n".join(problems))

    def test_aBadUrlIsQuotedWithoutItsSecrets(self) -> None:
        problems = self.problems("mcpServers:\n  a: {url: 'ftp://bob:s3cret@example.test/k3y-in-path'}\n")
        self.assertProblem(problems, "mcpServers.a.url", "http:// or https://")
        self.assertNotIn("s3cret", "\n".join(problems))
        self.assertNotIn("k3y-in-path", "\n".join(problems))

    def test_anUnreadableUrlIsAProblemOfItsKey(self) -> None:
        """
        An address urlsplit refuses (an unclosed '[', a bad IPv6 host), a
        port out of range or not a number, or a host IDNA cannot encode is a
        config problem naming mcpServers.NAME.url, shown without its secrets.
        """
        for url in (
            "https://bob:s3cret@example[com/mcp",
            "http://[::1/mcp",
            "http://[zz]/mcp",
            "http://example.test:99999/mcp",
            "http://example.test:port/mcp",
            "http://\u00e9..x/mcp",
        ):
            problems = self.problems(json.dumps({"mcpServers": {"a": {"url": url}}}), ".json")
            self.assertProblem(problems, "mcpServers.a.url", "valid host and port")
            self.assertNotIn("s3cret", "\n".join(problems))

    def test_disabledNotABoolean(self) -> None:
        problems = self.problems("mcpServers:\n  a: {command: x, disabled: 'yes please'}\n")
        self.assertProblem(problems, "mcpServers.a.disabled", "true or false")

    def test_duplicateYamlKeys(self) -> None:
        problems = self.problems("mcpServers:\n  time:\n    command: a\n    command: b\n")
        self.assertEqual(len(problems), 1)
        self.assertIn("mcpServers.time.command: duplicate key", problems[0])
        self.assertIn("line 4", problems[0])

    def test_duplicateServers(self) -> None:
        problems = self.problems("mcpServers:\n  time: {command: a}\n  time: {command: b}\n")
        self.assertIn("mcpServers.time: duplicate key", problems[0])

    def test_duplicateJsonKeys(self) -> None:
        problems = self.problems('{"mcpServers": {"a": {"command": "x", "command": "y"}}}', ".json")
        self.assertIn("duplicate key 'command'", problems[0])

    def test_badSyntax(self) -> None:
        self.assertIn("not valid YAML", self.problems("mcpServers: [\n")[0])
        self.assertIn("not valid JSON", self.problems("{", ".json")[0])

    def test_allProblemsAtOnce(self) -> None:
        problems = self.problems(
            """
extra: 1
gateway: {callTimeout: 0}
mcpServers:
  time:
    command: [x]
    args: [a, {}]
  'bad name': {command: x}
  web: {type: http}
"""
        )
        self.assertProblem(problems, "extra", "unknown key")
        self.assertProblem(problems, "gateway.callTimeout", "from 0.1")
        self.assertProblem(problems, "mcpServers.time.command", "expected a string")
        self.assertProblem(problems, "mcpServers.time.args[1]", "expected a string")
        self.assertProblem(problems, 'mcpServers["bad name"]', "A-Z")
        self.assertProblem(problems, "mcpServers.web.url", "missing")
        self.assertEqual(len(problems), 6, problems)

    def test_unhashableYamlKey(self) -> None:
        self.assertRaises(ConfigError, parse_text, "mcpServers:\n  ? [a, b]\n  : {command: x}\n", "c.yaml")

    def test_duplicateYamlKeyNamesPath(self) -> None:
        problems = self.problems("mcpServers:\n  time:\n    command: a\n    command: b\n")
        self.assertIn("mcpServers.time.command", problems[0])



def test_a_yaml_syntax_error_names_the_place_not_the_text():
    from twisted_mcp.config import ConfigError, parse_text

    text = 'mcpServers:\n  gh: {url: "https://x", headers: {Authorization: "Bearer ghp_S3CRET"}\n  b: ['
    try:
        parse_text(text, "gw.yaml")
    except ConfigError as e:
        rendered = e.render()
    else:
        raise AssertionError("no error")
    assert "line 3" in rendered and "ghp_S3CRET" not in rendered


def test_urls_and_arguments_are_shown_without_their_secrets():
    from twisted_mcp.urls import shown_args, shown_url

    mcp = "/[path 88fe637b]"  # the first 8 hex digits of sha256("/mcp")
    assert shown_url("https://user:pw@api.example.com:8443/mcp?key=abc#x") == f"https://api.example.com:8443{mcp}?…"
    assert shown_url("http://127.0.0.1:9/mcp") == f"http://127.0.0.1:9{mcp}"
    assert shown_url("http://127.0.0.1:9/") == "http://127.0.0.1:9/"
    assert shown_args(["-y", "postgresql://app:pa$$w0rd@db:5432/app", "--flag"]) == "-y postgresql://db:5432/[path f53b52ad] --flag"
