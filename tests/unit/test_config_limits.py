"""
The bounds on every configuration file the gateway reads: size, nesting
and YAML alias expansion, for the config itself, the pin lock file and the
client configs `twisted-mcp import` reads, and a reload that reads the
file in a worker thread.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.python.failure import Failure

from twisted_mcp.cli.importer import ImportFailure, read_source
from twisted_mcp.config import MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES, ConfigError, parse_text, read_file
from twisted_mcp.config.loader import load
from twisted_mcp.policy.pinning import Pins, read_lock


def bomb(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    """A JSON (and YAML) document of C{depth} lists inside one another."""
    return "[" * depth + "]" * depth


def problem(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    assert len(excinfo.value.problems) == 1
    return excinfo.value.problems[0]


@pytest.mark.timeout(60)
def test_a_billion_laughs_is_refused_while_it_is_composed() -> None:
    with pytest.raises(ConfigError) as e:
        parse_text(bomb(12), "gw.yaml")
    assert problem(e) == f"gw.yaml: YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (the limit), at line 5"


def test_aliases_up_to_the_limit_are_fine() -> None:
    block = "[" + ", ".join(["x"] * 99) + "]"  # 100 nodes with the list itself
    uses = MAX_ALIAS_NODES // 100

    def doc(n: int) -> str:
        return f"shared: &b {block}\nuses:\n" + "".join("  - *b\n" for _ in range(n))

    assert len(parse_text(doc(uses), "gw.yaml")["uses"]) == uses
    with pytest.raises(ConfigError) as e:
        parse_text(doc(uses + 1), "gw.yaml")
    assert "more than 10000 nodes" in problem(e)


def test_a_shared_env_block_is_what_anchors_are_for(tmp_path) -> None:
    servers = "".join(f"  s{i}:\n    command: srv\n    env: {{<<: *env, N: '{i}'}}\n" for i in range(40))
    path = tmp_path / "gw.yaml"
    path.write_text("mcpServers:\n  base: {command: srv, env: &env {A: '1', B: '2'}}\n" + servers)
    config = load(str(path), environ={})
    assert len(config.servers) == 41 and all(s.env["B"] == "2" for s in config.servers)


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        parse_text("a: &a [1, *a]\n", "gw.yaml")
    assert problem(e) == "gw.yaml: a YAML alias inside the node it refers to (recursive), at line 1"


@pytest.mark.parametrize("source", ["gw.yaml", "gw.json"])
def test_nesting_up_to_the_limit_and_no_further(source) -> None:
    assert parse_text(nested(MAX_DEPTH), source) is not None
    for depth in (MAX_DEPTH + 1, 100_000):
        with pytest.raises(ConfigError) as e:
            parse_text(nested(depth), source)
        assert problem(e).startswith(f"{source}: nested deeper than {MAX_DEPTH} levels (the limit)")


def test_files_are_read_up_to_the_limit_and_no_further(tmp_path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_bytes(b"#" * MAX_FILE_BYTES)
    assert len(read_file(str(path))) == MAX_FILE_BYTES
    path.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ConfigError) as e:
        load(str(path))
    assert problem(e) == f"{path}: larger than 4 MiB (the limit for this file)"
    with pytest.raises(ConfigError) as e:
        load("/dev/zero")
    assert problem(e) == "/dev/zero: larger than 4 MiB (the limit for this file)"


def test_the_lock_file_has_the_same_bounds(tmp_path) -> None:
    lock = tmp_path / "tools.lock.json"
    lock.write_text('{"tools": {"a": ' + nested(MAX_DEPTH) + "}}")
    with pytest.raises(ValueError, match="nested deeper than 64 levels"):
        read_lock(str(lock))
    pins = Pins("enforce", "/dev/zero")
    assert pins.error == "cannot read the lock file /dev/zero: /dev/zero: larger than 4 MiB (the limit for this file)"


def test_imported_client_configs_have_the_same_bounds(tmp_path, monkeypatch) -> None:
    source = tmp_path / "claude_desktop_config.json"
    source.write_text('{"mcpServers": ' + nested(100_000) + "}")
    with pytest.raises(ImportFailure) as e:
        read_source(str(source))
    assert (e.value.kind, e.value.message) == ("data", f"{source}: nested deeper than 64 levels (the limit)")
    monkeypatch.setattr("twisted_mcp.cli.importer.MAX_SOURCE_BYTES", 1024)
    source.write_text(json.dumps({"mcpServers": {}, "history": "x" * 1024}))
    with pytest.raises(ImportFailure) as e:
        read_source(str(source))
    assert e.value.message == f"{source}: larger than 1024 bytes (the limit for this file)"


class _InlinePool:
    """A thread pool that runs the work at once, and says it did."""

    def __init__(self) -> None:
        self.ran: list[Any] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        self.ran.append(f)
        try:
            result = f(*args, **kwargs)
        except Exception:
            on_result(False, Failure())
        else:
            on_result(True, result)


class _Reactor:
    def __init__(self) -> None:
        self.pool = _InlinePool()

    def getThreadPool(self) -> _InlinePool:
        return self.pool

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class _Service:
    def __init__(self) -> None:
        self.loaded: list[Any] = []

    def reload(self, load: Any) -> Any:
        try:
            self.loaded.append(load())
        except ConfigError as e:
            self.loaded.append(e)
        return True, [], ""


def test_a_reload_reads_the_file_in_a_worker_thread(tmp_path) -> None:
    from twisted_mcp.reload import reload_in_a_thread

    path = tmp_path / "gw.yaml"
    path.write_text("mcpServers: {a: {command: x}}\n")
    reactor, service = _Reactor(), _Service()
    reader = lambda: load(str(path), environ={})  # noqa: E731
    reload_in_a_thread(reactor, service, reader)
    path.write_text(bomb(9))
    reload_in_a_thread(reactor, service, reader)
    assert reactor.pool.ran == [reader, reader]
    good, bad = service.loaded
    assert [s.name for s in good.servers] == ["a"]
    assert isinstance(bad, ConfigError) and "more than 10000 nodes" in bad.problems[0]



@pytest.mark.parametrize(
    "text,where,tag",
    [("a: !!int abc\n", "line 1, column 4", "!!int"), ("a:\n  b: !!bool maybe\n", "line 2, column 6", "!!bool"), ("a: 0000-00-00\n", "line 1, column 4", "!!timestamp"),
     ("a: !!int\n", "line 1, column 4", "!!int"), ("a: !!timestamp\n", "line 1, column 4", "!!timestamp")],
)
def test_a_value_that_does_not_fit_its_tag_is_a_clean_error(text, where, tag) -> None:
    # Found by the property test: these raised ValueError, KeyError, IndexError, AttributeError.
    with pytest.raises(ConfigError) as e:
        parse_text(text, "gw.yaml")
    assert problem(e) == f"not valid YAML at {where}: the value does not fit its type ({tag})"
