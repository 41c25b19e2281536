"""
The whole MCP surface through the real `twistd -n mcp-gateway` command (issue
10): the official `mcp` SDK client, with sampling, elicitation, roots and
logging callbacks, against `@modelcontextprotocol/server-everything` over
stdio and over Streamable HTTP, beside `mcp-server-time` (a backend with tools
only, which must neither contribute to nor break the other listings).

What server-everything offers is read from the server itself where it can be
(a direct SDK connection gives the reference listing and texts), so these
tests follow the pinned version in tests/node/package.json.
"""

from __future__ import annotations

import base64
import gzip

import anyio
import pytest
from mcp import MCPError
from mcp_types import BlobResourceContents, EmbeddedResource, TextContent, TextResourceContents

from tests import mcpclient as mc

from .conftest import everything, time_server
from .surface_helpers import (
    LEVELS,
    ClientSide,
    all_prompts,
    all_resources,
    all_templates,
    complete_prompt,
    complete_template,
    connect_everything_directly,
    connect_gateway,
    text_of,
)
from .test_http import http_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

TEXT_TEMPLATE = "demo://resource/dynamic/text/{resourceId}"
BLOB_TEMPLATE = "demo://resource/dynamic/blob/{resourceId}"
PROMPTS = {"simple-prompt", "args-prompt", "completable-prompt", "resource-prompt"}


@pytest.fixture(params=["stdio", "http"])
def everything_backend(request, http_server):  # noqa: F811
    """server-everything as a gateway backend entry: a stdio child, or a Streamable HTTP server."""
    if request.param == "stdio":
        return everything()
    server = http_server("everything")
    return {"type": "http", "url": f"{server.url}/mcp"}


@pytest.fixture
def surface_config(write_config, everything_backend):
    return write_config({"everything": everything_backend, "time": time_server()})


def test_every_resource_listed_and_read_text_and_binary(surface_config, tmp_path):
    async def reference():
        async with connect_everything_directly(tmp_path) as direct:
            listed = await all_resources(direct)
            texts = {}
            for resource in listed:
                texts[resource.uri] = (await direct.read_resource(resource.uri)).contents[0]
            return {r.uri: r for r in listed}, texts

    async def scenario():
        expected, texts = await reference()
        assert len(expected) >= 5  # the static documents
        side = ClientSide("A")
        async with connect_gateway(surface_config, tmp_path, **side.callbacks()) as client:
            assert client.server_capabilities.resources is not None, "the gateway advertises no resources"
            listed = {r.uri: r for r in await all_resources(client)}
            # Every resource, as the backend gave it (unique URIs stay unchanged), none from `time`.
            assert set(listed) == set(expected)
            for uri, resource in listed.items():
                assert resource.name == expected[uri].name
                assert resource.mime_type == expected[uri].mime_type
                contents = (await client.read_resource(uri)).contents
                assert len(contents) == 1 and isinstance(contents[0], TextResourceContents)
                assert contents[0].uri == uri
                assert contents[0].text == texts[uri].text
                assert contents[0].mime_type == texts[uri].mime_type

            # A binary resource listed at run time: gzip-file-as-resource registers it and the
            # backend announces it with resources/list_changed, which must reach the client.
            payload = b"surface payload \x00\x01\x02 " * 50
            data_uri = "data:application/octet-stream;base64," + base64.b64encode(payload).decode()
            made = await client.call_tool(
                "everything__gzip-file-as-resource",
                {"name": "surface.bin.gz", "data": data_uri, "outputType": "resourceLink"},
            )
            assert not made.is_error, text_of(made)
            session_uri = "demo://resource/session/surface.bin.gz"
            assert [c.uri for c in made.content if getattr(c, "type", "") == "resource_link"] == [session_uri]
            await side.notes.wait_for("notifications/resources/list_changed", timeout=15)
            assert session_uri in {r.uri for r in await all_resources(client)}
            blob = (await client.read_resource(session_uri)).contents[0]
            assert isinstance(blob, BlobResourceContents)
            assert gzip.decompress(base64.b64decode(blob.blob)) == payload

            # A binary resource through a template URI.
            blob = (await client.read_resource("demo://resource/dynamic/blob/2")).contents[0]
            assert isinstance(blob, BlobResourceContents)
            assert base64.b64decode(blob.blob).decode().startswith("Resource 2: This is a base64 blob")

            # An unknown URI is an error for that request only.
            with pytest.raises(MCPError):
                await client.read_resource("demo://resource/static/document/no-such-file.md")
            assert (await client.read_resource(next(iter(listed)))).contents

    mc.run(scenario, timeout=150)


def test_templates_listed_and_read_through_a_template_uri(surface_config, tmp_path):
    async def scenario():
        async with connect_gateway(surface_config, tmp_path) as client:
            templates = {t.uri_template: t for t in await all_templates(client)}
            assert set(templates) == {TEXT_TEMPLATE, BLOB_TEMPLATE}
            assert templates[TEXT_TEMPLATE].name == "Dynamic Text Resource"
            assert templates[BLOB_TEMPLATE].mime_type == "application/octet-stream"
            uri = TEXT_TEMPLATE.replace("{resourceId}", "5")
            contents = (await client.read_resource(uri)).contents
            assert len(contents) == 1 and contents[0].uri == uri
            assert contents[0].text.startswith("Resource 5: This is a plaintext resource")
            # The template's variable must be a positive integer: the backend's error comes back.
            with pytest.raises(MCPError):
                await client.read_resource(TEXT_TEMPLATE.replace("{resourceId}", "zero"))

    mc.run(scenario, timeout=90)


def test_a_subscription_gets_its_update_and_none_after_unsubscribing(surface_config, tmp_path):
    async def scenario():
        side = ClientSide("A")
        async with connect_gateway(surface_config, tmp_path, **side.callbacks()) as client:
            resources = client.server_capabilities.resources
            assert resources is not None and resources.subscribe is True, "the gateway advertises no subscriptions"
            uri = "demo://resource/static/document/features.md"
            await client.subscribe_resource(uri)
            # server-everything sends updates for subscribed URIs once at once, then every 5 s,
            # while its toggle is on.
            toggled = await mc.call_text(client, "everything__toggle-subscriber-updates")
            assert toggled.startswith("Started")
            await side.notes.wait_for("notifications/resources/updated", timeout=10)
            assert set(side.updated()) == {uri}
            await mc.call_text(client, "everything__toggle-subscriber-updates")  # off

            # Unsubscribed: turning the updates on again delivers nothing.
            await client.unsubscribe_resource(uri)
            seen = len(side.updated())
            await mc.call_text(client, "everything__toggle-subscriber-updates")
            await anyio.sleep(2)
            assert len(side.updated()) == seen
            await mc.call_text(client, "everything__toggle-subscriber-updates")

    mc.run(scenario, timeout=90)


def test_every_prompt_listed_and_got_with_arguments_and_an_embedded_resource(surface_config, tmp_path):
    async def reference():
        async with connect_everything_directly(tmp_path) as direct:
            return {p.name: p for p in await all_prompts(direct)}

    async def scenario():
        expected = await reference()
        assert set(expected) == PROMPTS
        async with connect_gateway(surface_config, tmp_path) as client:
            assert client.server_capabilities.prompts is not None, "the gateway advertises no prompts"
            listed = {p.name: p for p in await all_prompts(client)}
            # Namespaced like tools; `time` has no prompts.
            assert set(listed) == {f"everything__{name}" for name in PROMPTS}
            for name, prompt in expected.items():
                assert listed[f"everything__{name}"].arguments == prompt.arguments
                assert listed[f"everything__{name}"].description == prompt.description

            simple = await client.get_prompt("everything__simple-prompt")
            assert simple.messages[0].content.text == "This is a simple prompt without arguments."
            weather = await client.get_prompt("everything__args-prompt", {"city": "Paris", "state": "Texas"})
            assert weather.messages[0].content.text == "What's weather in Paris, Texas?"
            promote = await client.get_prompt("everything__completable-prompt", {"department": "Sales", "name": "Eve"})
            assert promote.messages[0].content.text == "Please promote Eve to the head of the Sales team."

            text = await client.get_prompt("everything__resource-prompt", {"resourceType": "Text", "resourceId": "3"})
            embedded = text.messages[1].content
            assert isinstance(embedded, EmbeddedResource)
            assert embedded.resource.uri == "demo://resource/dynamic/text/3"
            assert embedded.resource.text.startswith("Resource 3: This is a plaintext resource")
            blob = await client.get_prompt("everything__resource-prompt", {"resourceType": "Blob", "resourceId": "4"})
            embedded = blob.messages[1].content
            assert embedded.resource.uri == "demo://resource/dynamic/blob/4"
            assert base64.b64decode(embedded.resource.blob).decode().startswith("Resource 4:")

            # A prompt's own error, and a prompt nobody has, are errors for that request only.
            with pytest.raises(MCPError):
                await client.get_prompt("everything__resource-prompt", {"resourceType": "Video", "resourceId": "1"})
            with pytest.raises(MCPError):
                await client.get_prompt("nobody__nothing")
            assert (await client.get_prompt("everything__simple-prompt")).messages

    mc.run(scenario, timeout=90)


def test_completion_of_a_prompt_argument_and_a_template_variable(surface_config, tmp_path):
    async def scenario():
        async with connect_gateway(surface_config, tmp_path) as client:
            assert client.server_capabilities.completions is not None, "the gateway advertises no completions"
            assert await complete_prompt(client, "everything__completable-prompt", "department", "Eng") == ["Engineering"]
            # The context (arguments already chosen) reaches the backend.
            names = await complete_prompt(
                client, "everything__completable-prompt", "name", "", {"department": "Support"}
            )
            assert names == ["John", "Kim", "Lee"]
            assert await complete_prompt(client, "everything__resource-prompt", "resourceType", "B") == ["Blob"]
            assert await complete_template(client, TEXT_TEMPLATE, "resourceId", "7") == ["7"]
            assert await complete_template(client, BLOB_TEMPLATE, "resourceId", "x") == []

    mc.run(scenario, timeout=90)


def test_log_messages_at_or_above_the_level_set_arrive_with_the_backend_name(surface_config, tmp_path):
    async def scenario():
        side = ClientSide("A")
        async with connect_gateway(surface_config, tmp_path, **side.callbacks()) as client:
            assert client.server_capabilities.logging is not None, "the gateway advertises no logging"
            # server-everything acknowledges each subscribe with an info-level log message.
            await client.set_logging_level("info")
            first = "demo://resource/static/document/architecture.md"
            await client.subscribe_resource(first)
            await mc.wait_until(lambda: any(first in str(m.data) for m in side.logs), timeout=10)
            message = next(m for m in side.logs if first in str(m.data))
            assert message.level == "info"
            assert "everything" in (message.logger or "")

            assert all(LEVELS.index(m.level) >= LEVELS.index("info") for m in side.logs)

            await client.set_logging_level("error")
            since = len(side.logs)
            second = "demo://resource/static/document/structure.md"
            await client.subscribe_resource(second)
            await mc.call_text(client, "everything__echo", {"message": "after"})
            await anyio.sleep(2)
            assert not [m for m in side.logs if second in str(m.data)]
            assert all(LEVELS.index(m.level) >= LEVELS.index("error") for m in side.logs[since:])

    mc.run(scenario, timeout=90)


def test_sampling_elicitation_and_roots_are_answered_by_the_calling_client(surface_config, tmp_path):
    async def scenario():
        side = ClientSide("A")
        async with connect_gateway(surface_config, tmp_path, **side.callbacks()) as client:
            names = await mc.tool_names(client)
            for tool in ("trigger-sampling-request", "trigger-elicitation-request", "trigger-url-elicitation", "get-roots-list"):
                # server-everything registers these only when the gateway's own handshake with it
                # declared sampling, elicitation (form and url) and roots.
                assert f"everything__{tool}" in names, f"no everything__{tool}: the gateway did not declare its capability"

            sampled = await client.call_tool(
                "everything__trigger-sampling-request", {"prompt": "tell me about p-4711", "maxTokens": 20}
            )
            assert not sampled.is_error, text_of(sampled)
            assert len(side.sampling) == 1
            request = side.sampling[0]
            assert "p-4711" in request.messages[0].content.text
            assert request.max_tokens == 20
            assert request.system_prompt == "You are a helpful test server."
            assert side.answer in text_of(sampled) and "model-A" in text_of(sampled)

            form = await client.call_tool("everything__trigger-elicitation-request", {})
            assert not form.is_error, text_of(form)
            assert len(side.elicitations) == 1
            assert side.elicitations[0].mode == "form"
            assert "name" in side.elicitations[0].requested_schema["properties"]
            assert "- Name: Ada A" in text_of(form)

            url = "https://example.com/consent?session=s-93"
            linked = await client.call_tool("everything__trigger-url-elicitation", {"url": url, "elicitationId": "el-77"})
            assert not linked.is_error, text_of(linked)
            assert len(side.elicitations) == 2
            assert side.elicitations[1].mode == "url"
            assert side.elicitations[1].url == url and side.elicitations[1].elicitation_id == "el-77"
            assert "User completed the URL elicitation flow" in text_of(linked) and "el-77" in text_of(linked)

            # The URL-elicitation-required error (-32042, MCP's own code) passes through with its data.
            with pytest.raises(MCPError) as e:
                await client.call_tool(
                    "everything__trigger-url-elicitation", {"url": url, "elicitationId": "el-78", "errorPath": True}
                )
            assert e.value.error.code == -32042
            assert e.value.error.data["elicitations"][0]["mode"] == "url"

            roots = await client.call_tool("everything__get-roots-list", {})
            assert not roots.is_error, text_of(roots)
            assert side.roots_requests >= 1
            assert side.root in text_of(roots)

            # Nothing of this reached the other backend, and it still answers.
            assert not (await client.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error

    mc.run(scenario, timeout=120)


def test_tool_results_with_resource_links_and_embedded_resources_keep_their_uris(surface_config, tmp_path):
    async def scenario():
        async with connect_gateway(surface_config, tmp_path) as client:
            links = await client.call_tool("everything__get-resource-links", {"count": 2})
            uris = [c.uri for c in links.content if getattr(c, "type", "") == "resource_link"]
            assert uris == ["demo://resource/dynamic/blob/1", "demo://resource/dynamic/text/2"]
            # A link the client got is readable through the gateway.
            assert (await client.read_resource(uris[1])).contents[0].text.startswith("Resource 2:")
            ref = await client.call_tool("everything__get-resource-reference", {"resourceType": "Text", "resourceId": 6})
            embedded = [c for c in ref.content if isinstance(c, EmbeddedResource)]
            assert len(embedded) == 1 and embedded[0].resource.uri == "demo://resource/dynamic/text/6"
            assert any(isinstance(c, TextContent) and "demo://resource/dynamic/text/6" in c.text for c in ref.content)

    mc.run(scenario, timeout=90)
