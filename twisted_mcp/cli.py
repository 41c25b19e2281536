"""
The C{twisted-mcp} command: operations beside the gateway itself.

    twisted-mcp check-config FILE            validate a configuration (exit 0 or 78)
    twisted-mcp pin --config FILE            approve the current tool definitions
    twisted-mcp audit verify --config FILE   check the audit trail's hash chain
    twisted-mcp connect ENDPOINT             bridge stdin/stdout to a gateway's socket

Exit codes follow sysexits: 0 success, 64 bad usage, 65 the data is bad
(a broken audit chain), 69 a service is unavailable, 78 a bad config.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twisted_mcp import __version__

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_CONFIG = 78


def _load(path: str) -> Any:
    from twisted_mcp.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as e:
        sys.stderr.write(e.render() + "\n")
        raise SystemExit(EX_CONFIG)


def _log_to_stderr(level: str = "warn") -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])], redirectStandardIO=False
    )


def pin(args: argparse.Namespace) -> int:
    """Start every backend, wait for discovery, write the lock file, stop."""
    from twisted.internet import task

    from twisted_mcp.policy.pinning import read_lock, write_lock
    from twisted_mcp.policy.pipeline import Policy
    from twisted_mcp.policy.rules import PolicyConfig

    config = _load(args.config)
    lock = config.policy.lock_file or os.path.join(os.path.dirname(os.path.abspath(args.config)), "tools.lock.json")
    _log_to_stderr("warn")
    outcome: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        from twisted_mcp.service import GatewayService

        service = GatewayService(config, reactor, reactor)
        # Pinning itself must not review (and warn about) what it is approving.
        service.gateway.policy = Policy(PolicyConfig(), config.gateway.separator, reactor)
        for b in service.backends:
            b.startService()
        service.gateway.start()
        try:
            await service.gateway.when_ready()
            catalog = service.gateway.catalog
            outcome["down"] = sorted(b.name for b in service.backends if b.state.value != "up")
            entries = [
                (name, e.backend.name, e.tool, {**e.definition, "name": e.tool})
                for name, e in catalog.entries.items()
            ]
            try:
                before = read_lock(lock)
            except (OSError, ValueError):
                before = {}
            # Keep the approvals of servers that are not up now.
            kept = [
                (name, pin["backend"], pin.get("tool", ""), pin)
                for name, pin in before.items()
                if pin.get("backend") in outcome["down"] and name not in catalog.entries
            ]
            after = write_lock(lock, entries, kept)
            outcome["added"] = sorted(set(after) - set(before))
            outcome["removed"] = sorted(set(before) - set(after))
            outcome["changed"] = sorted(n for n in after if n in before and before[n].get("digest") != after[n]["digest"])
            outcome["count"] = len(after)
        finally:
            from twisted_mcp.stdio_backend import stop_all

            await stop_all(service.backends)

    def main(reactor: Any) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(run(reactor))

    try:
        task.react(main)
    except SystemExit as e:
        if e.code:
            sys.stderr.write("twisted-mcp pin: failed (see above); the lock file was not changed\n")
            return EX_UNAVAILABLE
    print(f"{lock}: {outcome['count']} tool(s) pinned")
    for label in ("added", "changed", "removed"):
        for name in outcome[label]:
            print(f"  {label}: {name}")
    if outcome["down"]:
        sys.stderr.write(
            "warning: these servers were not up; their earlier approvals were kept, and their "
            f"new or changed tools are not pinned: {', '.join(outcome['down'])}\n"
        )
        return EX_UNAVAILABLE
    return EX_OK


def check_config(args: argparse.Namespace) -> int:
    """Validate a configuration without starting anything."""
    config = _load(args.file)  # exits 78, listing every problem
    print(f"{args.file}: OK, {len(config.servers)} server(s)")
    for s in config.servers:
        if hasattr(s, "command"):
            print(f"  {s.name}: stdio, {s.command} {' '.join(s.args)}".rstrip())
        else:
            print(f"  {s.name}: {'legacy HTTP+SSE' if s.transport == 'sse' else 'Streamable HTTP'}, {s.url}")
    for name in config.disabled:
        print(f"  {name}: disabled")
    return EX_OK


def audit_verify(args: argparse.Namespace) -> int:
    from twisted_mcp.policy.audit import verify

    config = _load(args.config)
    if config.audit is None or config.audit.sink == "none":
        sys.stderr.write(f"{args.config}: no audit trail is configured (no `audit:` section)\n")
        return EX_CONFIG
    try:
        result = verify(config.audit)
    except Exception as e:
        sys.stderr.write(f"cannot read the audit trail: {e}\n")
        return EX_UNAVAILABLE
    if result.ok:
        print(f"OK: {result.records} record(s), the hash chain is intact")
        return EX_OK
    if result.unavailable:
        sys.stderr.write(f"cannot read the audit trail: {result.message}\n")
        return EX_UNAVAILABLE
    print(f"BROKEN after {result.records} good record(s): {result.message}")
    return EX_DATAERR


def connect(args: argparse.Namespace) -> int:
    """Bridge stdin/stdout to a running gateway's socket."""
    from twisted.internet import stdio, task
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import clientFromString
    from twisted.internet.interfaces import IHalfCloseableProtocol
    from twisted.internet.protocol import Protocol
    from zope.interface import implementer

    outcome: dict[str, Any] = {"code": EX_OK}

    class Remote(Protocol):
        def __init__(self, done: Deferred[None]) -> None:
            self.done = done

        def dataReceived(self, data: bytes) -> None:
            local.transport.write(data)

        def connectionLost(self, reason: Any = None) -> None:
            local.transport.loseConnection()
            if not self.done.called:
                self.done.callback(None)

    @implementer(IHalfCloseableProtocol)
    class Local(Protocol):
        remote: Any = None

        def dataReceived(self, data: bytes) -> None:
            self.remote.transport.write(data)

        def readConnectionLost(self) -> None:
            # The client is done sending: tell the gateway, which answers
            # what is in flight, then closes.
            try:
                self.remote.transport.loseWriteConnection()
            except AttributeError:
                self.remote.transport.loseConnection()

        def writeConnectionLost(self) -> None:
            self.remote.transport.loseConnection()

        def connectionLost(self, reason: Any = None) -> None:
            pass

    local = Local()

    async def run(reactor: Any) -> None:
        done: Deferred[None] = Deferred()
        factory = __import__("twisted.internet.protocol", fromlist=["Factory"]).Factory.forProtocol(lambda: Remote(done))
        try:
            remote = await clientFromString(reactor, args.endpoint).connect(factory)
        except Exception as e:
            sys.stderr.write(f"twisted-mcp connect: cannot connect to {args.endpoint}: {e}\n")
            outcome["code"] = EX_UNAVAILABLE
            return
        local.remote = remote
        stdio.StandardIO(local, reactor=reactor)
        await done

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit:
        pass
    return int(outcome["code"])


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
    v.set_defaults(func=audit_verify)
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
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EX_USAGE
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
