"""
The gateway driven by the official `mcp` Python SDK client, through the real
`twistd -n --pidfile= mcp-gateway --config ...` command, with real
third-party backends (`@modelcontextprotocol/server-everything` from npm,
`mcp-server-time` from PyPI) and small SDK-built servers of our own.
"""

from __future__ import annotations

import time

import anyio
import pytest
from mcp import MCPError

from tests import mcpclient as mc
from twisted_mcp.mcp import errors

from .conftest import everything, gateway_argv, gateway_env, server, time_server


def connect(config: str, tmp_path, **kwargs):
    return mc.connect(
        gateway_argv(config),
        env=gateway_env(),
        cwd=str(tmp_path),
        errlog=str(tmp_path / "gateway.stderr"),
        **kwargs,
    )


def log_of(tmp_path) -> str:
    path = tmp_path / "gateway.stderr"
    return path.read_text() if path.exists() else ""


def test_merged_catalog_and_routing(write_config, tmp_path):
    config = write_config({"time": time_server(), "everything": everything(), "slow": server("slow")})

    async def scenario():
        async with connect(config, tmp_path) as client:
            assert client.protocol_version == "2026-07-28"  # the SDK probed server/discover and speaks the stateless era
            names = await mc.tool_names(client)
            assert names == sorted(names)
            for expected in ("time__get_current_time", "time__convert_time", "everything__echo", "slow__sleep", "slow__echo"):
                assert expected in names
            assert all(n.split("__")[0] in ("time", "everything", "slow") for n in names)

            now = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not now.is_error
            assert now.structured_content["timezone"] == "UTC"  # structuredContent passed through
            assert await mc.call_text(client, "everything__echo", {"message": "hello"}) == "Echo: hello"
            assert await mc.call_text(client, "slow__echo", {"text": "routed"}) == "routed"

            # The backend's own tool error comes back as a result with isError.
            bad = await client.call_tool("time__get_current_time", {"timezone": "Not/AZone"})
            assert bad.is_error

            with pytest.raises(MCPError) as e:
                await client.call_tool("nobody__nothing", {})
            assert e.value.error.code == -32602

    mc.run(scenario, timeout=90)
    log = log_of(tmp_path)
    assert "backend time is up: 2 tool(s)" in log
    assert "backend everything is up:" in log


def test_hundred_concurrent_calls_none_lost(write_config, tmp_path):
    config = write_config({"slow": server("slow"), "everything": everything()})

    async def scenario():
        async with connect(config, tmp_path) as client:
            await mc.tool_names(client)
            results: dict[int, str] = {}

            async def one(i: int) -> None:
                if i % 2:
                    results[i] = await mc.call_text(client, "slow__echo", {"text": f"call {i}"})
                else:
                    results[i] = await mc.call_text(client, "everything__echo", {"message": f"call {i}"})

            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(one, i)
            assert len(results) == 100
            for i, text in results.items():
                assert text == (f"call {i}" if i % 2 else f"Echo: call {i}")

    mc.run(scenario, timeout=120)


def test_slow_call_does_not_delay_others(write_config, tmp_path):
    config = write_config({"slow": server("slow"), "time": time_server()})

    async def scenario():
        async with connect(config, tmp_path) as client:
            await mc.tool_names(client)
            order: list[str] = []

            async def slow() -> None:
                await mc.call_text(client, "slow__sleep", {"seconds": 3})
                order.append("sleep")

            async def fast() -> None:
                await anyio.sleep(0.3)
                started = time.monotonic()
                for _ in range(5):
                    await mc.call_text(client, "slow__echo", {"text": "x"})
                    await client.call_tool("time__get_current_time", {"timezone": "UTC"})
                order.append("fast")
                assert time.monotonic() - started < 2.5

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                tg.start_soon(fast)
            assert order == ["fast", "sleep"]

    mc.run(scenario, timeout=60)


def test_progress_reaches_the_client_before_the_result(write_config, tmp_path):
    config = write_config({"everything": everything(), "slow": server("slow")})

    async def scenario():
        async with connect(config, tmp_path) as client:
            await mc.tool_names(client)
            arrived: list[str] = []
            rec = mc.ProgressRecorder()

            async def on_progress(progress, total, message):
                arrived.append("progress")
                await rec(progress, total, message)

            result = await client.call_tool(
                "everything__trigger-long-running-operation",
                {"duration": 1, "steps": 4},
                progress_callback=on_progress,
            )
            arrived.append("result")
            assert not result.is_error
            assert [p for p, _, _ in rec.events] == [1, 2, 3, 4]
            assert arrived[-1] == "result" and arrived.count("progress") == 4

            result, events = await mc.call_with_progress(client, "slow__sleep", {"seconds": 0.6})
            assert len(events) >= 3

    mc.run(scenario, timeout=60)


def test_crashing_backend_restarts_while_others_keep_serving(write_config, tmp_path):
    config = write_config({"crashy": server("crashy"), "slow": server("slow")}, restartDelay=0.5)

    async def scenario():
        async with connect(config, tmp_path) as client:
            await mc.tool_names(client)
            first_pid = int(await mc.call_text(client, "crashy__pid"))
            slow_pid = int(await mc.call_text(client, "slow__pid"))

            # A call in flight when the backend dies fails at once, naming it.
            started = time.monotonic()
            with pytest.raises(MCPError) as e:
                await client.call_tool("crashy__crash", {})
            assert time.monotonic() - started < 5
            assert e.value.error.code == errors.BACKEND_LOST
            assert "crashy" in e.value.error.message

            # While it is down: the other backend still answers; calls to it fail at once.
            assert await mc.call_text(client, "slow__echo", {"text": "still"}) == "still"
            try:
                await client.call_tool("crashy__echo", {"text": "too early"})
            except MCPError as down:
                assert down.error.code == errors.BACKEND_UNAVAILABLE
                assert down.error.data["backend"] == "crashy"

            # It comes back.
            async def back() -> bool:
                try:
                    return await mc.call_text(client, "crashy__echo", {"text": "back"}) == "back"
                except MCPError:
                    return False

            deadline = time.monotonic() + 20
            while not await back():
                assert time.monotonic() < deadline, "crashy never came back"
                await anyio.sleep(0.2)
            assert int(await mc.call_text(client, "crashy__pid")) != first_pid
            assert int(await mc.call_text(client, "slow__pid")) == slow_pid

    mc.run(scenario, timeout=90)
    assert "backend crashy: the process exited with code 3" in log_of(tmp_path)


def test_changed_tools_after_restart_notify_the_client(write_config, tmp_path):
    tools_file = tmp_path / "tools.txt"
    tools_file.write_text("first_extra\n")
    config = write_config(
        {"crashy": server("crashy", env={"CRASHY_TOOLS_FILE": str(tools_file)})}, restartDelay=0.2
    )

    async def scenario():
        notes = mc.NotificationRecorder()
        # list_changed reaches handshake-era sessions (stateless-era clients get it on subscriptions/listen).
        async with connect(config, tmp_path, message_handler=notes, mode="legacy") as client:
            names = await mc.tool_names(client)
            assert "crashy__first_extra" in names
            tools_file.write_text("second_extra\n")
            with pytest.raises(MCPError):
                await client.call_tool("crashy__crash", {})
            await notes.wait_for("notifications/tools/list_changed", timeout=20)
            names = await mc.tool_names(client)
            assert "crashy__second_extra" in names and "crashy__first_extra" not in names

    mc.run(scenario, timeout=60)


def test_cancellation_reaches_the_backend(write_config, tmp_path):
    cancel_log = tmp_path / "cancelled.log"
    config = write_config({"slow": server("slow", env={"SLOW_CANCEL_LOG": str(cancel_log)})})

    async def scenario():
        async with connect(config, tmp_path) as client:
            await mc.tool_names(client)
            await mc.cancel_call(client, "slow__sleep", {"seconds": 30})
            await mc.wait_until(lambda: cancel_log.exists() and "cancelled" in cancel_log.read_text(), 10)
            # The session goes on.
            assert await mc.call_text(client, "slow__echo", {"text": "after"}) == "after"

    mc.run(scenario, timeout=60)


def test_call_timeout_answers_and_cancels_at_the_backend(write_config, tmp_path):
    cancel_log = tmp_path / "cancelled.log"
    config = write_config({"slow": server("slow", env={"SLOW_CANCEL_LOG": str(cancel_log)}, callTimeout=1)})

    async def scenario():
        async with connect(config, tmp_path) as client:
            await mc.tool_names(client)
            started = time.monotonic()
            with pytest.raises(MCPError) as e:
                await client.call_tool("slow__sleep", {"seconds": 30})
            assert 0.9 <= time.monotonic() - started < 5
            assert e.value.error.code == errors.BACKEND_TIMEOUT
            assert e.value.error.data == {"backend": "slow", "timeout": 1.0}
            await mc.wait_until(lambda: cancel_log.exists() and "cancelled" in cancel_log.read_text(), 10)
            assert await mc.call_text(client, "slow__echo", {"text": "fine"}) == "fine"

    mc.run(scenario, timeout=60)


def test_backends_that_exit_at_start_or_print_garbage(write_config, tmp_path):
    config = write_config(
        {"dead": server("exit_at_start"), "garbage": server("garbage"), "time": time_server()},
        restartDelay=0.2,
    )

    async def scenario():
        notes = mc.NotificationRecorder()
        async with connect(config, tmp_path, message_handler=notes) as client:
            names = await mc.tool_names(client)
            assert "garbage__echo" in names and "time__get_current_time" in names
            assert not [n for n in names if n.startswith("dead__")]
            assert await mc.call_text(client, "garbage__echo", {"text": "clean"}) == "clean"
            # Nothing unparsable reached the client's transport.
            assert notes.errors == []

    mc.run(scenario, timeout=60)
    log = log_of(tmp_path)
    assert "[dead]" in log
    assert "backend dead is down" in log
