"""What every subcommand of the twisted-mcp command shares: exit codes (sysexits.h), loading the config, logging to stderr."""

from __future__ import annotations

import sys
from typing import Any, Callable

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78

TOKEN_ENV = "TWISTED_MCP_ADMIN_TOKEN"


def _load(path: str) -> Any:
    from twisted_mcp.config import ConfigError
    from twisted_mcp.config.loader import load

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


def with_backends(config: Any, policy_of: Callable[[Any], Any], work: Callable[[Any], None]) -> bool:
    """
    What the commands that look at the servers themselves (C{pin},
    C{tools}) do: start every backend of C{config} in this process, wait for
    their first discovery, call C{work(gateway)}, stop them (children
    reaped) whatever happened.

    @param policy_of: the policy to install, given the reactor (one without
        the config's audit trail: looking is not an event of the record).
    @return: whether it ran to the end (False: it failed, and the reason was
        logged to stderr).
    """
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    async def run(reactor: Any) -> None:
        from twisted_mcp.backends.stdio import stop_all
        from twisted_mcp.service import GatewayService

        service = GatewayService(config, reactor, reactor)
        service.gateway.policy = policy_of(reactor)
        for b in service.backends:
            b.startService()
        service.gateway.start()
        try:
            await service.gateway.when_ready()
            work(service.gateway)
        finally:
            await stop_all(service.backends)

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        return not e.code
    return True
