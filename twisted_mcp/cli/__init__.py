"""
The C{twisted-mcp} command: operations beside the gateway itself.

    twisted-mcp check-config FILE            validate a configuration (exit 0 or 78)
    twisted-mcp pin --config FILE            approve the current tool definitions
    twisted-mcp audit verify --config FILE   check the audit trail's hash chain
    twisted-mcp audit checkpoint --config FILE [-o OUT]   a signed checkpoint of its head
    twisted-mcp audit init-db --config FILE [--dsn DSN] [--grant ROLE] [--print]
                                             create the PostgreSQL audit tables
    twisted-mcp connect ENDPOINT             bridge stdin/stdout to a gateway's socket
    twisted-mcp import SOURCE [--from FORMAT] [--project PATH] [-o OUT] [--force]
                                             turn a client's MCP config (Claude Desktop,
                                             Claude Code, Cursor, VS Code) into a gateway config
    twisted-mcp tools (--config FILE | --admin ADDR) [--principal N [--roles R,...]] [--client NAME]
                      [--profile NAME] [--search QUERY [--limit N] [--explain]] [--json]
                                             the tool list a principal and client get
                                             (mode, budget and its sources, names, search)
    twisted-mcp status --admin ADDR [--token-file PATH] [--json] [--strict]
                                             what a running gateway is doing
    twisted-mcp reload (--admin ADDR [--token-file PATH] | --pidfile PATH)
                                             re-read a running gateway's configuration
    twisted-mcp kill --admin ADDR (--principal N | --backend N | --tool N) [--off]
                                             set (or, with --off, lift) the kill switch
    twisted-mcp approve --admin ADDR (--tool NAME ... | --all)
                                             approve quarantined tools (pinning)
    twisted-mcp revoke --admin ADDR (--token-in PATH|- | --jti ID)
                                             refuse a bearer token from now on (every replica
                                             with state:; else this process, until it restarts)
    twisted-mcp login BACKEND --admin ADDR [--as PRINCIPAL] [--open]
                                             authorize an OAuth backend (auth: oauth) for a principal
    twisted-mcp logout BACKEND --admin ADDR [--as PRINCIPAL] [--revoke]
                                             forget (and revoke) a principal's tokens
    twisted-mcp tokens --admin ADDR [--as PRINCIPAL] [--backend NAME] [--json]
                                             the authorizations a gateway holds (never the tokens)

ADDR is the gateway's admin endpoint: a URL (http://127.0.0.1:9100) or the
Twisted endpoint string given to the gateway's --admin
(tcp:9100:interface=127.0.0.1, unix:/run/twisted-mcp/admin.sock).  The
bearer token comes from --token-file or the environment variable
TWISTED_MCP_ADMIN_TOKEN; it is never printed.

Exit codes follow sysexits:

    0   success
    64  bad usage (EX_USAGE)
    65  bad data: a broken audit chain, a file that is not a client config,
        a request the gateway refused as invalid (EX_DATAERR)
    66  an input file (SOURCE, --token-file, --pidfile) is missing (EX_NOINPUT)
    69  a service is unavailable: the admin endpoint cannot be reached or
        answers 5xx, the pid file names no gateway (EX_UNAVAILABLE)
    73  the output file exists (without --force) or cannot be created (EX_CANTCREAT)
    75  status --strict: the gateway answered, but not every backend is up (EX_TEMPFAIL)
    76  the admin endpoint answered something that is not the expected JSON (EX_PROTOCOL)
    77  the admin endpoint wants a (different) token, or the process may not
        be signalled (EX_NOPERM)
    78  a bad configuration, or a reload the gateway rejected (EX_CONFIG)

C{status} exits 0 when the gateway answered, even when some backend is not
up: it is a report, and says so on stderr ("N of M backends are not up").
Scripts that want a failure then use C{--strict} (exit 75, EX_TEMPFAIL:
backends restart by themselves, so try again later); load balancers use the
admin endpoint's C{/readyz}.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted_mcp import __version__
from twisted_mcp.cli._common import EX_USAGE, TOKEN_ENV
from twisted_mcp.cli.admin_client import approve, kill, reload, status
from twisted_mcp.cli.connect import connect
from twisted_mcp.cli.import_ import import_
from twisted_mcp.cli.local import audit_checkpoint, audit_init_db, audit_verify, check_config, pin
from twisted_mcp.cli.oauth import add_commands as add_oauth_commands
from twisted_mcp.cli.revoke import add_command as add_revoke_command
from twisted_mcp.cli.tools import add_command as add_tools_command


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # sysexits: bad usage is 64, not argparse's 2
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EX_USAGE)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="twisted-mcp",
        description="Operations for the twisted-mcp gateway (the gateway itself runs as `twistd mcp-gateway`).",
    )
    parser.add_argument("--version", action="version", version=f"twisted-mcp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "pin",
        help="approve the current tool definitions (write the lock file)",
        description="Start every configured MCP server, list its tools, and record a digest of each "
        "tool's full definition in the lock file (pinning.lockFile, default tools.lock.json beside the "
        "config). With pinning set to enforce, a tool that is new or differs from the lock is "
        "quarantined until you run this again.",
    )
    p.add_argument("--config", "-c", required=True, help="the gateway's configuration file")
    p.set_defaults(func=pin)
    a = sub.add_parser("audit", help="audit trail operations")
    a.set_defaults(func=lambda args: (a.print_help(sys.stderr), EX_USAGE)[1])
    asub = a.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    v = asub.add_parser(
        "verify",
        help="check the audit trail's hash chain",
        description="Read every record of the configured audit sink and check each record's digest "
        "and its link to the one before. Reports the first broken or missing link; exit code 65 "
        "when the chain is broken.",
    )
    v.add_argument("--config", "-c", required=True, help="the gateway's configuration file")
    v.add_argument("--key-file", help="the chain's key, instead of the one the config names (audit.keyFile...)")
    v.add_argument(
        "--checkpoint", metavar="FILE", help="a checkpoint (from `audit checkpoint`): the trail must still hold its record"
    )
    v.set_defaults(func=audit_verify)
    c = asub.add_parser(
        "checkpoint",
        help="write a signed checkpoint of the audit trail's head",
        description="Verify the trail, then write (to stdout, or to a new file with -o) a checkpoint of its last "
        "record signed with the chain's key. Kept where the gateway's host cannot write, it lets "
        "`audit verify --checkpoint FILE` detect records cut from the end of the trail, or an emptied trail.",
    )
    c.add_argument("--config", "-c", required=True, help="the gateway's configuration file")
    c.add_argument("--key-file", help="the chain's key, instead of the one the config names (audit.keyFile...)")
    c.add_argument("--output", "-o", help="write the checkpoint to this new file")
    c.set_defaults(func=audit_checkpoint)
    i = asub.add_parser(
        "init-db",
        help="create the PostgreSQL audit tables (a privileged, one-time step)",
        description="Create (or migrate) the tables of the postgres audit sink, as a role that may create "
        "tables, and with --grant give the gateway's role INSERT and SELECT on them and nothing else, so "
        "the gateway can add to its trail but never change or erase it. The gateway itself never creates "
        "or alters them.",
    )
    i.add_argument("--config", "-c", required=True, help="the gateway's configuration file")
    i.add_argument("--dsn", help="connect as this (privileged) role instead of the config's audit.dsn")
    i.add_argument("--grant", metavar="ROLE", help="the gateway's role: grant it INSERT and SELECT only")
    i.add_argument("--print", dest="print_sql", action="store_true", help="print the SQL instead of running it")
    i.set_defaults(func=audit_init_db)
    k = sub.add_parser(
        "check-config",
        help="validate a configuration file without starting anything",
        description="Exit 0 when FILE is a valid gateway configuration (listing its servers), or 78 "
        "listing every problem with its key path.",
    )
    k.add_argument("file", metavar="FILE")
    k.set_defaults(func=check_config)
    c = sub.add_parser(
        "connect",
        help="bridge stdin/stdout to a running gateway's socket",
        description="Connect to a gateway started with --listen and relay MCP messages between it and "
        "this command's stdin/stdout: an MCP client can launch this light command instead of a whole "
        "gateway. ENDPOINT is a Twisted client endpoint, e.g. unix:path=/run/twisted-mcp/gw.sock or "
        "tcp:host=127.0.0.1:port=8765.",
    )
    c.add_argument("endpoint", metavar="ENDPOINT")
    c.set_defaults(func=connect)
    i = sub.add_parser(
        "import",
        help="turn an MCP client's configuration into a gateway configuration",
        description="Read the MCP servers of a Claude Desktop, Claude Code, Cursor or VS Code configuration "
        "and write them as a gateway configuration (YAML, an mcpServers mapping). What cannot be converted "
        "is named in a warning; values (tokens in env and headers) are copied into the output, never "
        "printed. Variables the client would fill in (VS Code's ${input:ID}) become environment variables "
        "the gateway reads, listed at the end.",
    )
    i.add_argument(
        "source",
        metavar="SOURCE",
        help="the client's file: claude_desktop_config.json, ~/.claude.json, .mcp.json, ~/.cursor/mcp.json, "
        ".cursor/mcp.json, .vscode/mcp.json, or a VS Code settings.json",
    )
    i.add_argument(
        "--from",
        dest="from_",
        choices=("auto", "claude-desktop", "claude-code", "cursor", "vscode"),
        default="auto",
        help="the client the file belongs to (default: auto, from the file's name and contents)",
    )
    i.add_argument(
        "--project",
        metavar="PATH",
        help="Claude Code's ~/.claude.json: add this project's servers to the user-scope ones; VS Code and "
        "Cursor: the workspace folder that ${workspaceFolder} stands for (default: the directory holding "
        ".vscode or .cursor)",
    )
    i.add_argument("-o", "--output", metavar="OUT", help="write the configuration here, mode 0600 (default: standard output)")
    i.add_argument("--force", action="store_true", help="replace OUT if it exists")
    i.set_defaults(func=import_)

    def admin_options(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument(
            "--admin",
            metavar="ADDR",
            required=required,
            help="the gateway's admin endpoint: http://127.0.0.1:9100, or the endpoint given to its --admin "
            "(tcp:9100:interface=127.0.0.1, unix:/run/twisted-mcp/admin.sock)",
        )
        p.add_argument(
            "--token-file",
            metavar="PATH",
            help=f"a file holding the admin token (gateway.adminToken); default: the environment variable {TOKEN_ENV}",
        )
        p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="how long to wait for an answer (default 10)")

    st = sub.add_parser(
        "status",
        help="show what a running gateway is doing",
        description="Ask a running gateway's admin endpoint for its state: backends (state, tools, restarts, "
        "breaker), tools, clients, kill switch, quarantined tools. Exit 0 when it answered (a warning on "
        "stderr says which backends are not up), 69 when it cannot be reached or answers 5xx, 77 when it "
        "wants a (different) token.",
    )
    admin_options(st)
    st.add_argument("--json", action="store_true", help="print the gateway's JSON answer as it is")
    st.add_argument("--strict", action="store_true", help="exit 75 unless the gateway is ready and every backend is up")
    st.set_defaults(func=status)

    r = sub.add_parser(
        "reload",
        help="make a running gateway re-read its configuration",
        description="With --admin: ask the gateway to re-read its configuration and print what changed "
        "(exit 0) or why the new configuration was rejected (exit 78; the running one stays). With "
        "--pidfile: send SIGHUP to the gateway whose process id is in the file (as systemctl reload does); "
        "the outcome is in the gateway's log.",
    )
    how = r.add_mutually_exclusive_group(required=True)
    how.add_argument("--admin", metavar="ADDR", help="the gateway's admin endpoint (see `status`)")
    how.add_argument("--pidfile", metavar="PATH", help="the gateway's pid file (twistd --pidfile)")
    r.add_argument("--token-file", metavar="PATH", help=f"the admin token's file (default: ${TOKEN_ENV}); with --admin")
    r.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="how long to wait for an answer (default 30)")
    r.set_defaults(func=reload)

    kl = sub.add_parser(
        "kill",
        help="disable (or, with --off, enable again) a principal, a backend or a tool on a running gateway",
        description="Set the kill switch of a running gateway: new calls by the principal, to the backend's "
        "tools or to the tool are refused, calls in flight finish. --off lifts it.",
    )
    admin_options(kl)
    what = kl.add_mutually_exclusive_group(required=True)
    what.add_argument("--principal", metavar="NAME")
    what.add_argument("--backend", metavar="NAME")
    what.add_argument("--tool", metavar="NAME", help="an exposed tool name (server__tool)")
    kl.add_argument("--off", action="store_true", help="enable it again")
    kl.set_defaults(func=kill)

    ap = sub.add_parser(
        "approve",
        help="approve quarantined tools on a running gateway (pinning)",
        description="Approve tools that pinning quarantined (new, or changed since pinned): their current "
        "definitions are recorded in the lock file and they can be called.",
    )
    admin_options(ap)
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--tool", metavar="NAME", action="append", help="an exposed tool name; repeat for more")
    which.add_argument("--all", action="store_true", help="every quarantined tool")
    ap.set_defaults(func=approve)
    add_revoke_command(sub, admin_options)
    add_oauth_commands(sub, admin_options)
    add_tools_command(sub)

    args = parser.parse_args(argv)
    if args.command == "tools" and args.config and args.token_file:
        parser.error("tools: --token-file goes with --admin, not --config")
    if getattr(args, "pidfile", None) and args.token_file:
        parser.error("reload: --token-file goes with --admin, not --pidfile")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EX_USAGE
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
