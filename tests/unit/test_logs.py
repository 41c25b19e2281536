"""Log output: twistd's text format or JSON lines, redaction, and the twistd hook."""

from __future__ import annotations

import io
import json
import os
import re
import signal
from typing import Any

from twisted.application import service
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher, textFileLogObserver
from twisted.logger._flatten import flattenEvent
from twisted.python import log as legacy_log
from twisted.python import usage
from twisted.python.logfile import LogFile
from twisted.scripts._twistd_unix import ServerOptions, UnixApplicationRunner
from twisted.trial.unittest import SynchronousTestCase

from twisted import logger as twisted_logger
from twisted_mcp.backends import stderr
from twisted_mcp.backends.stdio import stderr_limits
from twisted_mcp.config import ConfigError
from twisted_mcp.config.loader import build
from twisted_mcp.ops import logs

ISO_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def lines_of(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n"), repr(text)
    assert "\x1e" not in text
    return [json.loads(line) for line in text.splitlines()]


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    def __str__(self) -> str:
        raise RuntimeError("no str either")


class JSONLineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.out = io.StringIO()
        self.observer = logs.observer_for("json", None, True, stream=self.out)
        self.log = Logger(namespace="twisted_mcp.test", observer=self.observer)

    def events(self) -> list[dict[str, Any]]:
        return lines_of(self.out.getvalue())

    def test_shape(self) -> None:
        self.log.info("call {tool} from {who}", tool="time__now", who="alice", request="r-17", request_id=17)
        [line] = self.events()
        self.assertEqual(
            list(line), ["time", "level", "namespace", "message", "tool", "who", "request", "request_id"]
        )
        self.assertRegex(line["time"], ISO_MS_UTC)
        self.assertEqual(line["level"], "info")
        self.assertEqual(line["namespace"], "twisted_mcp.test")
        self.assertEqual(line["message"], "call time__now from alice")
        self.assertEqual((line["request"], line["request_id"]), ("r-17", 17))
        self.assertFalse([k for k in line if k.startswith("log_")])

    def test_timeIsTheEventsInUTC(self) -> None:
        self.observer({"log_format": "x", "log_time": 1700000000.9876, "log_level": LogLevel.info})
        self.assertEqual(self.events()[0]["time"], "2023-11-14T22:13:20.987Z")

    def test_oneLinePerEvent(self) -> None:
        self.log.info("first\nsecond line")
        self.log.warn("third")
        first, third = self.events()
        self.assertEqual(first["message"], "first\nsecond line")
        self.assertEqual(third["message"], "third")
        self.assertEqual(self.out.getvalue().count("\n"), 2)

    def test_levelNames(self) -> None:
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical):
            self.log.emit(level, "at {level_name}", level_name=level.name)
        self.assertEqual(
            [e["level"] for e in self.events()], ["debug", "info", "warn", "error", "critical"]
        )

    def test_structuredValuesKept(self) -> None:
        self.log.info("x", count=3, ratio=0.5, ok=True, nothing=None, items=["a", 1], nested={"a": {"b": [1, 2]}})
        [line] = self.events()
        self.assertEqual(
            {k: line[k] for k in ("count", "ratio", "ok", "nothing", "items", "nested")},
            {"count": 3, "ratio": 0.5, "ok": True, "nothing": None, "items": ["a", 1], "nested": {"a": {"b": [1, 2]}}},
        )

    def test_failureTraceback(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            self.log.failure("call {request} failed", request="r-1")
        [line] = self.events()
        self.assertEqual(line["level"], "critical")
        self.assertEqual(line["message"], "call r-1 failed")
        self.assertIn("Traceback", line["failure"])
        self.assertIn("ZeroDivisionError", line["failure"])
        self.assertEqual(line["request"], "r-1")

    def test_nonSerializableValuesAreRepresented(self) -> None:
        cyclic: list[Any] = []
        cyclic.append(cyclic)
        self.log.info("x", thing=object(), levels={LogLevel.info}, nan=float("nan"), cyclic=cyclic, raw=b"\xff", fine=1)
        [line] = self.events()
        self.assertTrue(line["thing"].startswith("<object object at "))
        self.assertIn("LogLevel=info", line["levels"])
        self.assertEqual(line["nan"], "nan")
        self.assertEqual(line["cyclic"], "[[...]]")
        self.assertEqual(line["raw"], "b'\\xff'")
        self.assertEqual(line["fine"], 1)

    def test_unreprableValue(self) -> None:
        self.log.info("x", thing=Unprintable())
        [line] = self.events()
        self.assertIn("Unprintable", line["thing"])

    def test_nonASCIIIsEscaped(self) -> None:
        self.log.info("caf\u00e9 {s}", s="\udcff")
        text = self.out.getvalue()
        self.assertTrue(text.isascii())
        # A lone surrogate (which no UTF-8 file can hold) is shown escaped.
        self.assertEqual(lines_of(text)[0]["message"], "caf\u00e9 \\udcff")

    def test_brokenFormatStringDoesNotRaise(self) -> None:
        self.log.info("unbalanced {brace", brace=1)
        self.log.info("missing {nothere}")
        broken, missing = self.events()
        self.assertIn("Unable to format event", broken["message"])
        self.assertIn("Unable to format event", missing["message"])

    def test_brokenEventBecomesALine(self) -> None:
        self.observer({"log_format": "x", "log_namespace": Unprintable(), "log_level": LogLevel.info})
        [line] = self.events()
        self.assertEqual(line["level"], "error")
        self.assertEqual(line["namespace"], "twisted_mcp.ops.logs")
        self.assertIn("unable to format a log event", line["message"])

    def test_failingWriteDoesNotRaise(self) -> None:
        class Broken(io.StringIO):
            def write(self, s: str) -> int:
                raise OSError("disk full")

        logs.LogObserver(Broken(), "json")({"log_format": "x"})
        logs.LogObserver(Broken(), "text")({"log_format": "x"})

    def test_reservedNamesKeptUnderAnotherKey(self) -> None:
        self.observer({"log_format": "{message}", "message": "hi", "level": 3, "time": "noon", "log_level": LogLevel.info})
        [line] = self.events()
        self.assertEqual((line["message"], line["level"]), ("hi", "info"))
        self.assertEqual((line["field_message"], line["field_level"], line["field_time"]), ("hi", 3, "noon"))

    def test_emptyEventWritesNothing(self) -> None:
        self.observer({"log_time": 1.0, "log_namespace": "x", "log_level": LogLevel.info})
        self.assertEqual(self.out.getvalue(), "")

    def test_legacyMessages(self) -> None:
        publisher = legacy_log.LogPublisher(self.observer, self.observer)
        publisher.msg("plain", "words", system="HTTPChannel,0")
        try:
            1 / 0
        except ZeroDivisionError:
            publisher.msg(failure=legacy_log.failure.Failure(), why="while testing", isError=1)
        plain, error = self.events()
        self.assertEqual(
            plain, {"time": plain["time"], "level": "info", "namespace": "log_legacy", "message": "plain words", "system": "HTTPChannel,0"}
        )
        self.assertEqual(error["level"], "critical")
        self.assertEqual(error["message"], "while testing")
        self.assertIn("ZeroDivisionError", error["failure"])
        self.assertNotIn("why", error)
        self.assertNotIn("isError", error)


class RedactionTests(SynchronousTestCase):
    SECRETS = {
        "token": "t0ken",
        "adminToken": "adm1n",
        "client_secret": "s3cret",
        "password": "passw0rd",
        "Authorization": "Bearer abc",
        "api_key": "k1",
        "apiKey": "k2",
        "api-key": "k3",
        "set_cookie": "c00kie",
        "credentials": "cr3d",
    }

    def test_redactCopies(self) -> None:
        headers = {"Authorization": "Bearer abc", "Accept": "application/json"}
        event = {"log_format": "x", "token": "t", "headers": headers, "request": "r-1"}
        clean = logs.clean(event)
        self.assertEqual(
            clean,
            {
                "log_format": "x",
                "token": "[redacted]",
                "headers": {"Authorization": "[redacted]", "Accept": "application/json"},
                "request": "r-1",
            },
        )
        self.assertEqual(event["token"], "t")
        self.assertEqual(headers["Authorization"], "Bearer abc")

    def test_nestedInLists(self) -> None:
        clean = logs.clean({"servers": [{"name": "a", "env": {"GITHUB_TOKEN": "ghp"}}]})
        self.assertEqual(clean, {"servers": [{"name": "a", "env": {"GITHUB_TOKEN": "[redacted]"}}]})

    def test_flattenedEvents(self) -> None:
        event = {"log_format": "{token} {request}", "token": "t", "request": "r"}
        flattenEvent(event)
        self.assertEqual(twisted_logger.formatEvent(logs.clean(event)), "[redacted] r")

    def test_json(self) -> None:
        out = io.StringIO()
        log = Logger(namespace="t", observer=logs.observer_for("json", "-", True, stream=out))
        log.info("auth {Authorization} for {request}", request="r-9", headers={"Cookie": "c"}, **self.SECRETS)
        [line] = lines_of(out.getvalue())
        self.assertEqual(line["message"], "auth [redacted] for r-9")
        self.assertEqual(line["request"], "r-9")
        self.assertEqual(line["headers"], {"Cookie": "[redacted]"})
        for key in self.SECRETS:
            self.assertEqual(line[key], "[redacted]")
        for secret in self.SECRETS.values():
            self.assertNotIn(secret, out.getvalue())

    def test_text(self) -> None:
        out = io.StringIO()
        log = Logger(namespace="t", observer=logs.observer_for("text", None, True, stream=out))
        log.info("auth {Authorization} cookie {set_cookie} for {request}", request="r-9", **self.SECRETS)
        log.info("missing {nothere}", **self.SECRETS)  # the "unable to format" text shows the whole event
        text = out.getvalue()
        self.assertIn("auth [redacted] cookie [redacted] for r-9", text)
        self.assertIn("Unable to format event", text)
        for secret in self.SECRETS.values():
            self.assertNotIn(secret, text)


HOSTILE = "\x1b[2J\x1b[31mevil\x07\r\n2026-01-01T00:00:00+0000 [twisted_mcp.dispatch.gateway#info] forged\u202e\u2028\x9b"
HOSTILE_SHOWN = "\\x1b[2J\\x1b[31mevil\\x07\\r\\n2026-01-01T00:00:00+0000 [twisted_mcp.dispatch.gateway#info] forged\\u202e\\u2028\\x9b"


class PrintableTests(SynchronousTestCase):
    """Text that clients and backends choose is escaped and bounded in both formats."""

    def test_printable(self) -> None:
        self.assertEqual(logs.printable(HOSTILE), HOSTILE_SHOWN)
        self.assertEqual(logs.printable("caf\u00e9 \t\x00\x7f\ud800"), "caf\u00e9 \\t\\x00\\x7f\\ud800")
        plain = "an ordinary line: caf\u00e9, \u65e5\u672c, C:\\path"
        self.assertIs(logs.printable(plain), plain)

    def test_bounded(self) -> None:
        self.assertEqual(logs.printable("x" * 10 + "\x1b", limit=10), "x" * 10 + "...[1 more characters]")
        long = logs.printable("y" * 100_000)
        self.assertEqual(long, "y" * logs.MAX_FIELD_CHARS + f"...[{100_000 - logs.MAX_FIELD_CHARS} more characters]")

    def test_json(self) -> None:
        out = io.StringIO()
        log = Logger(namespace="t", observer=logs.observer_for("json", None, True, stream=out))
        log.info("client {name} {version} connected", name=HOSTILE, version="1\n2", tools=[HOSTILE], info={HOSTILE: (HOSTILE,)})
        [line] = lines_of(out.getvalue())
        self.assertEqual(line["message"], f"client {HOSTILE_SHOWN} 1\\n2 connected")
        self.assertEqual((line["name"], line["tools"], line["info"]), (HOSTILE_SHOWN, [HOSTILE_SHOWN], {HOSTILE_SHOWN: [HOSTILE_SHOWN]}))

    def test_text(self) -> None:
        out = io.StringIO()
        log = Logger(namespace="t", observer=logs.observer_for("text", None, True, stream=out))
        log.info("client {name} connected", name=HOSTILE + "\udcff")
        text = out.getvalue()
        self.assertEqual(text.count("\n"), 1, text)
        self.assertTrue(text.endswith(f"client {HOSTILE_SHOWN}\\udcff connected\n"), text)
        for raw in "\x1b\x07\r\u202e\u2028\x9b":
            self.assertNotIn(raw, text)

    def test_longFieldBounded(self) -> None:
        out = io.StringIO()
        log = Logger(namespace="t", observer=logs.observer_for("text", None, True, stream=out))
        log.info("client {name}", name="n" * 1_000_000)
        self.assertLess(len(out.getvalue()), logs.MAX_FIELD_CHARS + 200)
        self.assertIn(f"...[{1_000_000 - logs.MAX_FIELD_CHARS} more characters]", out.getvalue())

    def test_legacyMessage(self) -> None:
        out = io.StringIO()
        observer = logs.observer_for("json", None, True, stream=out)
        legacy_log.LogPublisher(observer, observer).msg("peer said", HOSTILE)
        [line] = lines_of(out.getvalue())
        self.assertEqual(line["message"], f"peer said {HOSTILE_SHOWN}")

    def test_flattened(self) -> None:
        event = {"log_format": "{name}", "name": HOSTILE, "log_namespace": "t", "log_level": LogLevel.info}
        flattenEvent(event)
        self.assertEqual(twisted_logger.formatEvent(logs.clean(event)), HOSTILE_SHOWN)


class TextTests(SynchronousTestCase):
    def test_identicalToTwistd(self) -> None:
        ours, theirs = io.StringIO(), io.StringIO()
        events = [
            {"log_format": "hello {who}", "who": "w", "log_time": 1700000000.5, "log_namespace": "n", "log_level": LogLevel.info},
            {"log_format": "two\nlines", "log_time": 1700000001.0, "log_system": "sys"},
            {"log_format": "", "log_time": 1.0},
        ]
        try:
            1 / 0
        except ZeroDivisionError:
            events.append({"log_format": "oops", "log_failure": legacy_log.failure.Failure(), "log_time": 2.0})
        for event in events:
            logs.observer_for("text", None, True, stream=ours)(dict(event))
            textFileLogObserver(theirs)(dict(event))
        self.assertEqual(ours.getvalue(), theirs.getvalue())
        self.assertIn("[n#info] hello w\n", ours.getvalue())

    def test_unknownFormat(self) -> None:
        self.assertRaises(ValueError, logs.observer_for, "xml", None, True)


class DestinationTests(SynchronousTestCase):
    def setUp(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def test_stdout(self) -> None:
        out = io.StringIO()
        self.assertIs(logs.observer_for("json", "-", True, stream=out).out, out)
        self.assertIs(logs.observer_for("json", None, True, stream=out).out, out)
        self.assertIs(logs.observer_for("json", "", True, stream=out).out, out)

    def test_stdoutIsReadWhenTheObserverIsMade(self) -> None:
        out = io.StringIO()
        self.patch(logs.sys, "stdout", out)
        observer = logs.observer_for("json", None, True)
        self.patch(logs.sys, "stdout", io.StringIO())
        observer({"log_format": "x"})
        self.assertEqual(lines_of(out.getvalue())[0]["message"], "x")

    def test_daemonCannotLogToStdout(self) -> None:
        e = self.assertRaises(SystemExit, logs.observer_for, "json", "-", False)
        self.assertEqual(e.code, "Daemons cannot log to stdout, exiting!")

    def test_logFile(self) -> None:
        path = os.path.abspath(self.mktemp())
        observer = logs.observer_for("json", path, False)
        self.addCleanup(close_log_file, observer)
        self.assertIsInstance(observer.out, LogFile)
        self.assertEqual(observer.out.rotateLength, 10 * 1024 * 1024)
        self.assertEqual(observer.out.maxRotatedFiles, 10)
        log = Logger(namespace="t", observer=observer)
        log.info("one {request}", request="r-1")
        log.error("two")
        with open(path) as f:
            one, two = lines_of(f.read())
        self.assertEqual((one["message"], one["request"], two["level"]), ("one r-1", "r-1", "error"))
        self.assertTrue(callable(signal.getsignal(signal.SIGUSR1)))

    def test_rotationKeepsTheNewestFiles(self) -> None:
        """At each rotation past --log-keep the oldest files go, left-overs from an earlier run too."""
        path = os.path.abspath(self.mktemp())
        for n in (1, 7, 12):
            with open(f"{path}.{n}", "w") as f:
                f.write("from an earlier run\n")
        observer = logs.observer_for("text", path, False, max_bytes=2048, keep=3)
        self.addCleanup(close_log_file, observer)
        log = Logger(namespace="t", observer=observer)
        for i in range(200):
            log.info("line {i} {pad}", i=i, pad="x" * 100)
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), sorted(os.path.basename(path) + s for s in ("", ".1", ".2", ".3")))
        for name in (path, f"{path}.1", f"{path}.2", f"{path}.3"):
            self.assertLess(os.path.getsize(name), 2048 + 300)
        with open(path) as f:
            self.assertIn("line 199 ", f.read())

    def test_daemonDefaultsToTwistdLog(self) -> None:
        observer = logs.observer_for("json", None, False)
        self.addCleanup(close_log_file, observer)
        self.assertEqual(observer.out.path, os.path.abspath("twistd.log"))

    def test_existingSIGUSR1HandlerKept(self) -> None:
        def mine(signum: int, frame: Any) -> None:
            pass

        signal.signal(signal.SIGUSR1, mine)
        close_log_file(logs.observer_for("json", os.path.abspath(self.mktemp()), False))
        self.assertIs(signal.getsignal(signal.SIGUSR1), mine)


class PluginOptions(usage.Options):
    """The log options as tap.Options has them."""

    optParameters = logs.OPTIONS


class FakePlugin:
    tapname = "fake-gateway"
    description = "a plugin"
    options = PluginOptions

    def __init__(self) -> None:
        self.service = service.Service()

    def makeService(self, options: PluginOptions) -> service.Service:
        return logs.attach(self.service, options)


CUSTOM = textFileLogObserver(io.StringIO())


def custom_observer() -> Any:
    """A factory for twistd's --logger."""
    return CUSTOM


class Beginner:
    def __init__(self) -> None:
        self.observers: list[Any] = []

    def beginLoggingTo(self, observers: list[Any]) -> None:
        # As globalLogBeginner, minus the buffer replay and the stdio redirection.
        self.observers.extend(observers)
        for observer in observers:
            globalLogPublisher.addObserver(observer)


def close_log_file(observer: Any) -> None:
    out = getattr(observer, "out", None) or getattr(observer, "_outFile", None)
    if isinstance(out, LogFile):
        out.close()


class TwistdHookTests(SynchronousTestCase):
    """
    Through twistd's own code: ServerOptions parsing the command line,
    UnixApplicationRunner.createOrGetApplication calling makeService and
    setServiceParent, UnixAppLogger.start picking the observer.
    """

    def setUp(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.plugin = FakePlugin()

    def run_twistd(self, *argv: str) -> tuple[Any, list[Any]]:
        config = ServerOptions()
        config._getPlugins = lambda interface: [self.plugin]
        config.parseOptions(list(argv))
        runner = UnixApplicationRunner(config)
        application = runner.createOrGetApplication()
        beginner = Beginner()
        self.patch(twisted_logger, "globalLogBeginner", beginner)
        runner.logger.start(application)
        self.addCleanup(close_log_file, runner.logger._observer)
        self.addCleanup(runner.logger.stop)
        self.assertIs(self.plugin.service.parent, service.IServiceCollection(application))
        return application, beginner.observers

    def test_jsonToLogFile(self) -> None:
        path = os.path.abspath(self.mktemp())
        application, observers = self.run_twistd("-n", "--pidfile=", "--logfile", path, "fake-gateway", "--log-format", "json")
        observer = application.getComponent(ILogObserver)
        self.assertIsInstance(observer, logs.LogObserver)
        self.assertEqual((observer.format, observer.out.path), ("json", path))
        self.assertEqual(observers, [observer])
        with open(path) as f:
            started = lines_of(f.read())
        self.assertTrue(started[0]["message"].startswith("twistd "), started)
        self.assertEqual(started[0]["namespace"], "twisted.scripts._twistd_unix.UnixAppLogger")

    def test_jsonToStdout(self) -> None:
        out = io.StringIO()
        self.patch(logs.sys, "stdout", out)
        application, observers = self.run_twistd("-n", "--pidfile=", "fake-gateway", "--log-format=json")
        self.assertIs(observers[0].out, out)
        self.assertEqual(lines_of(out.getvalue())[1]["message"].split(":")[0], "reactor class")

    def test_rotationOptions(self) -> None:
        path = os.path.abspath(self.mktemp())
        application, observers = self.run_twistd(
            "-n", "--pidfile=", "--logfile", path, "fake-gateway", "--log-max-bytes", "64K", "--log-keep", "3"
        )
        log_file = application.getComponent(ILogObserver).out
        self.assertEqual((log_file.rotateLength, log_file.maxRotatedFiles), (65536, 3))

    def test_textIsTwistdsFormatWithTheRedactionNet(self) -> None:
        path = os.path.abspath(self.mktemp())
        application, observers = self.run_twistd("-n", "--pidfile=", "--logfile", path, "fake-gateway")
        self.assertIsInstance(application.getComponent(ILogObserver, None), logs.LogObserver)
        self.assertIsInstance(observers[0], logs.LogObserver)

    def test_twistdLoggerOptionWins(self) -> None:
        application, observers = self.run_twistd(
            "-n", "--pidfile=", "--logger", f"{__name__}.custom_observer", "fake-gateway", "--log-format=json"
        )
        self.assertIsNone(application.getComponent(ILogObserver, None))
        self.assertIs(observers[0], CUSTOM)

    def test_syslogWins(self) -> None:
        config = ServerOptions()
        config._getPlugins = lambda interface: [self.plugin]
        config.parseOptions(["-n", "--pidfile=", "--syslog", "fake-gateway", "--log-format=json"])
        application = UnixApplicationRunner(config).createOrGetApplication()
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_daemonToStdoutExitsAsTwistdDoes(self) -> None:
        config = ServerOptions()
        config._getPlugins = lambda interface: [self.plugin]
        config.parseOptions(["--pidfile=", "--logfile=-", "fake-gateway", "--log-format=json"])
        e = self.assertRaises(SystemExit, UnixApplicationRunner(config).createOrGetApplication)
        self.assertEqual(e.code, "Daemons cannot log to stdout, exiting!")


class InstallTests(SynchronousTestCase):
    def options(self, fmt: str = "json", **parent: Any) -> PluginOptions:
        options = PluginOptions()
        options.parseOptions(["--log-format", fmt])
        options.parent = {"logfile": None, "nodaemon": True, "logger": None, "syslog": False, **parent}
        return options

    def test_attachSetsTheComponentOnARealApplication(self) -> None:
        out = io.StringIO()
        self.patch(logs.sys, "stdout", out)
        application = service.Application("x")
        child = logs.attach(service.Service(), self.options())
        child.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        self.assertIsInstance(observer, logs.LogObserver)
        self.assertTrue(ILogObserver.providedBy(observer))
        self.assertIs(observer.out, out)
        self.assertIn(child, list(service.IServiceCollection(application)))

    def test_keepsAnObserverAlreadySet(self) -> None:
        application = service.Application("x")
        mine = textFileLogObserver(io.StringIO())
        application.setComponent(ILogObserver, mine)
        self.assertIsNone(logs.install(application, self.options()))
        self.assertIs(application.getComponent(ILogObserver), mine)

    def test_notUnderTwistd(self) -> None:
        application = service.Application("x")
        options = PluginOptions()
        options.parseOptions(["--log-format", "json"])
        options.parent = {"logFile": None, "logFormat": "json"}  # twist's options
        self.assertIsNone(logs.install(application, options))
        options.parent = None
        self.assertIsNone(logs.install(application, options))
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_notAnApplication(self) -> None:
        parent = service.MultiService()
        logs.attach(service.Service(), self.options()).setServiceParent(parent)
        self.assertEqual(len(list(parent)), 1)

    def test_optionValues(self) -> None:
        self.assertEqual(self.options("JSON")["log-format"], "json")
        options = PluginOptions()
        options.parseOptions([])
        self.assertEqual(options["log-format"], "text")
        e = self.assertRaises(usage.UsageError, PluginOptions().parseOptions, ["--log-format=xml"])
        self.assertIn("text or json", str(e))

    def test_rotationOptionValues(self) -> None:
        options = PluginOptions()
        options.parseOptions([])
        self.assertEqual((options["log-max-bytes"], options["log-keep"]), (10 * 1024 * 1024, 10))
        options.parseOptions(["--log-max-bytes", "10485760", "--log-keep=1"])
        self.assertEqual((options["log-max-bytes"], options["log-keep"]), (10 * 1024 * 1024, 1))
        for given, size in (("512K", 512 * 1024), ("2MiB", 2 << 20), ("1g", 1 << 30), ("4096", 4096)):
            self.assertEqual(logs.log_max_bytes(given), size)
        for argv, reason in (
            (["--log-max-bytes=100"], "at least 1024 bytes"),
            (["--log-max-bytes=1.5M"], "a size such as"),
            (["--log-keep=0"], "from 1 to 1000"),
            (["--log-keep=many"], "a whole number"),
        ):
            e = self.assertRaises(usage.UsageError, PluginOptions().parseOptions, argv)
            self.assertIn(reason, str(e))

    def test_unknownFormat(self) -> None:
        options = self.options()
        options["log-format"] = "xml"
        self.assertRaises(ValueError, logs.install, service.Application("x"), options)


class LineCutterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lines: list[tuple[bytes, int]] = []
        self.cutter = stderr.LineCutter(8, lambda head, cut: self.lines.append((head, cut)))

    def test_lines(self) -> None:
        self.cutter.feed(b"one\ntw")
        self.cutter.feed(b"o\n\nthr")
        self.cutter.finish()
        self.assertEqual(self.lines, [(b"one", 0), (b"two", 0), (b"", 0), (b"thr", 0)])

    def test_longLinesCutWithTheCountOfWhatWasCut(self) -> None:
        self.cutter.feed(b"0123456789")
        self.cutter.feed(b"abc" * 1000)
        self.cutter.feed(b"\nshort\n" + b"x" * 9)
        self.cutter.finish()
        self.assertEqual(self.lines, [(b"01234567", 3002), (b"short", 0), (b"xxxxxxxx", 1)])
        self.assertEqual(len(self.cutter._head), 0)

    def test_finishWithoutALine(self) -> None:
        self.cutter.feed(b"done\n")
        self.cutter.finish()
        self.assertEqual(self.lines, [(b"done", 0)])


class StderrLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        self.log = Logger(namespace="twisted_mcp.backends.stdio", observer=self.events.append)
        self.stderr = stderr.StderrLog("noisy", self.clock, stderr.StderrLimits(line_bytes=16, per_second=10, burst=20), self.log)

    def logged(self) -> list[str]:
        return [twisted_logger.formatEvent(e) for e in self.events]

    def suppressed(self) -> int:
        return sum(e["count"] for e in self.events if "count" in e)

    def test_lines(self) -> None:
        lines = self.stderr.lines()
        lines.feed(b"starting\r\n  \n\x1b[31mred\n" + b"z" * 100 + b"\nunfinished")
        lines.finish()
        self.assertEqual(
            self.logged(),
            ["[noisy] starting", "[noisy] \x1b[31mred", "[noisy] " + "z" * 16 + "...[84 more bytes]", "[noisy] unfinished"],
        )
        self.assertEqual(self.events[2]["cut"], 84)
        self.assertEqual({e["log_namespace"] for e in self.events}, {"twisted_mcp.backends.stdio"})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_floodSuppressedAndSummarised(self) -> None:
        """A burst, then the rate; the excess is counted and said once per interval."""
        lines = self.stderr.lines()
        lines.feed(b"line\n" * 1000)
        self.assertEqual(len(self.events), 20)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.0)  # 10 more tokens
        lines.feed(b"line\n" * 1000)
        self.assertEqual(len(self.events), 30)
        self.clock.advance(stderr.SUMMARY_INTERVAL - 1.0)
        self.assertEqual(self.logged()[-1], "backend noisy: 1970 stderr lines suppressed (more than 10 a second, in bursts of 20: gateway.stderrLinesPerSecond, gateway.stderrBurst)")
        self.assertEqual(self.events[-1]["log_level"], LogLevel.warn)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Quiet for a while: a new burst is allowed, and another interval counts anew.
        self.clock.advance(60)
        lines.feed(b"again\n" * 25)
        self.stderr.flush()
        self.assertEqual(self.logged()[-2:], ["[noisy] again", "backend noisy: 5 stderr lines suppressed (more than 10 a second, in bursts of 20: gateway.stderrLinesPerSecond, gateway.stderrBurst)"])
        self.assertEqual(len(self.events) - 2 + self.suppressed(), 2025)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flushWithNothingSuppressed(self) -> None:
        self.stderr.flush()
        self.assertEqual(self.events, [])


class StderrSettingsTests(SynchronousTestCase):
    """gateway.stderrLineBytes, stderrLinesPerSecond and stderrBurst reach each stdio backend."""

    def test_defaults(self) -> None:
        config = build({"mcpServers": {"a": {"command": "run"}}}, "inline", environ={})
        self.assertEqual(stderr_limits(config.gateway), stderr.StderrLimits(line_bytes=4096, per_second=100, burst=200))

    def test_given(self) -> None:
        gateway = {"stderrLineBytes": 1024, "stderrLinesPerSecond": 5, "stderrBurst": 50}
        config = build({"mcpServers": {"a": {"command": "run"}}, "gateway": gateway}, "inline", environ={})
        self.assertEqual(stderr_limits(config.gateway), stderr.StderrLimits(line_bytes=1024, per_second=5, burst=50))

    def test_invalid(self) -> None:
        gateway = {"stderrLineBytes": 10, "stderrLinesPerSecond": 0, "stderrBurst": "many"}
        e = self.assertRaises(ConfigError, build, {"mcpServers": {}, "gateway": gateway}, "inline", environ={})
        self.assertEqual(
            e.problems,
            [
                "gateway.stderrLineBytes: expected a whole number from 80 to 1048576, got 10",
                "gateway.stderrLinesPerSecond: expected a whole number from 1 to 100000, got 0",
                'gateway.stderrBurst: expected a whole number, got a string "many"',
            ],
        )


class OtherThreadTests(SynchronousTestCase):
    """With a reactor, the observer writes only from the thread that made
    it: an event from a worker thread (a reload parses the config in one)
    is handed to the reactor."""

    def emit_in_a_thread(self, observer: logs.LogObserver) -> None:
        import threading

        thread = threading.Thread(
            target=observer, args=({"log_format": "from {where}", "where": "a worker", "log_level": LogLevel.warn, "log_time": 0.0},)
        )
        thread.start()
        thread.join()

    def test_handedToTheReactor(self) -> None:
        handed: list[tuple[Any, tuple[Any, ...]]] = []

        class Reactor:
            def callFromThread(self, f: Any, *args: Any) -> None:
                handed.append((f, args))

        out = io.StringIO()
        observer = logs.LogObserver(out, "json", Reactor())
        self.emit_in_a_thread(observer)
        self.assertEqual(out.getvalue(), "")
        [(f, args)] = handed
        f(*args)
        self.assertEqual(json.loads(out.getvalue())["message"], "from a worker")

    def test_writtenAtOnceInItsOwnThread(self) -> None:
        out = io.StringIO()
        observer = logs.LogObserver(out, "json", object())
        observer({"log_format": "here", "log_level": LogLevel.info, "log_time": 0.0})
        self.assertEqual(json.loads(out.getvalue())["message"], "here")

    def test_attachPassesTheReactor(self) -> None:
        self.patch(logs.sys, "stdout", io.StringIO())
        reactor = object()
        application = service.Application("x")
        logs.attach(service.Service(), InstallTests.options(self), reactor).setServiceParent(application)  # type: ignore[arg-type]
        self.assertIs(application.getComponent(ILogObserver).reactor, reactor)
