"""
Helpers for the whole-surface tests (test_surface_*.py): an SDK client's side
of server-to-client requests that records what it was asked and answers with
its own recognisable values, listings that follow `nextCursor`, and the ways
these tests start the gateway and the backends.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import anyio
from mcp_types import (
    CreateMessageResult,
    ElicitResult,
    ListRootsResult,
    LoggingMessageNotificationParams,
    PromptReference,
    ResourceTemplateReference,
    Root,
    TextContent,
)

from tests import mcpclient as mc

from .conftest import NODE_DIR, bin_path, gateway_argv, gateway_env

EVERYTHING_STDIO = ["npx", "--no-install", "mcp-server-everything", "stdio"]
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


class ClientSide:
    """
    The client's answers to sampling, elicitation and roots requests, and
    what it was sent: every request and log message is recorded, every answer
    carries this client's C{tag} so a test can tell whose answer a tool result
    carries.

    C{hold}: when set, each sampling request waits for this event before it is
    answered (to keep several in flight at once); C{entered} is set when the
    first sampling request arrives.
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.sampling: list[Any] = []
        self.elicitations: list[Any] = []
        self.roots_requests = 0
        self.logs: list[LoggingMessageNotificationParams] = []
        self.notes = mc.NotificationRecorder()
        self.hold: anyio.Event | None = None
        self.entered = anyio.Event()

    @property
    def answer(self) -> str:
        return f"sampled answer from {self.tag}"

    @property
    def root(self) -> str:
        return f"file:///tmp/roots-of-{self.tag}"

    async def sample(self, context: Any, params: Any) -> CreateMessageResult:
        self.sampling.append(params)
        self.entered.set()
        if self.hold is not None:
            with anyio.fail_after(30):
                await self.hold.wait()
        return CreateMessageResult(
            role="assistant",
            content=TextContent(type="text", text=self.answer),
            model=f"model-{self.tag}",
            stop_reason="endTurn",
        )

    async def elicit(self, context: Any, params: Any) -> ElicitResult:
        self.elicitations.append(params)
        if getattr(params, "mode", "form") == "url":
            return ElicitResult(action="accept")
        return ElicitResult(action="accept", content={"name": f"Ada {self.tag}", "check": True, "integer": 42})

    async def list_roots(self, context: Any) -> ListRootsResult:
        self.roots_requests += 1
        return ListRootsResult(roots=[Root(uri=self.root, name=f"root of {self.tag}")])

    async def log(self, params: LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    def callbacks(self, sampling: bool = True, elicitation: bool = True, roots: bool = True) -> dict[str, Any]:
        """Keyword arguments for C{mcp.Client}: the capabilities this client declares are those given."""
        out: dict[str, Any] = {"logging_callback": self.log, "message_handler": self.notes}
        if sampling:
            out["sampling_callback"] = self.sample
        if elicitation:
            out["elicitation_callback"] = self.elicit
        if roots:
            out["list_roots_callback"] = self.list_roots
        return out

    def updated(self) -> list[str]:
        """The URIs of the notifications/resources/updated received, in order."""
        return [str(n.params.uri) for n in self.notes.notifications if n.method == "notifications/resources/updated"]

    def log_levels(self, logger_part: str) -> set[str]:
        """The levels of the log messages received whose logger names C{logger_part}."""
        return {m.level for m in self.logs if logger_part in (m.logger or "")}


def connect_gateway(config: str, tmp_path: Any, **kwargs: Any):
    """An SDK client on a `twistd -n mcp-gateway` child (stdio), handshake era."""
    return mc.connect(
        gateway_argv(config),
        env=gateway_env(),
        cwd=str(tmp_path),
        errlog=str(tmp_path / "gateway.stderr"),
        mode="legacy",
        read_timeout=60,
        **kwargs,
    )


def connect_socket(path: str, tmp_path: Any, name: str, **kwargs: Any):
    """An SDK client on the daemon's Unix socket, through `twisted-mcp connect`."""
    return mc.connect(
        [bin_path("twisted-mcp"), "connect", f"unix:path={path}"],
        env=gateway_env(),
        cwd=str(tmp_path),
        errlog=str(tmp_path / f"{name}.stderr"),
        mode="legacy",
        read_timeout=60,
        **kwargs,
    )


def connect_everything_directly(tmp_path: Any, **kwargs: Any):
    """An SDK client on server-everything itself (stdio), the reference for what the gateway should pass."""
    return mc.connect(
        EVERYTHING_STDIO, cwd=NODE_DIR, errlog=str(tmp_path / "everything-direct.stderr"), mode="legacy", **kwargs
    )


def log_of(tmp_path: Any, name: str = "gateway.stderr") -> str:
    path = tmp_path / name
    return path.read_text() if path.exists() else ""


async def all_resources(client: Any) -> list[Any]:
    out: list[Any] = []
    cursor: str | None = None
    for _ in range(100):
        page = await client.list_resources(cursor=cursor, cache_mode="bypass")
        out.extend(page.resources)
        cursor = page.next_cursor
        if not cursor:
            return out
    raise AssertionError("resources/list: more than 100 pages")


async def all_templates(client: Any) -> list[Any]:
    out: list[Any] = []
    cursor: str | None = None
    for _ in range(100):
        page = await client.list_resource_templates(cursor=cursor, cache_mode="bypass")
        out.extend(page.resource_templates)
        cursor = page.next_cursor
        if not cursor:
            return out
    raise AssertionError("resources/templates/list: more than 100 pages")


async def all_prompts(client: Any) -> list[Any]:
    out: list[Any] = []
    cursor: str | None = None
    for _ in range(100):
        page = await client.list_prompts(cursor=cursor, cache_mode="bypass")
        out.extend(page.prompts)
        cursor = page.next_cursor
        if not cursor:
            return out
    raise AssertionError("prompts/list: more than 100 pages")


async def complete_prompt(client: Any, name: str, argument: str, value: str, context: dict | None = None) -> list[str]:
    result = await client.complete(PromptReference(type="ref/prompt", name=name), {"name": argument, "value": value}, context)
    return list(result.completion.values)


async def complete_template(client: Any, uri_template: str, argument: str, value: str) -> list[str]:
    ref = ResourceTemplateReference(type="ref/resource", uri=uri_template)
    result = await client.complete(ref, {"name": argument, "value": value})
    return list(result.completion.values)


def text_of(result: Any) -> str:
    """All text content of a tool result, joined."""
    return "\n".join(item.text for item in result.content if isinstance(item, TextContent))


def read_events(path: Any) -> list[str]:
    """The lines tests/servers/surface.py appended to its SURFACE_EVENT_LOG."""
    return path.read_text().splitlines() if path.exists() else []


def read_audit(path: Any) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
