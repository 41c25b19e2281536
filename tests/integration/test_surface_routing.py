"""
Whose answer is whose, across the whole MCP surface (issue 10), through the
real gateway command: server-to-client requests reach the client whose call
caused them, resource URIs that collide between backends are made unique and
mapped back, subscriptions and log messages reach exactly the sessions that
asked for them, and subscriptions survive a backend restart.

Several clients share one daemon (`twistd ... mcp-gateway --listen unix:...`),
each an SDK client through `twisted-mcp connect`.
"""

from __future__ import annotations

import os
import signal

import anyio
import pytest
from mcp import MCPError

from tests import mcpclient as mc

from .conftest import everything, server, wait_for_path
from .surface_helpers import (
    LEVELS,
    ClientSide,
    all_resources,
    all_templates,
    complete_template,
    connect_gateway,
    connect_socket,
    read_events,
    text_of,
)
from .test_http import http_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

SAMPLING_TOOL = "everything__trigger-sampling-request"
SHARED_URI = "memo://shared/notes"


def surface(tmp_path, label: str, **extra):
    """tests/servers/surface.py as backend C{label}, listing SHARED_URI with the text "<label> notes"."""
    env = {"SURFACE_LABEL": label, "SURFACE_URI": SHARED_URI, "SURFACE_EVENT_LOG": str(tmp_path / f"{label}.events")}
    return server("surface", env=env, **extra)


def start_daemon(daemon, tmp_path, servers: dict, **gateway) -> str:
    sock = str(tmp_path / "gw.sock")
    daemon(servers, f"unix:{sock}", **gateway)
    wait_for_path(sock)
    return sock


async def sample(client, prompt: str):
    return await client.call_tool(SAMPLING_TOOL, {"prompt": prompt, "maxTokens": 10})


def test_two_clients_sample_at_once_through_one_shared_backend(daemon, http_server, tmp_path):  # noqa: F811
    # Streamable HTTP: server-everything sends sampling/createMessage on the stream of the
    # tools/call POST that caused it, so the gateway knows exactly whose call it belongs to
    # even with both calls in flight (over stdio it could not: see the next test).
    ev = http_server("everything")
    sock = start_daemon(daemon, tmp_path, {"everything": {"type": "http", "url": f"{ev.url}/mcp"}})

    async def scenario():
        a, b, c = ClientSide("A"), ClientSide("B"), ClientSide("C")
        release = anyio.Event()
        a.hold = b.hold = release
        async with (
            connect_socket(sock, tmp_path, "A", **a.callbacks()) as client_a,
            connect_socket(sock, tmp_path, "B", **b.callbacks()) as client_b,
            connect_socket(sock, tmp_path, "C", **c.callbacks(sampling=False)) as client_c,
        ):
            results = {}

            async def call(client, key):
                results[key] = await sample(client, f"question from {key}")

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, client_a, "A")
                tg.start_soon(call, client_b, "B")
                # Both sampling requests wait at their clients' callbacks at the same time.
                with anyio.move_on_after(30):
                    await a.entered.wait()
                    await b.entered.wait()
                assert a.entered.is_set() and b.entered.is_set(), (
                    f"sampling requests reached A: {a.entered.is_set()}, B: {b.entered.is_set()} within 30 s"
                )
                release.set()

            for key, side, other in (("A", a, b), ("B", b, a)):
                assert [r.messages[0].content.text for r in side.sampling] == [
                    f"Resource trigger-sampling-request context: question from {key}"
                ]
                assert not results[key].is_error, text_of(results[key])
                assert side.answer in text_of(results[key]) and other.answer not in text_of(results[key])

            # A client that did not declare sampling: its call gets a clear error (the backend's
            # request is refused), while another client's sampling call at the same moment works.
            a.hold = None
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, client_a, "A2")
                tg.start_soon(call, client_c, "C")
            assert results["C"].is_error
            assert "sampling" in text_of(results["C"]).lower()
            assert c.sampling == []
            assert not results["A2"].is_error and a.answer in text_of(results["A2"])
            assert a.sampling[-1].messages[0].content.text.endswith("question from A2")
            assert len(b.sampling) == 1

    mc.run(scenario, timeout=150)


def test_sampling_on_a_shared_stdio_backend_reaches_the_client_with_the_call_in_flight(daemon, tmp_path):
    # Over stdio nothing in server-everything's request names the call that caused it; with
    # one call in flight to that backend, the gateway knows whose it is.
    sock = start_daemon(daemon, tmp_path, {"everything": everything()})

    async def scenario():
        a, b, c = ClientSide("A"), ClientSide("B"), ClientSide("C")
        async with (
            connect_socket(sock, tmp_path, "A", **a.callbacks()) as client_a,
            connect_socket(sock, tmp_path, "B", **b.callbacks()) as client_b,
            connect_socket(sock, tmp_path, "C", **c.callbacks(sampling=False)) as client_c,
        ):
            first = await sample(client_a, "first from A")
            second = await sample(client_b, "then from B")
            assert a.answer in text_of(first) and b.answer in text_of(second)
            assert [r.messages[0].content.text[-12:] for r in a.sampling] == ["first from A"]
            assert [r.messages[0].content.text[-11:] for r in b.sampling] == ["then from B"]
            refused = await sample(client_c, "from C")
            assert refused.is_error and "sampling" in text_of(refused).lower()
            assert c.sampling == [] and len(a.sampling) == 1 and len(b.sampling) == 1

    mc.run(scenario, timeout=120)


def test_the_same_uri_on_two_backends_is_made_unique_and_mapped_both_ways(write_config, tmp_path):
    config = write_config({"alpha": surface(tmp_path, "alpha"), "beta": surface(tmp_path, "beta")})

    async def scenario():
        async with connect_gateway(config, tmp_path) as client:
            listed = [r.uri for r in await all_resources(client)]
            assert len(listed) == 2 and len(set(listed)) == 2, listed
            owner = {}
            for uri in listed:
                contents = (await client.read_resource(uri)).contents
                assert contents[0].uri == uri  # the contents name the URI the client asked for
                owner[contents[0].text.split()[0]] = uri
            assert set(owner) == {"alpha", "beta"}
            # Deterministic: a second listing gives the same URIs.
            assert [r.uri for r in await all_resources(client)] == listed

            # Inside what flows out: a prompt's embedded resource and a tool's resource link
            # carry the URI the client can read, not the backend's colliding one.
            for label in ("alpha", "beta"):
                quote = await client.get_prompt(f"{label}__quote")
                assert quote.messages[1].content.resource.uri == owner[label]
                assert quote.messages[1].content.resource.text == f"{label} notes"
                linked = await client.call_tool(f"{label}__link", {})
                assert [c.uri for c in linked.content if getattr(c, "type", "") == "resource_link"] == [owner[label]]
                assert linked.content[1].resource.uri == owner[label]

            # The two backends' identical templates are told apart too.
            templates = [t.uri_template for t in await all_templates(client)]
            assert len(templates) == 2 and len(set(templates)) == 2, templates
            seen = set()
            for template in templates:
                assert "{item}" in template
                text = (await client.read_resource(template.replace("{item}", "kiwi"))).contents[0].text
                seen.add(text)
                assert await complete_template(client, template, "item", "ap") == ["apple", "apricot"]
            assert seen == {"alpha item kiwi", "beta item kiwi"}

    mc.run(scenario, timeout=90)


def test_subscriptions_reach_only_their_sessions_are_counted_and_survive_a_restart(daemon, tmp_path):
    alpha_events, beta_events = tmp_path / "alpha.events", tmp_path / "beta.events"
    sock = start_daemon(
        daemon,
        tmp_path,
        {"alpha": surface(tmp_path, "alpha", restartDelay=0.3), "beta": surface(tmp_path, "beta")},
    )

    async def scenario():
        a, b, c = ClientSide("A"), ClientSide("B"), ClientSide("C")
        async with (
            connect_socket(sock, tmp_path, "A", **a.callbacks()) as client_a,
            connect_socket(sock, tmp_path, "B", **b.callbacks()) as client_b,
            connect_socket(sock, tmp_path, "C", **c.callbacks()) as client_c,
        ):
            owner = {}
            for uri in [r.uri for r in await all_resources(client_a)]:
                owner[(await client_a.read_resource(uri)).contents[0].text.split()[0]] = uri
            alpha_uri, beta_uri = owner["alpha"], owner["beta"]

            await client_a.subscribe_resource(alpha_uri)
            await client_c.subscribe_resource(alpha_uri)
            await client_b.subscribe_resource(beta_uri)
            # One upstream subscription per URI, whatever the number of clients.
            await mc.wait_until(lambda: f"subscribe {SHARED_URI}" in read_events(beta_events), 10)
            await anyio.sleep(0.5)
            assert read_events(alpha_events).count(f"subscribe {SHARED_URI}") == 1
            assert read_events(beta_events).count(f"subscribe {SHARED_URI}") == 1

            # An update of alpha's resource goes to A and C (subscribed), not to B, even though
            # B made the call that caused it.
            assert await mc.call_text(client_b, "alpha__touch") == "notified"
            await mc.wait_until(lambda: a.updated() and c.updated(), timeout=10)
            assert await mc.call_text(client_a, "beta__touch") == "notified"
            await mc.wait_until(lambda: b.updated(), timeout=10)
            await anyio.sleep(1)
            assert a.updated() == [alpha_uri] and c.updated() == [alpha_uri] and b.updated() == [beta_uri]

            # alpha is killed; the gateway restarts it and subscribes again.
            old_pid = int(await mc.call_text(client_a, "alpha__pid"))
            os.kill(old_pid, signal.SIGKILL)

            failures: list[str] = []

            async def new_pid():
                # While alpha restarts a call may fail (at once: "is starting"); it must not hang.
                try:
                    return int(await mc.call_text(client_a, "alpha__pid", read_timeout_seconds=10))
                except (MCPError, mc.ToolCallError) as e:
                    failures.append(str(e))
                    return None

            pid = None
            with anyio.move_on_after(30):
                while (pid := await new_pid()) in (None, old_pid):
                    await anyio.sleep(0.2)
            assert pid not in (None, old_pid), f"alpha did not come back within 30 s; calls failed with: {failures[-3:]}"
            assert not [f for f in failures if "timed out" in f], f"a call made while alpha restarted hung: {failures}"
            started = read_events(alpha_events).index(f"start {pid}")
            await mc.wait_until(lambda: f"subscribe {SHARED_URI}" in read_events(alpha_events)[started:], 10)
            assert await mc.call_text(client_b, "alpha__touch") == "notified"
            await mc.wait_until(lambda: len(a.updated()) == 2 and len(c.updated()) == 2, timeout=10)
            assert b.updated() == [beta_uri]

            # Unsubscribing: the upstream subscription ends with its last client.
            await client_a.unsubscribe_resource(alpha_uri)
            assert f"unsubscribe {SHARED_URI}" not in read_events(alpha_events)
            assert await mc.call_text(client_b, "alpha__touch") == "notified"
            await mc.wait_until(lambda: len(c.updated()) == 3, timeout=10)
            await client_c.unsubscribe_resource(alpha_uri)
            await mc.wait_until(lambda: read_events(alpha_events)[-1] == f"unsubscribe {SHARED_URI}", 10)
            assert await mc.call_text(client_b, "alpha__touch") == "not subscribed"
            await anyio.sleep(0.5)
            assert len(a.updated()) == 2 and len(c.updated()) == 3

    mc.run(scenario, timeout=150)


def test_log_messages_reach_each_session_at_its_own_level(daemon, tmp_path):
    events = tmp_path / "notes.events"
    sock = start_daemon(
        daemon,
        tmp_path,
        {"notes": server("surface", env={"SURFACE_LABEL": "notes", "SURFACE_EVENT_LOG": str(events)})},
    )

    async def scenario():
        a, b = ClientSide("A"), ClientSide("B")
        async with (
            connect_socket(sock, tmp_path, "A", **a.callbacks()) as client_a,
            connect_socket(sock, tmp_path, "B", **b.callbacks()) as client_b,
        ):
            await client_b.set_logging_level("error")
            await client_a.set_logging_level("debug")
            # The shared backend is set to the most verbose level any of its sessions asked for.
            await mc.wait_until(lambda: [e for e in read_events(events) if e.startswith("setLevel")][-1:] == ["setLevel debug"], 10)
            assert await mc.call_text(client_a, "notes__log_levels") == "8"
            assert await mc.call_text(client_b, "notes__log_levels") == "8"
            await mc.wait_until(lambda: a.log_levels("notes") == set(LEVELS), timeout=10)
            await mc.wait_until(lambda: b.log_levels("notes") == set(LEVELS[4:]), timeout=10)
            await anyio.sleep(0.5)
            assert b.log_levels("notes") == {"error", "critical", "alert", "emergency"}
            assert all(LEVELS.index(m.level) >= LEVELS.index("error") for m in b.logs)
            assert {str(m.data) for m in a.logs} >= {f"notes {level}" for level in LEVELS}

    mc.run(scenario, timeout=120)


def test_long_listings_are_merged_across_pages_both_ways(write_config, tmp_path):
    # Two backends that page their own resources/list (40 a page); the gateway follows
    # their cursors at discovery and pages the merged listing with cursors of its own.
    many = {"SURFACE_RESOURCE_COUNT": "130", "SURFACE_PAGE_SIZE": "40"}
    config = write_config(
        {
            "left": server("surface", env={"SURFACE_LABEL": "left", "SURFACE_URI": "memo://left/notes", **many}),
            "right": server("surface", env={"SURFACE_LABEL": "right", "SURFACE_URI": "memo://right/notes", **many}),
        }
    )

    async def scenario():
        async with connect_gateway(config, tmp_path) as client:
            first = await client.list_resources(cache_mode="bypass")
            assert first.next_cursor, "262 resources in one page"
            listed = [r.uri for r in await all_resources(client)]
            assert len(listed) == len(set(listed)) == 262
            assert {"memo://left/notes", "memo://right/notes"} <= set(listed)
            # memo://many/<n> is on both backends: told apart, and each read from its own.
            texts = [(await client.read_resource(uri)).contents[0].text for uri in listed]
            expected = {f"{side} many {n}" for side in ("left", "right") for n in range(1, 131)}
            assert sorted(texts) == sorted(expected | {"left notes", "right notes"})
            with pytest.raises(MCPError) as e:
                await client.list_resources(cursor="not-a-cursor-of-the-gateway", cache_mode="bypass")
            assert e.value.error.code == -32602

    mc.run(scenario, timeout=90)


def test_a_clients_roots_change_reaches_the_backends_it_has_used(daemon, tmp_path):
    sock = start_daemon(daemon, tmp_path, {"alpha": surface(tmp_path, "alpha"), "beta": surface(tmp_path, "beta")})
    alpha_events, beta_events = tmp_path / "alpha.events", tmp_path / "beta.events"

    async def scenario():
        a, b = ClientSide("A"), ClientSide("B")
        async with (
            connect_socket(sock, tmp_path, "A", **a.callbacks()) as client_a,
            connect_socket(sock, tmp_path, "B", **b.callbacks()) as client_b,
        ):
            await mc.call_text(client_a, "alpha__pid")
            await mc.call_text(client_b, "beta__pid")
            await client_a.send_roots_list_changed()
            with anyio.move_on_after(10):
                while "roots/list_changed" not in read_events(alpha_events):
                    await anyio.sleep(0.05)
            assert "roots/list_changed" in read_events(alpha_events), "A's roots/list_changed never reached alpha"
            # beta was used by B only: A's roots are none of its business.
            await mc.call_text(client_a, "alpha__pid")
            await anyio.sleep(0.5)
            assert "roots/list_changed" not in read_events(beta_events)

    mc.run(scenario, timeout=90)
