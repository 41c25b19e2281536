"""
Fakes shared by the unit tests: backends the gateway can route to, and a
process spawner for stdio backends.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from twisted_mcp.backends.base import Backend, State


@attrs.define
class Call:
    method: str
    params: Any
    on_progress: Callable[[dict[str, Any]], None] | None
    deferred: Deferred[Any]
    cancelled: bool = False
    context: Any = None


class FakeBackend(Backend):
    """
    A backend whose calls return Deferreds the test fires; it records each
    call, and whether it was cancelled.
    """

    def __init__(
        self,
        name: str,
        tools: list[Any],
        state: State = State.UP,
        *,
        prompts: Sequence[Any] = (),
        resources: Sequence[Any] = (),
        resource_templates: Sequence[Any] = (),
    ) -> None:
        """
        @param tools, prompts: definitions, or names for definitions with
            nothing but a name.
        @param resources: definitions, or URIs for definitions with nothing
            but a URI and a name.
        @param resource_templates: definitions, or URI templates for
            definitions with nothing but a template and a name.
        """
        super().__init__(name)
        self.state = state
        self.tools = [t if isinstance(t, dict) else {"name": t} for t in tools]
        self.prompts = [p if isinstance(p, dict) else {"name": p} for p in prompts]
        self.resources = [r if isinstance(r, dict) else {"uri": r, "name": r} for r in resources]
        self.resource_templates = [t if isinstance(t, dict) else {"uriTemplate": t, "name": t} for t in resource_templates]
        self.calls: list[Call] = []

    def call(
        self,
        method: str,
        params: dict[str, Any] | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
        context: Any = None,
    ) -> Deferred[Any]:
        if self.state is not State.UP:
            raise self.unavailable()
        record: list[Call] = []

        def cancel(d: Deferred[Any]) -> None:
            record[0].cancelled = True

        d: Deferred[Any] = Deferred(cancel)
        record.append(Call(method, params, on_progress, d, context=context))
        self.calls.append(record[0])
        return d


class FakeProcessTransport:
    """What spawnProcess returns: records stdin writes and closes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written: list[bytes] = []
        self.stdin_closed = False
        self.lost = False

    def write(self, data: bytes) -> None:
        assert not self.stdin_closed, "write after closeStdin"
        self.written.append(data)

    def writeSequence(self, seq: list[bytes]) -> None:
        for data in seq:
            self.write(data)

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def loseConnection(self) -> None:
        self.lost = True

    def signalProcess(self, signal: Any) -> None:
        raise AssertionError("the backend signals process groups, not the process")

    def messages(self) -> list[Any]:
        """Every message written to the child's stdin, decoded."""
        data = b"".join(self.written)
        assert data == b"" or data.endswith(b"\n"), data[-100:]
        return [json.loads(line) for line in data.split(b"\n") if line]


@attrs.define
class Spawn:
    protocol: ProcessProtocol
    executable: str
    args: list[str]
    env: Any
    path: Any
    childFDs: Any
    transport: FakeProcessTransport


class FakeSpawner:
    """An IReactorProcess that records spawnProcess calls."""

    def __init__(self) -> None:
        self.spawned: list[Spawn] = []
        self.next_pid = 4000
        self.error: Exception | None = None

    def spawnProcess(
        self,
        processProtocol: ProcessProtocol,
        executable: str,
        args: Any = (),
        env: Any = None,
        path: Any = None,
        uid: Any = None,
        gid: Any = None,
        usePTY: bool = False,
        childFDs: Any = None,
    ) -> FakeProcessTransport:
        if self.error is not None:
            raise self.error
        self.next_pid += 1
        transport = FakeProcessTransport(self.next_pid)
        self.spawned.append(Spawn(processProtocol, executable, list(args), env, path, childFDs, transport))
        processProtocol.makeConnection(transport)  # type: ignore[arg-type]
        return transport


@attrs.define
class ServerRequest:
    """A request a backend's server sent, as L{RecordingEvents} got it."""

    backend: Backend
    method: str
    params: dict[str, Any]
    related: Any
    deferred: Deferred[Any]
    cancelled: bool = False


class RecordingEvents:
    """
    A L{twisted_mcp.backends.base.BackendEvents} that records what the
    backends hand on: each server request gets a Deferred the test fires
    (and records whether the backend cancelled it).
    """

    def __init__(self) -> None:
        self.requests: list[ServerRequest] = []
        self.notifications: list[tuple[Backend, str, dict[str, Any], Any]] = []

    def server_request(self, backend: Backend, method: str, params: dict[str, Any], related: Any) -> Deferred[Any]:
        record: list[ServerRequest] = []

        def cancel(d: Deferred[Any]) -> None:
            record[0].cancelled = True

        d: Deferred[Any] = Deferred(cancel)
        record.append(ServerRequest(backend, method, params, related, d))
        self.requests.append(record[0])
        return d

    def server_notification(self, backend: Backend, method: str, params: dict[str, Any], related: Any) -> None:
        self.notifications.append((backend, method, params, related))


def begin_tool(policy: Any, session: str, params: dict[str, Any], catalog: Any, peer: Any = None) -> Any:
    """
    C{policy.begin} for a C{tools/call} of C{params["name"]}, resolved in
    C{catalog} as the dispatch core resolves it (an unknown name is refused
    through the policy, audited).
    """
    from twisted_mcp.policy.subject import subject_of

    name = params.get("name")
    entry = catalog.entries.get(name) if type(name) is str else None
    if entry is None:
        raise policy.refuse_unknown(session, "tools/call", "tool", str(name), peer)
    return policy.begin(session, "tools/call", subject_of("tool", entry), params, peer, entry)
