"""Log output: twistd's text format or JSON lines, redaction, and the twistd hook."""

from __future__ import annotations

import io
import json
import os
import re
import signal
from typing import Any

from twisted import logger as twisted_logger
from twisted.application import service
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher, textFileLogObserver
from twisted.logger._flatten import flattenEvent
from twisted.python import log as legacy_log
from twisted.python import usage
from twisted.python.logfile import LogFile
from twisted.scripts._twistd_unix import ServerOptions, UnixApplicationRunner
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp import logs

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
        self.assertEqual(lines_of(text)[0]["message"], "caf\u00e9 \udcff")

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
        self.assertEqual(line["namespace"], "twisted_mcp.logs")
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
        clean = logs.redact(event)
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
        clean = logs.redact({"servers": [{"name": "a", "env": {"GITHUB_TOKEN": "ghp"}}]})
        self.assertEqual(clean, {"servers": [{"name": "a", "env": {"GITHUB_TOKEN": "[redacted]"}}]})

    def test_flattenedEvents(self) -> None:
        event = {"log_format": "{token} {request}", "token": "t", "request": "r"}
        flattenEvent(event)
        self.assertEqual(twisted_logger.formatEvent(logs.redact(event)), "[redacted] r")

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
        self.assertEqual(observer.out.rotateLength, 1000000)
        self.assertIsNone(observer.out.maxRotatedFiles)
        log = Logger(namespace="t", observer=observer)
        log.info("one {request}", request="r-1")
        log.error("two")
        with open(path) as f:
            one, two = lines_of(f.read())
        self.assertEqual((one["message"], one["request"], two["level"]), ("one r-1", "r-1", "error"))
        self.assertTrue(callable(signal.getsignal(signal.SIGUSR1)))

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
    """The option as tap.Options defines it."""

    optParameters = [["log-format", None, "text", "text or json", logs.log_format]]


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

    def test_unknownFormat(self) -> None:
        options = self.options()
        options["log-format"] = "xml"
        self.assertRaises(ValueError, logs.install, service.Application("x"), options)
