"""What every subcommand of the twisted-mcp command shares: exit codes (sysexits.h), loading the config, logging to stderr."""

from __future__ import annotations

import sys
from typing import Any

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
