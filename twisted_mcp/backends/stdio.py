"""
Stdio backends: MCP servers run as supervised child processes.

Each child is started in a session of its own (through a tiny exec shim),
so that it and every process it starts can be signalled as one group.  Its
stdout carries MCP messages, its stderr goes to the log prefixed with the
backend's name.  A child that exits is restarted with exponential backoff,
re-handshaken and re-discovered.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import signal
import sys
from typing import Any, Callable, Iterable, Iterator, Mapping

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.backends.base import Backend, State
from twisted_mcp.backends.direct import DirectCall, Receiver
from twisted_mcp.backends.session import McpClientSession
from twisted_mcp.backends.stderr import StderrLimits, StderrLog
from twisted_mcp.backends.supervisor import RunEvents, SupervisedBackend
from twisted_mcp.config import GatewaySettings, StdioServer
from twisted_mcp.mcp import errors
from twisted_mcp.wire._pipes import read_in_large_chunks
from twisted_mcp.wire._writer import Writer, batch
from twisted_mcp.wire.framing import LineFramer
from twisted_mcp.wire.jsonrpc import JsonRpcError, MessageError, PeerGone, RequestTimeout, decode, encode

log = Logger()

#: Runs in the child before the server: a new session (so the whole tree
#: can be signalled), SIGTERM if the gateway dies, then exec.
SHIM = r"""
import os, sys
try:
    os.setsid()
except OSError:
    pass
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, 15, 0, 0, 0)
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as e:
    sys.stderr.write("cannot run %r: %s\n" % (sys.argv[2], e.strerror or e))
    sys.stderr.flush()
    os._exit(127)
"""

#: Set in every child's environment (inherited by what it starts): names the
#: backend run a process descends from, after it was reparented to us.
RUN_VARIABLE = "TWISTED_MCP_RUN"
PR_SET_CHILD_SUBREAPER = 36
#: Seconds between two collections of adopted children that exited (one
#: read of /proc/self/task/*/children and a WNOHANG wait per child).
REAP_INTERVAL = 5.0
_runs = itertools.count(1)

_ID_RE = re.compile(rb'"id"\s*:\s*(\d{1,18})\s*[,}]')
#: A response's own id when it is the last member (TypeScript SDK servers
#: write it after the result): exactly one closing brace follows it, so an
#: "id" nested in the result cannot match.
_TRAILING_ID_RE = re.compile(rb'[,{]\s*"id"\s*:\s*(\d{1,18})\s*\}\s*\r?$')


def stderr_limits(settings: GatewaySettings) -> StderrLimits:
    """How much of a backend's stderr the gateway's settings let reach the log."""
    return StderrLimits(settings.stderrLineBytes, settings.stderrLinesPerSecond, settings.stderrBurst)


def child_environment(
    server: StdioServer, inherit: tuple[str, ...], environ: Mapping[str, str]
) -> dict[str, str]:
    """The child's environment: the allowlisted variables, then its C{env}."""
    env = {k: environ[k] for k in inherit if k in environ}
    env.update(server.env)
    return env


def group_alive(pgid: int) -> bool:
    """Whether any process (not a zombie) is left in process group C{pgid}."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return any(group == pgid and state != b"Z" for _, state, _, group in _processes())
    except OSError:
        return True


def become_subreaper() -> bool:
    """
    Have orphaned descendants (a backend's daemon that double-forked into a
    session of its own) reparented to this process instead of init, so that
    L{adopted} finds them (Linux 3.4+).  Not inherited across fork: call it
    in the process that runs the reactor.
    """
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def adopted(run: str) -> tuple[set[int], set[int]]:
    """
    Our children that descend from backend run C{run} (by the
    L{RUN_VARIABLE} they inherited), and every zombie among our children
    (whose environment can no longer be read).
    """
    me = os.getpid()
    marker = f"{RUN_VARIABLE}={run}".encode()
    live: set[int] = set()
    zombies: set[int] = set()
    try:
        children = [(pid, state) for pid, state, ppid, _ in _processes() if ppid == me]
    except OSError:
        return live, zombies
    for pid, state in children:
        if state == b"Z":
            zombies.add(pid)
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    live.add(pid)
        except OSError:
            continue
    return live, zombies


def _processes() -> Iterator[tuple[int, bytes, int, int]]:
    """(pid, state, ppid, pgid) of every process, from /proc; OSError
    when /proc cannot be listed."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2:
            yield int(entry), fields[0], int(fields[1]), int(fields[2])


def reap(pids: Iterable[int]) -> int:
    """Collect the exit status of those of C{pids} that are adopted children
    that exited (Twisted reaps only the processes it spawned, and loses their
    exit status if anyone else waits on them); return how many."""
    from twisted.internet.process import reapProcessHandlers

    reaped = 0
    for pid in set(pids) - set(reapProcessHandlers):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        reaped += done != 0
    return reaped


def _children() -> set[int]:
    """Our children: each thread lists those it forked or was given as
    subreaper (Linux 3.5+); falls back to scanning /proc."""
    pids: set[int] = set()
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                pids.update(int(pid) for pid in f.read().split())
    except FileNotFoundError:
        me = os.getpid()
        return {pid for pid, _, ppid, _ in _processes() if ppid == me}
    return pids


def reap_adopted() -> None:
    """Collect every adopted child that exited, so that none stays a zombie
    until the gateway exits; periodic bodies must not raise."""
    try:
        count = reap(_children())
    except OSError:
        log.failure("collecting adopted children that exited failed")
        return
    if count:
        log.debug("collected {count} adopted process(es) that exited", count=count)


def start_reaping(clock: IReactorTime) -> LoopingCall | None:
    """
    Become the subreaper of the gateway's descendants and collect, every
    L{REAP_INTERVAL} seconds, those that exit on their own (nothing else
    waits on them).  Call it in the process that runs the reactor.
    """
    if not become_subreaper():
        return None
    loop = LoopingCall(reap_adopted)
    loop.clock = clock
    loop.start(REAP_INTERVAL, now=False)
    return loop


def signal_group(pid: int, sig: int, leader_alive: bool = False) -> None:
    """
    Signal the process group led by C{pid}.  With C{leader_alive} (the
    child has not been reaped, so its pid cannot have been reused), signal
    the process alone when its group is not made yet.
    """
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        if leader_alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    except PermissionError:
        pass


#: The stderr bounds of a backend built without settings (the defaults of C{gateway:}).
DEFAULT_STDERR_LIMITS = stderr_limits(GatewaySettings())


class _Framer(LineFramer):
    def __init__(self, child: "_Child") -> None:
        super().__init__()
        self.child = child

    def lineReceived(self, line: bytes) -> None:
        self.child.lineReceived(line)

    def lineLengthExceeded(self, head: bytes, size: int) -> None:  # type: ignore[override]
        self.child.lineTooLong(head, size)

    def overlongLineEnded(self, tail: bytes) -> None:
        self.child.tooLongLineEnded(tail)


class _Child(RunEvents, ProcessProtocol):
    """One run of a backend's process."""

    def __init__(self, backend: "StdioBackend", max_length: int) -> None:
        self.backend = backend
        self.name = backend.name
        self.framer = _Framer(self)
        self.framer.MAX_LENGTH = max_length
        self.session = McpClientSession(
            backend.name,
            self.send,
            backend.clock,
            self._listing_changed,
            max_listing=max_length,
            on_server_request=self._server_request,
            on_server_notification=self._server_notification,
            protocol=backend.config.protocol,
            initialize_first=backend.initialize_first,
        )
        self.pid: int | None = None
        self.exited: Deferred[None] = Deferred()
        self.exit_reason: str | None = None
        self.stderr = backend.stderr_log.lines()
        self._gone = False
        #: It exited while the probe waited for its answer.
        self.exited_probing = False
        #: Nothing is left in the child's process group.
        self.group_gone = False
        #: The gateway is ending this process.
        self.stopping = False
        self._stdout_check: Any = None
        self.writer: Any = None
        #: An overlong line is being discarded whose id was not at its start.
        self._id_at_end = False
        #: Marks this run's descendants, even once they left its process group.
        self.run = f"{backend.name}.{next(_runs)}"
        #: Fires once its process group and adopted descendants are gone.
        self.descendants_ended: Deferred[None] | None = None
        #: When the child last wrote anything on its stdout (liveness).
        self.last_heard = backend.clock.seconds()

    def connectionMade(self) -> None:
        pipes = getattr(self.transport, "pipes", None)
        if pipes is not None and 0 in pipes:
            self.writer = Writer(pipes[0])
        else:
            self.writer = self.transport
        if pipes is not None and 1 in pipes:
            read_in_large_chunks(pipes[1])

    def send(self, message: dict[str, Any]) -> None:
        if self._gone:
            return
        self.writer.write(encode(message))

    def queued(self) -> int:
        """Bytes written toward the child's stdin that it has not read yet."""
        queued = getattr(self.writer, "queued", None)
        return queued() if queued is not None else 0

    def discover(self, timeout: float) -> Any:
        return self.session.discover(timeout)

    @batch
    def outReceived(self, data: bytes) -> None:
        self.last_heard = self.backend.clock.seconds()
        self.framer.dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        try:
            message = decode(line)
            self.session.received(message)
        except MessageError as e:
            log.warn(
                "backend {backend} wrote something that is not a JSON-RPC message on stdout ({why}): {text}",
                backend=self.name,
                why=e.message,
                text=line[:300].decode("utf-8", "replace"),
            )
        except Exception:
            # Whatever a backend sends must not break its pipe to us.
            log.failure(
                "backend {backend}: could not handle a message: {text}",
                backend=self.name,
                text=line[:300].decode("utf-8", "replace"),
            )

    def lineTooLong(self, head: bytes, size: int) -> None:
        limit = self.framer.MAX_LENGTH
        log.error(
            "backend {backend} sent a message of more than {limit} bytes (gateway.maxMessageBytes); discarded",
            backend=self.name,
            limit=limit,
        )
        # Only an "id" before the result or error is the response's own;
        # when it comes after them, it is found at the line's end.
        head = head[:512]
        cut = min((i for i in (head.find(b'"result"'), head.find(b'"error"')) if i >= 0), default=len(head))
        m = _ID_RE.search(head[:cut])
        self._id_at_end = m is None
        if m:
            self._fail_too_large(int(m.group(1)))

    def tooLongLineEnded(self, tail: bytes) -> None:
        if not self._id_at_end:
            return
        self._id_at_end = False
        m = _TRAILING_ID_RE.search(tail)
        if m:
            self._fail_too_large(int(m.group(1)))

    def _fail_too_large(self, rid: int) -> None:
        limit = self.framer.MAX_LENGTH
        self.session.peer.fail(
            rid,
            errors.backend_error(
                errors.BACKEND_RESPONSE_TOO_LARGE,
                self.name,
                f"backend {self.name!r} answered with more than {limit} bytes (gateway.maxMessageBytes)",
                limit=limit,
            ),
        )

    def errReceived(self, data: bytes) -> None:
        self.stderr.feed(data)

    def processExited(self, reason: Failure) -> None:
        if self._stdout_check is not None and self._stdout_check.active():
            self._stdout_check.cancel()
        self.stderr.finish()
        self.backend.stderr_log.flush()
        self._gone = True
        self.exited_probing = self.session.probing
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        if sig is not None:
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = str(sig)
            self.exit_reason = f"killed by {name}"
        else:
            self.exit_reason = f"exited with code {code}"
        self.session.connection_lost(Exception(f"the process {self.exit_reason}"))
        self.exited.callback(None)
        self.backend._child_exited(self)

    def outConnectionLost(self) -> None:
        # A process that exits closes its stdout first: give the exit a
        # moment to be seen before deciding that it closed stdout and lives.
        if not self._gone and not self.stopping:
            self._stdout_check = self.backend.clock.callLater(1.0, self._stdout_closed)

    def _stdout_closed(self) -> None:
        self._stdout_check = None
        if not self._gone and not self.stopping:
            self.backend._stdout_closed(self)

    def processEnded(self, reason: Failure) -> None:
        pass


class StdioBackend(SupervisedBackend):
    """
    A supervised stdio MCP server.

    @param spawner: the reactor's process API (L{IReactorProcess}).
    @param clock: the reactor's time API; backoff and timeouts read it only.
    """

    #: A call is L{Backend.call}'s work (and the busy check); the server's
    #: messages are not tied to a call.
    answers_directly = True

    def __init__(
        self,
        config: StdioServer,
        spawner: IReactorProcess,
        clock: IReactorTime,
        inherit_env: tuple[str, ...],
        max_message: int,
        environ: Mapping[str, str] | None = None,
        stderr: StderrLimits = DEFAULT_STDERR_LIMITS,
    ) -> None:
        super().__init__(config.name, config, clock)
        #: Where the children's stderr lines go (bounded in size and rate).
        self.stderr_log = StderrLog(config.name, clock, stderr, log)
        self.spawner = spawner
        self.max_message = max_message
        #: Bytes that may wait for the child to read them before calls are refused.
        self.max_queue = config.maxQueuedBytes or max(4 * max_message, 1 << 20)
        self._liveness_call: Any = None
        self.env = child_environment(config, inherit_env, os.environ if environ is None else environ)
        self.child: _Child | None = None
        #: (C{protocol: auto}) a process exited during the probe: the next
        #: ones are sent initialize first.
        self.initialize_first = False

    @property
    def session(self) -> McpClientSession | None:  # type: ignore[override]
        child = self.child
        return child.session if child is not None and child.session.ready else None

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    def stopService(self) -> Deferred[None]:
        self._stop_supervising()
        self._unwatch()
        child = self.child
        if child is None:
            self._set_state(State.STOPPED)
            return succeed(None)
        return Deferred.fromCoroutine(self._stop_child(child, graceful=True))

    # -- running the child --------------------------------------------------

    def _argv(self) -> list[str]:
        return [
            sys.executable,
            "-S",
            "-E",
            "-c",
            SHIM,
            str(os.getpid()),
            self.config.command,
            *self.config.args,
        ]

    def _is_current(self, run: Any) -> bool:
        return run is self.child

    def _attempt(self) -> None:
        child = _Child(self, self.max_message)
        self.child = child
        self._set_state(State.STARTING)
        try:
            transport = self.spawner.spawnProcess(
                child,
                sys.executable,
                self._argv(),
                env={**self.env, RUN_VARIABLE: child.run},
                path=self.config.cwd,
                childFDs={0: "w", 1: "r", 2: "r"},
            )
        except Exception as e:
            self.child = None
            self.last_error = f"could not start {self.config.command!r}: {e}"
            log.error("backend {backend}: {why}", backend=self.name, why=self.last_error)
            self._schedule_restart()
            self._first_discovery_done()
            return
        child.pid = transport.pid
        log.info(
            "backend {backend}: started {command} (pid {pid})",
            backend=self.name,
            command=self.config.command,
            pid=child.pid,
        )
        self._discover(child)

    def _why_failed(self, failure: Failure, child: Any) -> str:
        if child._gone and child.exited_probing:
            self.initialize_first = True
            return (
                f"the process {child.exit_reason} during the server/discover probe; the next start sends "
                "initialize first (set protocol: legacy for this server to skip the probe)"
            )
        if child._gone:
            return f"the process {child.exit_reason} before it was ready"
        return super()._why_failed(failure, child)

    def _abandon(self, child: Any) -> None:
        if not child._gone:
            # Restarted from _child_exited once the process is gone.
            d = Deferred.fromCoroutine(self._stop_child(child, graceful=False))
            d.addErrback(lambda f: log.failure("backend {backend}: stopping failed", f, backend=self.name))

    def _child_exited(self, child: _Child) -> None:
        if child is self.child:
            self._unwatch()
        self._end_descendants(child).addErrback(
            lambda f: log.failure("backend {backend}: reaping failed", f, backend=self.name)
        )
        self._run_ended(child, f"the process {child.exit_reason}")

    def call(
        self,
        method: str,
        params: dict[str, Any] | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
        context: Any = None,
    ) -> Deferred[Any]:
        """
        As L{Backend.call}; refused at once (C{errors.BUSY}) while the child has
        C{maxQueuedBytes} or more waiting to be read: a busy server is not
        dead, and its queue stays bounded.
        """
        self._refuse_if_busy()
        return super().call(method, params, on_progress, timeout, context)

    def call_direct(self, method: str, params: dict[str, Any] | None, receiver: Receiver, context: Any) -> DirectCall:
        """As L{Backend.call_direct}, refused as L{call} is while the child is busy."""
        self._refuse_if_busy()
        return super().call_direct(method, params, receiver, context)

    def _refuse_if_busy(self) -> None:
        child = self.child
        if child is not None and self.state is State.UP:
            queued = child.queued()
            if queued >= self.max_queue:
                raise errors.backend_error(
                    errors.BUSY,
                    self.name,
                    f"backend {self.name!r} is busy: {queued} bytes wait for it to read its input "
                    f"(maxQueuedBytes is {self.max_queue}); try again later",
                    limit=self.max_queue,
                )

    # -- liveness -------------------------------------------------------------

    def _discovered(self, result: None, run: Any) -> None:
        super()._discovered(result, run)
        if self._is_current(run) and self.state is State.UP and self.config.livenessTimeout:
            self._watch(run)

    def _watch(self, child: _Child) -> None:
        self._liveness_call = self.clock.callLater(self.config.livenessTimeout / 4, self._check_liveness, child)

    def _unwatch(self) -> None:
        if self._liveness_call is not None and self._liveness_call.active():
            self._liveness_call.cancel()
        self._liveness_call = None

    def _check_liveness(self, child: _Child) -> None:
        """
        A child that wrote nothing for C{livenessTimeout} seconds, not even
        the answer to a ping, is dead (it may be alive but wedged): restart
        it.  One that is quiet for a while is sent a ping (C{server/discover}
        when it speaks 2026-07-28, which has no ping); any output at all
        counts as a sign of life, so a busy server that answers its calls is
        never killed.
        """
        self._liveness_call = None
        if child is not self.child or self._stopping or self.state is not State.UP:
            return
        timeout = self.config.livenessTimeout
        silent = self.clock.seconds() - child.last_heard
        if silent >= timeout:
            log.error(
                "backend {backend} wrote nothing for {silent:.0f} s and did not answer a ping "
                "(livenessTimeout); restarting it",
                backend=self.name,
                silent=silent,
            )
            self.last_error = f"wrote nothing for {silent:.0f} s and did not answer a ping (livenessTimeout)"
            self._set_state(State.DOWN)
            self._abandon(child)
            return
        if silent >= timeout / 4:
            ping = child.session.liveness_request(timeout)
            ping.addErrback(self._ping_failed)
        self._watch(child)

    def _ping_failed(self, failure: Failure) -> None:
        # The answer (or its absence) is judged by _check_liveness; an
        # error answer is a sign of life too.
        if not failure.check(RequestTimeout, PeerGone, JsonRpcError):
            log.failure("backend {backend}: ping failed", failure, backend=self.name)

    def _stdout_closed(self, child: _Child) -> None:
        if child is not self.child or self._stopping:
            return
        log.error("backend {backend} closed its stdout but is still running; restarting it", backend=self.name)
        child.session.connection_lost(Exception("the process closed its stdout"))
        self._set_state(State.DOWN)
        self._abandon(child)

    async def _stop_child(self, child: _Child, graceful: bool) -> None:
        """Close stdin, wait; TERM the group, wait; KILL the group."""
        timeout = self.config.shutdownTimeout
        child.stopping = True
        transport = child.transport
        if not child._gone and transport is not None:
            if graceful:
                transport.closeStdin()
                if await self._wait(child.exited, min(2.0, timeout)):
                    pass
            if not child._gone:
                signal_group(child.pid, signal.SIGTERM, leader_alive=True)  # type: ignore[arg-type]
                if not await self._wait(child.exited, timeout):
                    log.warn(
                        "backend {backend}: no exit {timeout:g} s after SIGTERM; sending SIGKILL",
                        backend=self.name,
                        timeout=timeout,
                    )
                    signal_group(child.pid, signal.SIGKILL, leader_alive=not child._gone)  # type: ignore[arg-type]
                    await self._wait(child.exited, 5.0)
        await self._end_descendants(child)
        if self._stopping and child is self.child:
            self._set_state(State.STOPPED)

    def _end_descendants(self, child: _Child) -> Deferred[None]:
        """End what the child left behind (once, however many ask): its
        process group, then the descendants that started sessions of
        their own (reparented to us)."""
        if child.descendants_ended is None:
            child.descendants_ended = Deferred.fromCoroutine(self._end_group_and_adopted(child))
        return child.descendants_ended

    async def _end_group_and_adopted(self, child: _Child) -> None:
        if child.pid is not None and not child.group_gone:
            await self._reap_group(child)
        await self._end_adopted(child.run)

    async def _end_adopted(self, run: str) -> None:
        """TERM the adopted descendants of this run (each with its own
        process group), KILL them after shutdownTimeout, and reap them;
        what they leave behind is adopted in turn and ended the same way."""
        timeout = self.config.shutdownTimeout
        started = self.clock.seconds()
        sent: dict[int, int] = {}
        while True:
            live, zombies = adopted(run)
            reap(zombies & sent.keys())
            if not live:
                return
            waited = self.clock.seconds() - started
            if waited > timeout + 5.0:
                log.warn(
                    "backend {backend}: descendants {pids} survive SIGKILL; giving up on them",
                    backend=self.name,
                    pids=sorted(live),
                )
                return
            sig = signal.SIGTERM if waited < timeout else signal.SIGKILL
            for pid in live:
                if sent.get(pid) != sig:
                    sent[pid] = sig
                    signal_group(pid, sig, leader_alive=True)
            await deferLater(self.clock, 0.05)

    async def _reap_group(self, child: _Child) -> None:
        """End whatever is left in the child's process group."""
        pgid = child.pid
        assert pgid is not None
        if child.group_gone or not group_alive(pgid):
            child.group_gone = True
            return
        signal_group(pgid, signal.SIGTERM)
        deadline = self.clock.seconds() + self.config.shutdownTimeout
        while group_alive(pgid):
            if self.clock.seconds() >= deadline:
                signal_group(pgid, signal.SIGKILL)
                break
            await deferLater(self.clock, 0.05)
        # Once empty, the group id may be reused: never signal it again.
        child.group_gone = not group_alive(pgid)

    async def _wait(self, d: Deferred[None], timeout: float) -> bool:
        if d.called:
            return True
        waiter: Deferred[None] = Deferred()
        d.addBoth(lambda r: (waiter.callback(True) if not waiter.called else None, r)[1])
        call = self.clock.callLater(timeout, lambda: waiter.called or waiter.callback(False))
        result = await waiter
        if call.active():
            call.cancel()
        return bool(result)



def stop_all(backends: list[Backend]) -> Deferred[Any]:
    """Stop backends in parallel; errors are logged, not raised."""
    ds = []
    for b in backends:
        d = Deferred.fromCoroutine(_stop_one(b))
        ds.append(d)
    return DeferredList(ds, consumeErrors=True)


async def _stop_one(b: Backend) -> None:
    try:
        await b.stopService()
    except Exception:
        log.failure("backend {backend}: stopping failed", backend=b.name)


__all__ = ["StdioBackend", "child_environment", "group_alive", "start_reaping", "stderr_limits", "stop_all"]
