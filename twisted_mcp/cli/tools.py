"""
C{twisted-mcp tools}: the tool list a principal, using a client, on a
profile, gets (design §7.1), from a gateway this command starts itself
(C{--config}) or from a running one (C{--admin}, its C{GET /tools}).

Both paths build the same report (L{twisted_mcp.ops.tools_report}) with
the gateway's own code, and print it with L{render} (or as JSON), so what
is printed cannot drift from what clients get.

With C{--config}, backends that do not come up are named on stderr and the
command exits 69 (EX_UNAVAILABLE), after printing what the others offer:
the list is then not the one a client would get with every server up.
With C{--admin}, the running gateway's list is what clients get now: the
command warns about backends that are not up and exits 0, as C{status}.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted_mcp.cli._common import EX_OK, EX_UNAVAILABLE, EX_USAGE, TOKEN_ENV, _load, _log_to_stderr, with_backends


def roles_of(text: str | None) -> tuple[str, ...] | None:
    """The roles of C{--roles a,b} (None: not given)."""
    return None if text is None else tuple(r.strip() for r in text.split(",") if r.strip())


def query_of(args: argparse.Namespace) -> Any:
    """The L{ToolsQuery} of the command's options."""
    from twisted_mcp.ops.tools_report import ToolsQuery

    return ToolsQuery(
        principal=args.principal,
        roles=roles_of(args.roles),
        client=args.client,
        profile=args.profile,
        search=args.search,
        limit=args.limit,
        explain=args.explain,
    )


def _marks(row: dict[str, Any]) -> str:
    marks = row.get("marks") or []
    return f"  [{', '.join(marks)}]" if marks else ""


def _tool_line(row: dict[str, Any], first: str) -> str:
    """One tool: C{first} (its position or rank), the name shown, and where it comes from."""
    if row.get("shaped") is None:
        return f"  {first:>4}  {row['name']}  (the gateway's own){_marks(row)}"
    shown = row["name"]
    shaped = f"  (alias of {row['shaped']})" if shown != row["shaped"] else ""
    return f"  {first:>4}  {shown}{shaped}  <- {row['backend']}: {row['tool']}{_marks(row)}"


def render(report: dict[str, Any]) -> list[str]:
    """The report as lines a person reads."""
    principal = report["principal"]
    if principal.get("allAccess"):
        who = "no identity is configured: every permission"
    else:
        who = f"from {principal.get('source')}; roles: {', '.join(principal.get('roles') or []) or 'none'}"
    out = [
        f"principal: {principal['name']} ({who})",
        f"client: {report.get('client') or '(none given)'}",
        f"profile: {report['profile']}",
        f"mode: {report['mode']}: {len(report['surface'])} tool(s) listed of {report['visible']} the principal may use "
        f"({report['selected']} in the view)",
        f"budget (from {report['budget']['source']}; names of at most {report['budget']['nameLimit']} characters):",
    ]
    notes: dict[str, str] = {}
    for key, number in report["budget"]["keys"].items():
        value = "no limit" if number["value"] is None else number["value"]
        out.append(f"  {key}: {value}  ({number['source']})")
        if number.get("verified"):
            notes.setdefault(number["verified"], number["source"].split(", plus ")[0])
    out += [f"  {source} rests on: {note}" for note, source in notes.items()]
    out.append("tools listed:")
    out += [_tool_line(row, str(row["position"])) for row in report["surface"]]
    if report["mode"] != "full":
        what = "found with search" if report["mode"] == "search" else "those past the cut are not listed"
        out.append(f"every tool the principal may use ({what}):")
        out += [_tool_line(row, str(row["position"])) for row in report["catalog"]]
    if report.get("withheld"):
        out.append("in the view, not for this principal:")
        out += [f"        {w['shaped']}  <- {w['backend']}: {w['tool']}: {w['reason']}" for w in report["withheld"]]
    search = report.get("search")
    if search is not None:
        out.append(f"search {search['query']!r} (limit {search['limit']}, over {search['total']} tool(s)):")
        if not search["results"]:
            out.append("  no result")
        for row in search["results"]:
            out.append(_tool_line(row, str(row["rank"])) + f"  score {row['score']}")
            if "explain" in row:
                fields = ", ".join(f"{field} {value}" for field, value in row["explain"].items()) or "no field matched"
                out.append(f"        {fields}")
    return out


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(render(report)))


def _warn_down(report: dict[str, Any]) -> None:
    if report.get("down"):
        sys.stderr.write(f"warning: these servers are not up, and their tools are not shown: {', '.join(report['down'])}\n")


def tools(args: argparse.Namespace) -> int:
    """Print the tool list a principal and client get on a profile."""
    if args.explain and args.search is None:
        sys.stderr.write("twisted-mcp tools: --explain goes with --search\n")
        return EX_USAGE
    if args.limit is not None and args.search is None:
        sys.stderr.write("twisted-mcp tools: --limit goes with --search\n")
        return EX_USAGE
    if args.admin:
        from twisted_mcp.cli.admin_client import tools_from_admin

        return tools_from_admin(args, _print, _warn_down)
    return _from_config(args)


def _from_config(args: argparse.Namespace) -> int:
    """Start the config's backends as C{pin} does, wait for discovery, report, stop."""
    from twisted_mcp.ops.tools_report import ReportProblem, tools_report
    from twisted_mcp.policy.pipeline import Policy
    from twisted_mcp.policy.rules import PolicyConfig

    config = _load(args.config)
    query = query_of(args)
    if args.profile is not None and args.profile not in config.profiles:
        known = ", ".join(sorted(config.profiles)) or "none are configured"
        sys.stderr.write(f"twisted-mcp tools: --profile {args.profile}: no such profile (profiles: {known})\n")
        return EX_USAGE
    from twisted_mcp.ops.tools_report import principal_named

    try:
        known_roles = config.policy.roles if config.policy is not None else {}
        principal = principal_named(config.identity, args.principal, roles_of(args.roles), known_roles)
    except ReportProblem as e:
        sys.stderr.write(f"twisted-mcp tools: {e.message}\n")
        return EX_USAGE
    _log_to_stderr("warn")
    outcome: dict[str, Any] = {}

    def look(gateway: Any) -> None:
        try:
            outcome["report"] = tools_report(gateway, config.identity, query)
        except ReportProblem as e:
            outcome["problem"] = e.message

    # The config's rules (roles, kill switch, pins), without its audit
    # trail: looking is not an event of the gateway's record.
    rules = config.policy if config.policy is not None else PolicyConfig()
    identify = None if config.identity is None else (lambda peer: principal)
    if not with_backends(config, lambda reactor: Policy(rules, config.gateway.separator, reactor, identify), look):
        sys.stderr.write("twisted-mcp tools: failed (see above)\n")
        return EX_UNAVAILABLE
    if "problem" in outcome:
        sys.stderr.write(f"twisted-mcp tools: {outcome['problem']}\n")
        return EX_USAGE
    report = outcome["report"]
    _print(report, args.json)
    _warn_down(report)
    return EX_UNAVAILABLE if report["down"] else EX_OK


def add_command(sub: Any) -> None:
    """The C{tools} subcommand's parser."""
    t = sub.add_parser(
        "tools",
        help="show the tool list a principal and client get (mode, budget, names, search)",
        description="Show the tool list a principal, using a client, on a profile, gets: the mode (full, search "
        "or truncate), the budget with where each number came from (the profile, a clients.match row, a "
        "built-in row with what it rests on, or the default), then each tool as listed (its alias, shaped "
        "name, backend and own name, marks: renamed, overridden, quarantined, pinned). In search mode the "
        "whole list the principal may use follows. --search ranks tools as the search tool does. With --config "
        "the command starts the servers itself (as pin does; exit 69 when some do not come up, after printing "
        "what the others offer); with --admin it asks a running gateway. Exit 64 for an unknown profile or "
        "principal, 78 for a bad config.",
    )
    where = t.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", "-c", help="the gateway's configuration file: start its servers and look")
    where.add_argument(
        "--admin",
        metavar="ADDR",
        help="a running gateway's admin endpoint (see `status`): what that process serves now",
    )
    t.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"with --admin: a file holding the admin token (default: the environment variable {TOKEN_ENV})",
    )
    t.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="with --admin: how long to wait (default 10)")
    t.add_argument(
        "--principal",
        metavar="NAME",
        help="a principal the config's identity section names (default: identity.principal, or the local "
        "principal when no identity is configured)",
    )
    t.add_argument(
        "--roles",
        metavar="ROLE[,ROLE]",
        help="instead of a principal of the identity section: one with these roles of roles: (named by "
        "--principal, e.g. a token's subject)",
    )
    t.add_argument("--client", metavar="NAME", help="the clientInfo.name the client announces (e.g. cursor-vscode, claude-code)")
    t.add_argument("--profile", metavar="NAME", help="a profile of profiles: (default: the default view)")
    t.add_argument("--search", metavar="QUERY", help="rank the tools for QUERY as the search tool does")
    t.add_argument("--limit", type=int, metavar="N", help="how many search results (default search.defaultLimit)")
    t.add_argument("--explain", action="store_true", help="with --search: each result's score per field")
    t.add_argument("--json", action="store_true", help="print the report as JSON (the admin endpoint's GET /tools)")
    t.set_defaults(func=tools)


__all__ = ["add_command", "query_of", "render", "tools"]
