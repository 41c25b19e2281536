"""
Log output for twistd: twistd's own text format, or one JSON object per line.

twistd picks its log observer in C{UnixAppLogger._getLogObserver}
(twisted/scripts/_twistd_unix.py): C{--syslog}, else C{--logfile -} (stdout,
refused for a daemon), else stdout when C{-n} is given without a log file,
else a L{LogFile} (C{--logfile} or C{twistd.log}) that rotates at 1 MB and on
SIGUSR1, and keeps every rotated file.  L{observer_for} makes the same choice
of destination and writes either exactly what twistd writes (C{"text"}) or
JSON lines (C{"json"}); its log file rotates at C{--log-max-bytes} and keeps
C{--log-keep} rotated files.

L{StderrLog} bounds what a stdio backend's stderr adds to the log: line
length and lines per second.

JSON lines are plain C{json} objects, one per line and nothing else (not the
RFC 7464 record separator of L{twisted.logger.jsonFileLogObserver}, which jq
and Loki handle badly)::

    {"time": "2025-06-01T12:00:00.123Z", "level": "info",
     "namespace": "twisted_mcp.backends.base", "message": "backend time is up",
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

Every text the observer writes from an event's fields is L{printable}: its
control characters are escaped (C{\\x1b}, C{\\n}) and it is cut after
L{MAX_FIELD_CHARS} characters, in both formats, because fields carry text
that clients and backends choose (C{clientInfo}, tool names, stderr lines).

Redaction (L{clean}) is a safety net only.  The rule is that the gateway
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
import threading
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
    "DEFAULT_KEEP",
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "MAX_FIELD_CHARS",
    "OPTIONS",
    "REDACTED",
    "LogObserver",
    "attach",
    "clean",
    "format_json",
    "install",
    "log_format",
    "log_keep",
    "log_max_bytes",
    "observer_for",
    "printable",
]

FORMATS = ("text", "json")

REDACTED = "[redacted]"

# The keys format_json writes itself; a field of the same name becomes field_<name>.
_RESERVED = frozenset({"time", "level", "namespace", "message", "system", "failure"})

# Keys that twisted.python.log.msg adds to a legacy event, already expressed
# in the JSON line as time, level, message, system and failure.
_LEGACY_KEYS = frozenset({"message", "time", "isError", "format", "system", "failure"})

_MAX_DEPTH = 8

#: twistd's --logfile: rotated at this size, keeping this many rotated files.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 10
MIN_MAX_BYTES = 1024
MAX_KEEP = 1000
_SIZE = re.compile(r"([0-9]+)\s*([kmg]i?b?|b?)", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, **{p + s: 1024 ** (i + 1) for i, p in enumerate("kmg") for s in ("", "b", "ib")}}

#: The most characters of one text field that a log line shows.
MAX_FIELD_CHARS = 8192

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def clean(event: Mapping[str, Any]) -> dict[str, Any]:
    """
    A copy of C{event} fit to be written: the value of every field whose
    name L{is_secret_name} calls secret is C{"[redacted]"}, and every text
    among the values is L{printable}.  Dicts, lists and tuples among the
    values are searched too (copies, never changed in place).  Entries of
    C{log_flattened} (events that went through L{twisted.logger.flattenEvent})
    are treated as their fields are, and so is C{log_text} (the text of a
    legacy C{log.msg}) unless it is an error's traceback.  The other C{log_}
    fields the logging system sets (format, namespace, failure...) are kept.

    Redaction is a safety net: the gateway never passes secrets to log calls.
    """
    out: dict[str, Any] = {}
    for key, value in event.items():
        if key == "log_flattened" and isinstance(value, dict):
            out[key] = {
                k: (REDACTED if isinstance(k, str) and _secret(re.split(r"[.\[!:]", k, maxsplit=1)[0]) else _clean_value(v, 0))
                for k, v in value.items()
            }
        elif key == "log_text" and not event.get("isError"):
            # The text of a legacy log.msg(...), which may quote anyone; an
            # error's is its traceback, which stays as it is.
            out[key] = _clean_value(value, 0)
        elif isinstance(key, str) and key.startswith("log_"):
            out[key] = value
        elif _secret(key):
            out[key] = REDACTED
        else:
            out[key] = _clean_value(value, 0)
    return out


def printable(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """
    C{text} as it may appear in a log line, whoever wrote it (a client's
    C{clientInfo}, a backend's tool names or stderr): cut after C{limit}
    characters, with a note of how many more there were, and with control
    characters (C0, DEL, C1), Unicode line and paragraph separators,
    bidirectional overrides and lone surrogates escaped as Python writes them
    (C{\\x1b}, C{\\n}, C{\\u202e}), so that no text can move the cursor of
    a terminal, forge a line of its own or make a line unwritable.
    """
    more = len(text) - limit
    if more > 0:
        text = text[:limit]
    text = _UNPRINTABLE.sub(_escape, text)
    return f"{text}...[{more} more characters]" if more > 0 else text


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


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


def log_max_bytes(value: str) -> int:
    """
    The coerce function of C{--log-max-bytes}: a size in bytes, with an
    optional binary suffix (C{K}, C{M}, C{G}, or C{KiB}, C{MiB}, C{GiB}; any
    case), at least L{MIN_MAX_BYTES}; L{ValueError} otherwise.
    """
    m = _SIZE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"--log-max-bytes must be a size such as 10485760, 512K or 10M, not {value!r}")
    size = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if size < MIN_MAX_BYTES:
        raise ValueError(f"--log-max-bytes must be at least {MIN_MAX_BYTES} bytes, not {value!r}")
    return size


log_max_bytes.coerceDoc = f"A size in bytes (K, M, G suffixes are powers of 1024), at least {MIN_MAX_BYTES}."  # type: ignore[attr-defined]


def log_keep(value: str) -> int:
    """The coerce function of C{--log-keep}: a whole number from 1 to L{MAX_KEEP}."""
    try:
        keep = int(value)
    except ValueError:
        raise ValueError(f"--log-keep must be a whole number, not {value!r}") from None
    if not 1 <= keep <= MAX_KEEP:
        raise ValueError(f"--log-keep must be from 1 to {MAX_KEEP}, not {keep}")
    return keep


log_keep.coerceDoc = f"A whole number from 1 to {MAX_KEEP}."  # type: ignore[attr-defined]

#: The plugin's log options, in L{twisted.python.usage.Options.optParameters} form.
OPTIONS = [
    [
        "log-format",
        None,
        "text",
        "How the log is written: text (twistd's own lines) or json (one JSON object per line "
        "with time, level, namespace, message, failure and the event's fields, such as "
        "request; for jq, Loki or a log shipper). It goes where twistd's log goes: with -n and "
        "no --logfile to standard output (stderr when serving MCP on stdin/stdout), otherwise "
        "to --logfile (default twistd.log), rotated by size (--log-max-bytes) and on SIGUSR1. "
        "twistd's --logger and --syslog take precedence.",
        log_format,
    ],
    [
        "log-max-bytes",
        None,
        DEFAULT_MAX_BYTES,
        "Rotate twistd's --logfile when it reaches this size (twistd's own rotates at 1 MB).",
        log_max_bytes,
    ],
    [
        "log-keep",
        None,
        DEFAULT_KEEP,
        "Keep this many rotated log files (LOGFILE.1 the newest); older ones are removed at each "
        "rotation (twistd's own default keeps them all).",
        log_keep,
    ],
]


def _secret(key: Any) -> bool:
    return isinstance(key, str) and is_secret_name(key)


def _clean_value(value: Any, depth: int) -> Any:
    """C{value} with secret-looking keys redacted and text made printable;
    C{value} itself when nothing changed."""
    if type(value) is str:
        return printable(value)
    if depth >= _MAX_DEPTH:
        return value
    if type(value) is dict:
        copy: dict[Any, Any] = {}
        changed = False
        for k, v in value.items():
            key = printable(k) if type(k) is str else k
            new = REDACTED if _secret(k) else _clean_value(v, depth + 1)
            changed = changed or new is not v or key is not k
            copy[key] = new
        return copy if changed else value
    if type(value) in (list, tuple):
        items = [_clean_value(v, depth + 1) for v in value]
        if any(new is not old for new, old in zip(items, value, strict=False)):
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

    It does not clean the event (the observer does, before calling it) and
    may raise for a broken event (the observer catches that).
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
                "namespace": "twisted_mcp.ops.logs",
                "message": f"unable to format a log event from {namespace}: {safe_repr(error)}",
                "event": details,
            }
        )
        + "\n"
    )


@implementer(ILogObserver)
class LogObserver:
    """
    Cleans each event (L{clean}: secrets redacted, text escaped and
    bounded), formats it with C{format} and writes the result to C{out},
    flushing after each event.  Never raises.

    @ivar out: where the lines go (a text stream or a L{LogFile}).
    @ivar format: C{"text"} or C{"json"}.
    @ivar reactor: given, an event emitted in another thread than the one
        that made the observer (the one that runs the reactor; a reload
        reads the config in a worker thread) is handed to it with
        C{callFromThread}: C{out} is written from one thread only (a
        L{LogFile} is not thread-safe, and rotates).
    """

    def __init__(self, out: Any, format: str, reactor: Any = None) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown log format {format!r}: use one of {', '.join(FORMATS)}")
        self.out = out
        self.format = format
        self.reactor = reactor
        self._thread = threading.get_ident()
        if format == "text":
            # Exactly what twistd writes: its observer, fed a clean copy.
            self._text = textFileLogObserver(out)

    def __call__(self, event: Mapping[str, Any]) -> None:
        if self.reactor is not None and threading.get_ident() != self._thread:
            self.reactor.callFromThread(self, event)
            return
        try:
            safe = clean(event)
        except Exception as e:
            # Withhold the event rather than risk writing a secret.
            safe = {
                "log_format": "unable to clean a log event ({error}); event withheld",
                "error": safe_repr(e),
                "log_level": LogLevel.error,
                "log_namespace": "twisted_mcp.ops.logs",
                "log_time": time.time(),
            }
        if self.format == "text":
            try:
                self._text(safe)
            except Exception:
                pass
            return
        try:
            line = format_json(safe)
        except Exception as e:
            line = _unformattable(safe, e)
        if not line:
            return
        try:
            self.out.write(line)
            self.out.flush()
        except Exception:
            pass  # nowhere left to report it


def observer_for(
    fmt: str,
    logfile: str | None,
    nodaemon: bool,
    stream: IO[str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    keep: int = DEFAULT_KEEP,
    reactor: Any = None,
) -> LogObserver:
    """
    The log observer twistd would make (C{UnixAppLogger._getLogObserver},
    without C{--syslog}), writing format C{fmt} (C{"text"} or C{"json"}):

      - C{logfile} C{"-"}: standard output; for a daemon (C{nodaemon}
        false), L{SystemExit} with twistd's own message;
      - no C{logfile} and C{nodaemon}: standard output;
      - otherwise C{LogFile.fromFullPath(logfile or "twistd.log")}: rotated
        when it reaches C{max_bytes} (twistd's own: 1 MB) and on SIGUSR1
        (unless a SIGUSR1 handler is already set), keeping the C{keep} most
        recent rotated files (C{.1} the newest; twistd's own keeps them
        all): older ones are removed at each rotation.

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

        out = LogFile.fromFullPath(logfile or "twistd.log", rotateLength=max_bytes, maxRotatedFiles=keep)
        _rotate_on_sigusr1(out, reactor)
    return LogObserver(out, fmt, reactor)


def _rotate_on_sigusr1(log_file: Any, reactor: Any) -> None:
    """
    As twistd: rotate the file on SIGUSR1, unless something else handles SIGUSR1.
    The rotation runs in the reactor's thread when a reactor is given (the gateway
    always gives the one C{tap.py} owns); without one it runs in the handler.
    """
    import signal

    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: Any) -> None:
            if reactor is None:
                log_file.rotate()
            else:
                reactor.callFromThread(log_file.rotate)

        signal.signal(signal.SIGUSR1, rotate)


def install(application: Any, options: Mapping[str, Any], reactor: Any = None) -> ILogObserver | None:
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
    @param reactor: events from other threads are handed to it
        (L{LogObserver}).
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
    observer = observer_for(
        fmt,
        parent["logfile"],
        bool(parent["nodaemon"]),
        max_bytes=options.get("log-max-bytes") or DEFAULT_MAX_BYTES,
        keep=options.get("log-keep") or DEFAULT_KEEP,
        reactor=reactor,
    )
    application.setComponent(ILogObserver, observer)
    return observer


def attach(service: Any, options: Mapping[str, Any], reactor: Any = None) -> Any:
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
        install(parent, options, reactor)
        return original(parent)

    service.setServiceParent = setServiceParent
    return service
