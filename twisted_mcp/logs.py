"""
Log output for twistd: twistd's own text format, or one JSON object per line.

twistd picks its log observer in C{UnixAppLogger._getLogObserver}
(twisted/scripts/_twistd_unix.py): C{--syslog}, else C{--logfile -} (stdout,
refused for a daemon), else stdout when C{-n} is given without a log file,
else a L{LogFile} (C{--logfile} or C{twistd.log}) that rotates at 1 MB and on
SIGUSR1.  L{observer_for} makes the same choice of destination and writes
either exactly what twistd writes (C{"text"}) or JSON lines (C{"json"}).

JSON lines are plain C{json} objects, one per line and nothing else (not the
RFC 7464 record separator of L{twisted.logger.jsonFileLogObserver}, which jq
and Loki handle badly)::

    {"time": "2025-06-01T12:00:00.123Z", "level": "info",
     "namespace": "twisted_mcp.backend", "message": "backend time is up",
     "backend": "time"}

Keys: C{time} (ISO 8601, UTC, milliseconds), C{level} (debug, info, warn,
error, critical), C{namespace}, C{message} (the event formatted by
L{twisted.logger.formatEvent}), C{system} (the legacy C{log_system}, when set
and not C{"-"}), C{failure} (the traceback, when the event carries one), then
every field of the event whose name does not start with C{log_}: as-is when
JSON can encode it, its C{repr} otherwise.  A field whose name is one of the
keys above is written as C{field_<name>}.  Non-ASCII text is escaped
(C{\\uXXXX}), so a line can always be written whatever the encoding of the
destination.  The observer never raises: an event it cannot format becomes a
line saying so, and a write that fails is dropped.

Redaction (L{redact}) is a safety net only.  The rule is that the gateway
never passes a secret (a token, a password, an Authorization header, an
environment value) to a log call.  The net replaces the value of any field
whose name looks secret (L{twisted_mcp.redaction.is_secret_name}, the rule
the audit trail uses for arguments too), in nested dicts and lists too, with
C{"[redacted]"} before the event is formatted, in both formats; it cannot see
a secret inside a message text or an attribute reached by the format string
(C{"{self.token}"}).

Under twistd, the plugin's C{makeService} returns C{attach(service, options)}:
when twistd adds the service to its Application, L{install} sets the
Application's L{ILogObserver} component, which twistd's C{AppLogger.start}
uses in place of its own observer.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime, timezone
from typing import IO, Any, Callable, Mapping

from constantly import NamedConstant
from twisted.logger import ILogObserver, LogLevel, formatEvent, textFileLogObserver
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.python.reflect import safe_repr
from zope.interface import implementer

from twisted_mcp.redaction import is_secret_name

__all__ = [
    "FORMATS",
    "REDACTED",
    "LogObserver",
    "attach",
    "format_json",
    "install",
    "log_format",
    "observer_for",
    "redact",
]

FORMATS = ("text", "json")

REDACTED = "[redacted]"

# The keys format_json writes itself; a field of the same name becomes field_<name>.
_RESERVED = frozenset({"time", "level", "namespace", "message", "system", "failure"})

# Keys that twisted.python.log.msg adds to a legacy event, already expressed
# in the JSON line as time, level, message, system and failure.
_LEGACY_KEYS = frozenset({"message", "time", "isError", "format", "system", "failure"})

_MAX_DEPTH = 8


def redact(event: Mapping[str, Any]) -> dict[str, Any]:
    """
    A copy of C{event} in which the value of every field whose name matches
    L{is_secret_name} is C{"[redacted]"}; dicts, lists and tuples among the
    values are searched too (copies, never changed in place).  Entries of
    C{log_flattened} (events that went through L{twisted.logger.flattenEvent})
    for such a field are redacted as well.

    This is a safety net: the gateway never passes secrets to log calls.
    """
    out: dict[str, Any] = {}
    for key, value in event.items():
        if key == "log_flattened" and isinstance(value, dict):
            out[key] = {
                k: (REDACTED if isinstance(k, str) and _secret(re.split(r"[.\[!:]", k, maxsplit=1)[0]) else v)
                for k, v in value.items()
            }
        elif isinstance(key, str) and key.startswith("log_"):
            out[key] = value
        elif _secret(key):
            out[key] = REDACTED
        else:
            out[key] = _redact_value(value, 0)
    return out


def log_format(value: str) -> str:
    """
    The coerce function of the plugin's C{--log-format} option: C{"text"} or
    C{"json"} (any case); L{ValueError} otherwise (usage reports it).
    """
    fmt = value.strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"--log-format must be text or json, not {value!r}")
    return fmt


log_format.coerceDoc = "Must be text or json."  # type: ignore[attr-defined]


def _secret(key: Any) -> bool:
    return isinstance(key, str) and is_secret_name(key)


def _redact_value(value: Any, depth: int) -> Any:
    """C{value} with secret-looking keys redacted; C{value} itself when none are."""
    if depth >= _MAX_DEPTH:
        return value
    if type(value) is dict:
        copy: dict[Any, Any] = {}
        changed = False
        for k, v in value.items():
            new = REDACTED if _secret(k) else _redact_value(v, depth + 1)
            changed = changed or new is not v
            copy[k] = new
        return copy if changed else value
    if type(value) in (list, tuple):
        items = [_redact_value(v, depth + 1) for v in value]
        if any(new is not old for new, old in zip(items, value)):
            return type(value)(items)
    return value


def _iso(t: Any) -> str:
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        t = time.time()
    try:
        stamp = datetime.fromtimestamp(t, timezone.utc)
    except (OverflowError, OSError, ValueError):
        stamp = datetime.now(timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=True, allow_nan=False)


def _jsonable(value: Any) -> Any:
    try:
        _dumps(value)
    except (TypeError, ValueError, RecursionError):
        return safe_repr(value)
    return value


def _traceback(failure: Any) -> str:
    try:
        return str(failure.getTraceback())
    except BaseException as e:
        return f"(unable to obtain traceback: {safe_repr(e)})"


def format_json(event: Mapping[str, Any]) -> str:
    """
    One JSON line (ending in a newline) for C{event}, as described in the
    module's docstring; an empty string for an event with nothing to say (no
    message, no failure, no fields: twistd's text format skips those too).

    It does not redact (the observer does, before calling it) and may raise
    for a broken event (the observer catches that).
    """
    legacy = isinstance(event.get("message"), tuple) and "isError" in event
    message = formatEvent(event)
    failure = event.get("log_failure")
    drop: set[str] = set()
    if legacy:
        drop = set(_LEGACY_KEYS)
        legacy_failure = event.get("failure")
        if failure is None and event.get("isError") and isinstance(legacy_failure, Failure) and not event["message"]:
            # twisted.python.log.err: the legacy text is why + traceback.
            failure = legacy_failure
            why = event.get("why")
            message = str(why) if why else "Unhandled Error"
            drop.add("why")
    level = event.get("log_level")
    line: dict[str, Any] = {
        "time": _iso(event.get("log_time")),
        "level": level.name if isinstance(level, NamedConstant) else "info",
        "namespace": str(event.get("log_namespace", "-")),
        "message": message,
    }
    system = event.get("log_system")
    if system is not None and system != "-":
        line["system"] = safe_repr(system) if not isinstance(system, str) else system
    if failure is not None:
        line["failure"] = _traceback(failure)
    fields: dict[str, Any] = {}
    for key, value in event.items():
        if not isinstance(key, str):
            key = safe_repr(key)
        if key.startswith("log_") or key in drop:
            continue
        fields["field_" + key if key in _RESERVED else key] = value
    if not message and failure is None and not fields:
        return ""
    line.update(fields)
    try:
        return _dumps(line) + "\n"
    except (TypeError, ValueError, RecursionError):
        pass
    for key, value in fields.items():
        line[key] = _jsonable(value)
    return _dumps(line) + "\n"


def _unformattable(event: Mapping[str, Any], error: BaseException) -> str:
    try:
        namespace = event.get("log_namespace", "-")
        namespace = namespace if isinstance(namespace, str) else safe_repr(namespace)
    except BaseException:
        namespace = "-"
    try:
        details = safe_repr(dict(event))
    except BaseException:
        details = "(unreadable)"
    return (
        _dumps(
            {
                "time": _iso(None),
                "level": "error",
                "namespace": "twisted_mcp.logs",
                "message": f"unable to format a log event from {namespace}: {safe_repr(error)}",
                "event": details,
            }
        )
        + "\n"
    )


@implementer(ILogObserver)
class LogObserver:
    """
    Redacts each event (L{redact}), formats it with C{format} and writes the
    result to C{out}, flushing after each event.  Never raises.

    @ivar out: where the lines go (a text stream or a L{LogFile}).
    @ivar format: C{"text"} or C{"json"}.
    """

    def __init__(self, out: Any, format: str) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown log format {format!r}: use one of {', '.join(FORMATS)}")
        self.out = out
        self.format = format
        if format == "text":
            # Exactly what twistd writes: its observer, fed a redacted copy.
            self._text = textFileLogObserver(out)

    def __call__(self, event: Mapping[str, Any]) -> None:
        try:
            clean = redact(event)
        except Exception as e:
            # Withhold the event rather than risk writing a secret.
            clean = {
                "log_format": "unable to redact a log event ({error}); event withheld",
                "error": safe_repr(e),
                "log_level": LogLevel.error,
                "log_namespace": "twisted_mcp.logs",
                "log_time": time.time(),
            }
        if self.format == "text":
            try:
                self._text(clean)
            except Exception:
                pass
            return
        try:
            line = format_json(clean)
        except Exception as e:
            line = _unformattable(clean, e)
        if not line:
            return
        try:
            self.out.write(line)
            self.out.flush()
        except Exception:
            pass  # nowhere left to report it


def observer_for(fmt: str, logfile: str | None, nodaemon: bool, stream: IO[str] | None = None) -> LogObserver:
    """
    The log observer twistd would make (C{UnixAppLogger._getLogObserver},
    without C{--syslog}), writing format C{fmt} (C{"text"} or C{"json"}):

      - C{logfile} C{"-"}: standard output; for a daemon (C{nodaemon}
        false), L{SystemExit} with twistd's own message;
      - no C{logfile} and C{nodaemon}: standard output;
      - otherwise C{LogFile.fromFullPath(logfile or "twistd.log")}: rotated
        when it reaches 1 MB (LogFile's default; twistd has no option for
        it) and on SIGUSR1, unless a SIGUSR1 handler is already set.

    @param stream: used instead of C{sys.stdout} where twistd would use
        standard output (tests).  C{sys.stdout} is read now, as twistd does,
        before twistd redirects it into the log.  In the gateway's stdio
        mode file descriptor 1 already points at stderr by then.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    out: Any
    if logfile == "-":
        if not nodaemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        out = stream if stream is not None else sys.stdout
    elif nodaemon and not logfile:
        out = stream if stream is not None else sys.stdout
    else:
        from twisted.python.logfile import LogFile

        out = LogFile.fromFullPath(logfile or "twistd.log")
        _rotate_on_sigusr1(out)
    return LogObserver(out, fmt)


def _rotate_on_sigusr1(log_file: Any) -> None:
    """As twistd: rotate the file on SIGUSR1, unless something else handles SIGUSR1."""
    import signal

    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)


def install(application: Any, options: Mapping[str, Any]) -> ILogObserver | None:
    """
    Under twistd: set C{application}'s L{ILogObserver} component to
    C{observer_for(format, ...)} from twistd's C{--logfile} and C{-n}, so that
    twistd's C{AppLogger.start} logs with it (text as twistd writes it, or
    JSON lines; both with the redaction safety net).

    Nothing is done (and L{None} returned) when twistd's C{--logger} or C{--syslog} is given (they win, as
    in twistd), when the application already has an observer, when
    C{application} is not a L{Componentized}, or when C{options.parent} is not
    twistd's (C{twist}, whose own C{--log-format} option chooses, ignores the
    component).

    @param options: the plugin's options; C{options.parent} is twistd's
        C{ServerOptions}.
    @return: the observer installed, or L{None}.
    """
    fmt = options.get("log-format") or "text"
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    parent = getattr(options, "parent", None)
    if parent is None or "logfile" not in parent or "nodaemon" not in parent:
        return None
    if parent.get("logger") or parent.get("syslog"):
        return None
    if not isinstance(application, Componentized):
        return None
    if application.getComponent(ILogObserver, None) is not None:
        return None
    observer = observer_for(fmt, parent["logfile"], bool(parent["nodaemon"]))
    application.setComponent(ILogObserver, observer)
    return observer


def attach(service: Any, options: Mapping[str, Any]) -> Any:
    """
    Make C{service.setServiceParent(application)} call
    L{install}C{(application, options)} first, and return C{service}.

    twistd builds the Application only after C{makeService} returns
    (C{createOrGetApplication}: C{ser = plg.makeService(...)};
    C{application = service.Application(...)};
    C{ser.setServiceParent(application)}), and passes the Application itself
    (the L{Componentized}) to C{setServiceParent}, which adapts it to
    C{IServiceCollection} only inside; so this is where the plugin can reach it.
    """
    original: Callable[[Any], Any] = service.setServiceParent

    def setServiceParent(parent: Any) -> Any:
        install(parent, options)
        return original(parent)

    service.setServiceParent = setServiceParent
    return service
