"""
Policy over the whole MCP surface (issue 10), through the real gateway
command: a role that may see only some resources and prompts gets filtered
lists, refused reads and gets, empty completions for what it may not see, and
every kind leaves audit records; sampling is audited without its content.

PROVISIONAL CONFIG SHAPE -- check it when the policy branch lands: these
tests write a role's rights over prompts, resources and server requests as

    roles:
      reader:
        allow: [...]                     # tools, as today
        prompts: {allow: [...]}          # exposed prompt names (globs)
        resources: {allow: [...]}        # exposed resource URIs and URI templates (globs)
        serverRequests:
          sampling: {deny: [everything]} # servers whose sampling requests this role's clients may not answer

(as the `policy-surface` branch had it at ee2c17b), and read audit records by
`method`, `decision` ("allow"/"deny"), `principal`, `backend`, `outcome`,
looking for the exposed name or URI anywhere in the record.  If the policy
chose other keys or fields, change ROLES and `records_for` below, not the
assertions.
"""

from __future__ import annotations

import json

import pytest
from mcp import MCPError

from tests import mcpclient as mc

from .conftest import everything, server
from .surface_helpers import (
    ClientSide,
    all_prompts,
    all_resources,
    all_templates,
    complete_prompt,
    complete_template,
    connect_gateway,
    read_audit,
    text_of,
)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

FEATURES = "demo://resource/static/document/features.md"
ARCHITECTURE = "demo://resource/static/document/architecture.md"
TEXT_TEMPLATE = "demo://resource/dynamic/text/{resourceId}"
BLOB_TEMPLATE = "demo://resource/dynamic/blob/{resourceId}"

ROLES = {
    "reader": {
        "allow": ["everything", "notes"],
        "prompts": {"allow": ["everything__simple-prompt", "everything__args-prompt", "notes__greet"]},
        "resources": {"allow": [FEATURES, "demo://resource/dynamic/text/*", "memo://*"]},
    }
}


@pytest.fixture
def reader_config(write_config, tmp_path):
    def write(**sections):
        path = write_config({"everything": everything(), "notes": server("surface", env={"SURFACE_LABEL": "notes"})})
        with open(path) as f:
            data = json.load(f)
        data.update(
            identity={"principal": {"name": "alice", "roles": ["reader"]}},
            roles=ROLES,
            audit={"sink": "file", "path": str(tmp_path / "audit.jsonl")},
        )
        data.update(sections)
        with open(path, "w") as f:
            json.dump(data, f)
        return path

    return write


def records_for(records, method: str, subject: str, decision: str) -> list[dict]:
    """Audit records of C{method} naming C{subject} (an exposed name or URI) with that decision."""
    return [r for r in records if r.get("method") == method and r.get("decision") == decision and subject in json.dumps(r)]


def assert_refused(error: MCPError) -> None:
    # Refused by the policy, not "this gateway has no such method".
    assert error.error.code != -32601, error.error


def test_a_role_sees_reads_gets_and_completes_only_its_resources_and_prompts(reader_config, tmp_path):
    config = reader_config()

    async def scenario():
        async with connect_gateway(config, tmp_path) as client:
            assert {r.uri for r in await all_resources(client)} == {FEATURES, "memo://shared/notes"}
            assert {t.uri_template for t in await all_templates(client)} == {TEXT_TEMPLATE, "memo://items/{item}"}
            assert {p.name for p in await all_prompts(client)} == {
                "everything__simple-prompt",
                "everything__args-prompt",
                "notes__greet",
            }

            assert (await client.read_resource(FEATURES)).contents[0].text
            assert (await client.read_resource("demo://resource/dynamic/text/1")).contents[0].text.startswith("Resource 1:")
            for uri in (ARCHITECTURE, "demo://resource/dynamic/blob/1"):
                with pytest.raises(MCPError) as e:
                    await client.read_resource(uri)
                assert_refused(e.value)

            got = await client.get_prompt("everything__args-prompt", {"city": "Oslo"})
            assert got.messages[0].content.text == "What's weather in Oslo?"
            for name, args in (("everything__completable-prompt", {"department": "Sales", "name": "Eve"}), ("notes__quote", {})):
                with pytest.raises(MCPError) as e:
                    await client.get_prompt(name, args)
                assert_refused(e.value)

            # Completion: answered for what the role sees, empty for what it does not.
            assert await complete_prompt(client, "notes__greet", "name", "ap") == ["apple", "apricot"]
            assert await complete_template(client, TEXT_TEMPLATE, "resourceId", "7") == ["7"]
            assert await complete_prompt(client, "everything__completable-prompt", "department", "Eng") == []
            assert await complete_template(client, BLOB_TEMPLATE, "resourceId", "7") == []

            # Tools are unaffected by the rights over resources and prompts.
            assert await mc.call_text(client, "everything__echo", {"message": "still"}) == "Echo: still"

    mc.run(scenario, timeout=120)
    records = read_audit(tmp_path / "audit.jsonl")
    assert records_for(records, "resources/read", FEATURES, "allow")
    assert records_for(records, "resources/read", ARCHITECTURE, "deny")
    assert records_for(records, "resources/read", "demo://resource/dynamic/blob/1", "deny")
    assert records_for(records, "prompts/get", "everything__args-prompt", "allow")
    assert records_for(records, "prompts/get", "everything__completable-prompt", "deny")
    assert records_for(records, "prompts/get", "notes__quote", "deny")
    assert [r for r in records if r.get("method") == "completion/complete"]
    for record in records:
        if record.get("method") in ("resources/read", "prompts/get", "completion/complete"):
            assert record["principal"] == "alice"
    allowed = records_for(records, "resources/read", FEATURES, "allow")[0]
    assert allowed["backend"] == "everything" and allowed["outcome"] == "ok"


def test_sampling_is_audited_without_its_content(reader_config, tmp_path):
    config = reader_config()
    secret = "confidential-prompt-8841"

    async def scenario():
        side = ClientSide("A")
        async with connect_gateway(config, tmp_path, **side.callbacks()) as client:
            result = await client.call_tool("everything__trigger-sampling-request", {"prompt": secret, "maxTokens": 5})
            assert not result.is_error, text_of(result)
            assert len(side.sampling) == 1

    mc.run(scenario, timeout=90)
    records = read_audit(tmp_path / "audit.jsonl")
    sampled = [r for r in records if r.get("method") == "sampling/createMessage"]
    assert len(sampled) == 1
    assert sampled[0]["backend"] == "everything" and sampled[0]["principal"] == "alice"
    everything_text = (tmp_path / "audit.jsonl").read_text()
    assert secret not in everything_text
    assert "sampled answer from A" not in everything_text


def test_a_role_may_forbid_a_backend_to_sample_through_its_clients(reader_config, tmp_path):
    roles = json.loads(json.dumps(ROLES))
    roles["reader"]["serverRequests"] = {"sampling": {"deny": ["everything"]}}
    config = reader_config(roles=roles)

    async def scenario():
        side = ClientSide("A")
        async with connect_gateway(config, tmp_path, **side.callbacks()) as client:
            refused = await client.call_tool("everything__trigger-sampling-request", {"prompt": "not for you", "maxTokens": 5})
            # The backend's request is refused by the gateway; the tool reports that as its error.
            assert refused.is_error
            assert "sampling" in text_of(refused).lower()
            assert side.sampling == []
            # Other server requests of the same backend still reach the client.
            form = await client.call_tool("everything__trigger-elicitation-request", {})
            assert not form.is_error and "- Name: Ada A" in text_of(form)

    mc.run(scenario, timeout=90)
    records = read_audit(tmp_path / "audit.jsonl")
    sampled = [r for r in records if r.get("method") == "sampling/createMessage"]
    assert len(sampled) == 1 and sampled[0]["decision"] == "deny" and sampled[0]["backend"] == "everything"
    elicited = [r for r in records if r.get("method") == "elicitation/create"]
    assert len(elicited) == 1 and elicited[0]["decision"] != "deny"
