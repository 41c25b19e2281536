"""Run the official MCP conformance suite against the scenario servers alone, through the gateway, and on the gateway as a client.

Usage: python tests/conformance/run.py [--parts alone,gateway,client,client-auth,modern-alone,modern-gateway] [--results DIR]

The handshake era (protocol versions up to 2025-11-25):

  alone    every server scenario of 2025-11-25 and before (the suite's `--suite all
           --spec-version 2025-11-25`, pending ones included, run at the 2025-11-25 wire)
           against tests/conformance/server.py over Streamable HTTP.
  gateway  every server scenario through the gateway's HTTP front, with the same
           server behind it as a stdio backend, then as an HTTP backend.  The set
           of scenarios passing through the gateway must equal the set passing
           alone, and dns-rebinding-protection must pass.  Skipped, with the
           reason, while `twistd mcp-gateway --help` lists no http listener or the
           configuration has no per-backend `prefix` (the suite calls fixed names
           such as `test_simple_text`, so the backend must be served unprefixed).
  client   the client scenarios initialize, tools_call, sse-retry and
           elicitation-sep1034-client-defaults, with the gateway as the client
           (tests/conformance/client_driver.py).
  client-auth
           every client auth/* scenario the pinned suite lists (OAuth toward the
           scenario's server: discovery, registration, PKCE, scopes, step-up,
           iss, client credentials, the extensions), with the gateway as the
           OAuth client (tests/conformance/auth_driver.py: the config, `twisted-mcp
           login` with a redirect-following "browser", the call), AUTH_WORKERS
           scenarios at a time, each its own suite run (about a minute in all).
           What the client printed (the gateway's log included) must show none of
           the codes, tokens and client secrets the scenarios use (AUTH_SECRETS).

The stateless era (2026-07-28):

  modern-alone    the server scenarios the 2026-07-28 requirements score (the
                  suite's `--requirements 2026-07-28`) against
                  tests/conformance/server_modern.py over Streamable HTTP: all must pass.
  modern-gateway  the same scenarios through the gateway's HTTP front, with that
                  server behind it as a 2026-07-28 backend on stdio, then over HTTP
                  (`protocol: modern`), then on stdio pinned to the handshake era
                  (`protocol: legacy`: the suite's client crosses eras at the gateway).
                  What passes through the gateway must be what passes alone, except
                  the scenarios listed in tests/conformance/expected-modern-gateway.yml
                  for that run (each with its reason and the step of issue 12 that
                  removes it).  A listed scenario that passes through the gateway fails
                  the run (remove the entry), as does any other difference.  The
                  scenarios the suite runs but does not score (extensions, pending) are
                  not judged.

The handshake-era runs and the client auth/* scenarios are judged against
tests/conformance/expected-failures.yml by the suite
(`--expected-failures`) and by this script (the same rule: a listed scenario that
passes fails the run, as does an unlisted one that fails).  It prints a table of
outcomes and exits 0 when everything held, 1 otherwise.  The suite's own results
(checks.json per scenario) and the logs of every process go to DIR (default
tests/conformance/results/, emptied first).

Needs `npm ci` in tests/conformance (the pinned suite and Node.js 22) and the
package installed in the virtualenv running this script (`make conformance` does both).
"""

from __future__ import annotations

import argparse
import json
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.conformance.verdict import (  # noqa: E402
    ExpectedDifference,
    ExpectedFailures,
    Outcome,
    differences,
    judge,
    load_expected_differences,
    passing,
    read_results,
    required_scenarios,
    scored,
    unexpected_differences,
)

NODE = HERE / "node_modules" / ".bin" / "node"
SUITE = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EXPECTED = HERE / "expected-failures.yml"
EXPECTED_MODERN_GATEWAY = HERE / "expected-modern-gateway.yml"
#: What the pinned suite scores for 2026-07-28 (its frozen requirement file).
REQUIREMENTS_2026 = SUITE.parents[1] / "requirements" / "2026-07-28.yaml"
#: The handshake-era selection: what `--suite all` ran before the suite gained 2026-07-28
#: scenarios (0.2.0-alpha.11), at the 2025-11-25 wire.  The suite added one scenario of that
#: era since 0.1.16, server-session-lifecycle.
HANDSHAKE_SELECTION = ["--suite", "all", "--spec-version", "2025-11-25"]
MODERN_SELECTION = ["--requirements", "2026-07-28"]
#: Server scenarios that test the HTTP transport itself: through the gateway they test the
#: gateway's own HTTP front rather than the scenario server, so one the server fails alone may
#: pass through the gateway (never the reverse), each for the reason given.
FRONT_SCENARIOS = {
    "server-sse-polling": (
        "the SDK server alone sends no SSE priming event or retry to the 2025-03-26 requests the "
        "scenario makes (warnings); the gateway's front answers them as JSON, which the suite "
        "counts as not applicable"
    ),
}
SERVER = HERE / "server.py"
SERVER_MODERN = HERE / "server_modern.py"
DRIVER = HERE / "client_driver.py"
PYTHON = Path(sys.executable)
TWISTD = PYTHON.with_name("twistd")

PARTS = ("alone", "gateway", "client", "client-auth", "modern-alone", "modern-gateway")
#: The run of the 2026-07-28 scenarios through the gateway to the scenario server pinned to the handshake era.
CROSSING = "crossing+stdio"
CLIENT_SCENARIOS = ["initialize", "tools_call", "sse-retry", "elicitation-sep1034-client-defaults"]
#: The client auth/* scenarios run at a time (each a suite, a gateway, the CLI and an SDK client).
AUTH_WORKERS = 4
AUTH_PREFIX = "auth/"
#: What the suite's authorization servers issue (the code, access tokens) and the client secrets
#: its scenarios register or pre-register: none may appear in what the client printed (the
#: driver's output, `twisted-mcp login`'s, and the gateway's whole log).
AUTH_SECRETS = (
    "test-auth-code",
    "test-token",
    "test-client-secret",
    "test-secret-",
    "as1-client-secret",
    "as2-client-secret",
    "conformance-test-secret",
    "conformance-test-xaa-secret",
    "pre-registered-secret",
)
MUST_PASS_THROUGH_GATEWAY = "dns-rebinding-protection"
BACKEND = "conformance"
SUITE_SECONDS = 600
START_SECONDS = 60
STOP_SECONDS = 15


class Failed(Exception):
    """A part of the run did not hold; the message says what."""


def say(line: str = "") -> None:
    print(line, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def suite(args: list[str], log: Path) -> int:
    """Run the pinned suite with the pinned node; its output goes to `log`. Returns its exit status."""
    command = [str(NODE), str(SUITE), *args]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
    try:
        return process.wait(timeout=SUITE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise Failed(f"the suite did not finish within {SUITE_SECONDS} s: {' '.join(args)} (log: {log})")


def stop(process: subprocess.Popen, name: str) -> None:
    """SIGTERM, then SIGKILL after STOP_SECONDS; a process that needed SIGKILL fails the run."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise Failed(f"{name} (pid {process.pid}) did not stop within {STOP_SECONDS} s of SIGTERM and was killed")


@contextmanager
def scenario_server(log: Path, script: Path = SERVER) -> Iterator[str]:
    """A scenario server (tests/conformance/server.py by default) over Streamable HTTP; yields its URL."""
    with log.open("w") as err:
        process = subprocess.Popen(
            [str(PYTHON), str(script), "--http", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], START_SECONDS)
        line = process.stdout.readline() if ready else ""
        match = re.fullmatch(r"LISTENING (\d+)\n", line)
        if match is None:
            raise Failed(f"the scenario server did not start (it said {line!r}; log: {log})")
        yield f"http://127.0.0.1:{match.group(1)}/mcp"
    finally:
        stop(process, "the scenario server")


def gateway_lacks() -> str | None:
    """Why the gateway cannot be tested as an HTTP server yet, or None when it can."""
    help_text = subprocess.run([str(TWISTD), "mcp-gateway", "--help"], capture_output=True, text=True, timeout=60).stdout
    if not re.search(r"\bhttp:", help_text):
        return "`twistd mcp-gateway --help` lists no http listener (--listen http:...): the gateway has no HTTP front yet"
    return None


def write_config(config: Path, backend: dict, port: int) -> Path:
    """The gateway's configuration: one required backend, served unprefixed (the suite calls fixed names).

    The suite's dns-rebinding-protection scenario sends its legitimate request with the
    server's own origin (http://127.0.0.1:PORT), which the front refuses unless it is in
    `http.allowedOrigins` (none by default); the attacker's origin and Host stay refused.
    """
    settings = {
        "http": {"allowedOrigins": [f"http://127.0.0.1:{port}"]},
        "mcpServers": {BACKEND: {**backend, "prefix": "", "required": True}},
    }
    config.write_text(json.dumps(settings, indent=2))
    return config


def config_problem(config: Path) -> str | None:
    """None when the gateway accepts the configuration, else what `--check` said."""
    checked = subprocess.run(
        [str(TWISTD), "mcp-gateway", "--config", str(config), "--check"], capture_output=True, text=True, timeout=60
    )
    if checked.returncode == 0:
        return None
    return (checked.stdout + checked.stderr).strip()


def wait_ready(admin_port: int, process: subprocess.Popen, log: Path) -> None:
    """Poll the admin endpoint's /readyz until the (required) backend is up."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Failed(f"the gateway exited with status {process.returncode} at start-up (log: {log})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise Failed(f"the gateway was not ready within {START_SECONDS} s (log: {log})")


@contextmanager
def gateway(config: Path, port: int, log: Path) -> Iterator[str]:
    """The real gateway serving Streamable HTTP on loopback at `port`; yields its URL."""
    admin_port = free_port()
    command = [
        str(TWISTD), "-n", "--pidfile=", "mcp-gateway", "--config", str(config),
        "--listen", f"http:tcp:{port}:interface=127.0.0.1",
        "--admin", f"tcp:{admin_port}:interface=127.0.0.1",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(admin_port, process, log)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(process, "the gateway")


def run_server_suite(
    url: str, results: Path, label: str, selection: list[str], file: Path
) -> tuple[dict[str, Outcome], int, Path]:
    """The suite's server scenarios of `selection` against `url`, judged by the suite against `file`:
    every outcome, the suite's exit status, and its log."""
    out = results / label
    out.mkdir(parents=True)
    say(f"--- server scenarios, {label} ({' '.join(selection)}): {url}")
    log = out / "suite.log"
    status = suite(["server", *selection, "--url", url, "--expected-failures", str(file), "-o", str(out)], log)
    outcomes = read_results(out)
    if not outcomes:
        raise Failed(f"{label}: the suite produced no results (exit status {status}; log: {log})")
    return outcomes, status, log


def server_scenarios(
    url: str, results: Path, label: str, expected: ExpectedFailures, file: Path = EXPECTED
) -> tuple[dict[str, Outcome], list[str]]:
    """Every handshake-era server scenario against `url`: the outcomes, and the problems against the
    expected failures (`expected`, also written in the suite's format in `file`)."""
    outcomes, status, log = run_server_suite(url, results, label, HANDSHAKE_SELECTION, file)
    return outcomes, judged(label, outcomes, expected.server, status, log)


def through_gateway(
    label: str, backend: dict, alone: dict[str, Outcome], results: Path, expected: ExpectedFailures
) -> tuple[dict[str, Outcome] | None, list[str], str | None]:
    """The server scenarios through the gateway with `backend` behind it: outcomes, problems, and a note if skipped."""
    port = free_port()
    config = write_config(results / f"{label}.json", backend, port)
    problem = config_problem(config)
    if problem and re.search(r"\bprefix\b", problem):
        reason = f"the configuration has no per-server `prefix` (the suite calls fixed names): {problem.splitlines()[-1].strip()}"
        return None, [], f"SKIPPED the server scenarios through the gateway ({label}): {reason}"
    if problem:
        return None, [f"{label}: the gateway refuses the run's configuration {config}: {problem}"], None
    # Scenarios that test the HTTP transport itself test the gateway's front here, not the server.
    front = {s for s in FRONT_SCENARIOS if s in alone and not alone[s].passed}
    expected_through = ExpectedFailures(server=expected.server - front, client=expected.client)
    file = results / f"{label}-expected-failures.yml"
    file.write_text(yaml.safe_dump({"server": sorted(expected_through.server), "client": sorted(expected_through.client)}))
    with gateway(config, port, results / f"{label}.log") as url:
        through, problems = server_scenarios(url, results, label, expected_through, file)
    problems += [f"{label}: {line}" for line in differences(alone, through, allowed=front)]
    if MUST_PASS_THROUGH_GATEWAY not in passing(through):
        problems.append(f"{label}: {MUST_PASS_THROUGH_GATEWAY} must pass through the gateway")
    return through, problems, None


def client_scenarios(results: Path, expected: ExpectedFailures) -> tuple[dict[str, Outcome], list[str]]:
    """The client scenarios with the gateway as the client: the outcomes, and the problems."""
    out = results / "client"
    out.mkdir(parents=True)
    outcomes: dict[str, Outcome] = {}
    problems: list[str] = []
    for scenario in CLIENT_SCENARIOS:
        say(f"--- client scenario {scenario}, the gateway as the client")
        log = out / f"{scenario}.log"
        args = ["client", "--command", f"{PYTHON} {DRIVER}", "--scenario", scenario, "--timeout", "90000", "-o", str(out)]
        status = suite([*args, "--expected-failures", str(EXPECTED)], log)
        found = read_results(out)
        if scenario not in found:
            raise Failed(f"client scenario {scenario}: no results (exit status {status}; log: {log})")
        outcomes[scenario] = found[scenario]
        problems += judged("client", {scenario: found[scenario]}, expected.client, status, log)
    return outcomes, problems


def auth_scenario_names(listing: str) -> list[str]:
    """The client auth/* scenarios in the suite's `list` output (its "Client scenarios" section), in its order."""
    names: list[str] = []
    section = ""
    for line in listing.splitlines():
        if line and not line.startswith(" "):
            section = line
            continue
        found = re.fullmatch(r"\s+- (\S+)(?: \[.*\])?", line)
        if found and section.startswith("Client scenarios") and found.group(1).startswith(AUTH_PREFIX):
            names.append(found.group(1))
    return names


def leaked_secrets(text: str) -> list[str]:
    """The AUTH_SECRETS that occur in `text`."""
    return [secret for secret in AUTH_SECRETS if secret in text]


def client_output(directory: Path) -> str:
    """What the client printed in a scenario's run (the suite keeps its stdout and stderr)."""
    return "".join(path.read_text(errors="replace") for path in sorted(directory.rglob("std*.txt")))


def auth_scenarios(log: Path) -> list[str]:
    """Every client auth/* scenario the pinned suite has."""
    status = suite(["list"], log)
    names = auth_scenario_names(log.read_text())
    if status != 0 or not names:
        raise Failed(f"the suite listed no client auth/* scenarios (exit status {status}; log: {log})")
    return names


def client_auth_scenario(scenario: str, out: Path, expected: ExpectedFailures) -> tuple[Outcome, list[str]]:
    """One client auth/* scenario with the gateway as the OAuth client: its outcome, and the problems."""
    label = scenario.replace("/", "_")
    directory = out / label
    directory.mkdir(parents=True)
    log = out / f"{label}.log"
    args = ["client", "--command", f"{PYTHON} {DRIVER}", "--scenario", scenario, "--timeout", "150000", "-o", str(directory)]
    status = suite([*args, "--expected-failures", str(EXPECTED)], log)
    # The suite writes <dir>/auth/<name>-<timestamp>/checks.json.
    found = read_results(directory / AUTH_PREFIX.rstrip("/"))
    name = scenario.removeprefix(AUTH_PREFIX)
    if name not in found:
        raise Failed(f"client scenario {scenario}: no results (exit status {status}; log: {log})")
    outcome = replace(found[name], scenario=scenario)
    problems = judged("client-auth", {scenario: outcome}, expected.client, status, log)
    leaked = leaked_secrets(client_output(directory))
    if leaked:
        problems.append(f"client-auth: {scenario}: the client's output shows {', '.join(leaked)} (see {directory})")
    return outcome, problems


def client_auth_scenarios(results: Path, expected: ExpectedFailures) -> tuple[dict[str, Outcome], list[str]]:
    """Every client auth/* scenario with the gateway as the OAuth client: the outcomes, and the problems."""
    out = results / "client-auth"
    out.mkdir(parents=True)
    scenarios = auth_scenarios(out / "list.log")
    unknown = sorted(name for name in expected.client if name.startswith(AUTH_PREFIX) and name not in scenarios)
    problems = [f"client-auth: {name} is listed in {EXPECTED.name} but the suite has no such scenario" for name in unknown]
    say(f"--- {len(scenarios)} client auth/* scenarios, the gateway as the OAuth client ({AUTH_WORKERS} at a time)")
    with ThreadPoolExecutor(AUTH_WORKERS) as pool:
        ran = list(pool.map(lambda scenario: client_auth_scenario(scenario, out, expected), scenarios))
    outcomes: dict[str, Outcome] = {}
    for outcome, found in ran:
        outcomes[outcome.scenario] = outcome
        problems += found
    return outcomes, problems


def judged(label: str, outcomes: dict[str, Outcome], expected: frozenset[str], suite_status: int, log: Path) -> list[str]:
    """Problems of one run against the expected failures; the suite's own verdict (its exit status) must agree."""
    verdict = judge(outcomes, expected)
    problems = [
        f"{label}: {name} failed and is not an expected failure: {'; '.join(outcomes[name].problems)}"
        for name in verdict.unexpected_failures
    ]
    problems += [f"{label}: {name} passes but is listed in {EXPECTED.name}: remove it" for name in verdict.stale_entries]
    if (suite_status == 0) != verdict.ok:
        problems.append(f"{label}: the suite's own expected-failures check exited {suite_status} (see {log})")
    return problems


def handshake_parts(
    parts: set[str], results: Path, expected: ExpectedFailures
) -> tuple[dict[str, dict[str, Outcome]], list[str], list[str]]:
    """alone and gateway: the columns of outcomes, the problems, and notes (parts skipped, and why)."""
    columns: dict[str, dict[str, Outcome]] = {}
    notes: list[str] = []
    with scenario_server(results / "scenario-server.log") as url:
        columns["alone"], problems = server_scenarios(url, results, "alone", expected)
        if "gateway" not in parts:
            return columns, problems, notes
        lacking = gateway_lacks()
        backends: dict[str, dict[str, Any]] = {
            # Its tools ask the client inline (ctx.elicit, create_message), which only a
            # handshake-era connection allows: pinned legacy, not probed (on stdio and HTTP).
            "gateway+stdio": {"command": str(PYTHON), "args": [str(SERVER)], "protocol": "legacy"},
            "gateway+http": {"type": "http", "url": url, "protocol": "legacy"},
        }
        for label, backend in backends.items():
            if lacking:
                notes.append(f"SKIPPED the server scenarios through the gateway ({label}): {lacking}")
                continue
            through, found, note = through_gateway(label, backend, columns["alone"], results, expected)
            problems += found
            notes += [note] if note else []
            if through is not None:
                columns[label] = through
    return columns, problems, notes


def modern_scenarios(
    url: str, results: Path, label: str, required: frozenset[str], expected: frozenset[str], judge_each: bool = True
) -> tuple[dict[str, Outcome], list[str]]:
    """The 2026-07-28 requirements against `url`: the scored outcomes, and the problems.

    The suite is told to expect `expected` to fail (in its format).  With `judge_each`, a
    scenario outside `expected` that fails, or one inside it that passes, is a problem;
    without it (through the gateway, where the comparison with the server alone judges each
    scenario) only a scenario that did not run, or a suite verdict that disagrees with ours, is.
    """
    file = results / f"{label}-expected-failures.yml"
    file.write_text(yaml.safe_dump({"server": sorted(expected), "client": []}))
    outcomes, status, log = run_server_suite(url, results, label, MODERN_SELECTION, file)
    outcomes = scored(outcomes, required)
    problems = [f"{label}: {name} (required) did not run" for name in sorted(required - set(outcomes))]
    if judge_each:
        return outcomes, problems + judged(label, outcomes, expected, status, log)
    if (status == 0) != judge(outcomes, expected).ok:
        problems.append(f"{label}: the suite's own expected-failures check exited {status} (see {log})")
    return outcomes, problems


def backend_protocol(log: Path) -> str:
    """The protocol version the gateway spoke to the backend, as its log says ("unknown" if it does not)."""
    found = re.search(rf"backend {BACKEND} is up: .*\(protocol ([^,)\s]+)[,)]", log.read_text(errors="replace"))
    return found.group(1) if found else "unknown"


def modern_parts(
    parts: set[str], results: Path
) -> tuple[dict[str, dict[str, Outcome]], list[str], list[str], dict[str, ExpectedDifference]]:
    """modern-alone and modern-gateway: the columns of outcomes, the problems, notes, and the expected differences."""
    required = required_scenarios(REQUIREMENTS_2026)
    differences_expected = load_expected_differences(EXPECTED_MODERN_GATEWAY)
    unknown = sorted(set(differences_expected) - required)
    problems = [f"{EXPECTED_MODERN_GATEWAY.name}: {name} is not a scored 2026-07-28 scenario" for name in unknown]
    columns: dict[str, dict[str, Outcome]] = {}
    notes: list[str] = []
    with scenario_server(results / "modern-server.log", SERVER_MODERN) as url:
        alone, found = modern_scenarios(url, results, "modern-alone", required, frozenset())
        columns["modern-alone"] = alone
        problems += found
        if "modern-gateway" not in parts:
            return columns, problems, notes, differences_expected
        lacking = gateway_lacks()
        backends: dict[str, dict[str, Any]] = {
            # The scenario server as a 2026-07-28 backend, on stdio and over HTTP: what passes
            # through the gateway must be what passes against it alone.
            "modern-gateway+stdio": {"command": str(PYTHON), "args": [str(SERVER_MODERN)], "protocol": "modern"},
            "modern-gateway+http": {"type": "http", "url": url, "protocol": "modern"},
            # The same server pinned to the handshake era: the suite's 2026-07-28 client
            # crosses eras at the gateway (held calls, listens fed by session notifications).
            CROSSING: {"command": str(PYTHON), "args": [str(SERVER_MODERN)], "protocol": "legacy"},
        }
        for label, backend in backends.items():
            if lacking:
                notes.append(f"SKIPPED the 2026-07-28 scenarios through the gateway ({label}): {lacking}")
                continue
            port = free_port()
            config = write_config(results / f"{label}.json", backend, port)
            problem = config_problem(config)
            if problem:
                problems.append(f"{label}: the gateway refuses the run's configuration {config}: {problem}")
                continue
            # The suite is told to expect what fails alone and the listed differences; the
            # comparison below says which of them is wrong.
            here = {name for name, entry in differences_expected.items() if entry.applies_to(label)}
            expected = frozenset(name for name, outcome in alone.items() if not outcome.passed) | (frozenset(here) & required)
            log = results / f"{label}.log"
            with gateway(config, port, log) as gateway_url:
                through, found = modern_scenarios(gateway_url, results, label, required, expected, judge_each=False)
            columns[label] = through
            notes.append(f"{label}: the gateway spoke protocol {backend_protocol(log)} to the backend (its log: {log.name})")
            problems += found
            problems += [f"{label}: {line}" for line in unexpected_differences(alone, through, here)]
    return columns, problems, notes, differences_expected


def table(columns: dict[str, dict[str, Outcome]]) -> None:
    scenarios = sorted({name for outcomes in columns.values() for name in outcomes})
    width = max(len(name) for name in scenarios) if scenarios else 10
    say("scenario".ljust(width) + "".join(f"  {label:>14}" for label in columns))
    for name in scenarios:
        cells = []
        for outcomes in columns.values():
            outcome = outcomes.get(name)
            cells.append("-" if outcome is None else "pass" if outcome.passed else "FAIL")
        say(name.ljust(width) + "".join(f"  {cell:>14}" for cell in cells))


def report_differences(columns: dict[str, dict[str, Outcome]], expected: dict[str, ExpectedDifference]) -> None:
    """Print how many 2026-07-28 scenarios pass per column, then each that passes alone but not through
    the gateway, with the columns it fails in and its reason (or that it is not listed)."""
    alone = columns.get("modern-alone", {})
    lost: dict[str, list[str]] = {}
    say()
    for label, outcomes in columns.items():
        say(f"{label}: {len(passing(outcomes))} of {len(outcomes)} pass")
        for name in sorted(passing(alone)):
            if label != "modern-alone" and name in outcomes and not outcomes[name].passed:
                lost.setdefault(name, []).append(label)
    if lost:
        say(f"passing alone, failing through the gateway ({len(lost)}):")
    for name, labels in sorted(lost.items()):
        entry = expected.get(name)
        listed = entry is not None and all(entry.applies_to(label) for label in labels)
        why = f"{entry.reason}; removed by {entry.removed_by}" if entry and listed else f"NOT LISTED in {EXPECTED_MODERN_GATEWAY.name}"
        say(f"  - {name} ({', '.join(labels)}): {why}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="where results and logs go (emptied first)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}")
    for needed in (NODE, SUITE, REQUIREMENTS_2026):
        if not needed.exists():
            parser.error(f"{needed} is missing: run `npm ci` in {HERE} (or `make conformance`)")
    expected = ExpectedFailures.load(EXPECTED)
    results = args.results.resolve()
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)

    problems: list[str] = []
    notes: list[str] = []
    server_columns: dict[str, dict[str, Outcome]] = {}
    modern_columns: dict[str, dict[str, Outcome]] = {}
    differences_expected: dict[str, ExpectedDifference] = {}
    client_outcomes: dict[str, Outcome] = {}
    auth_outcomes: dict[str, Outcome] = {}
    try:
        if parts & {"alone", "gateway"}:
            server_columns, found, handshake_notes = handshake_parts(parts, results, expected)
            problems += found
            notes += handshake_notes
        if "client" in parts:
            client_outcomes, found = client_scenarios(results, expected)
            problems += found
        if "client-auth" in parts:
            auth_outcomes, found = client_auth_scenarios(results, expected)
            problems += found
        if parts & {"modern-alone", "modern-gateway"}:
            modern_columns, found, modern_notes, differences_expected = modern_parts(parts, results)
            problems += found
            notes += modern_notes
    except Failed as e:
        problems.append(str(e))

    if server_columns:
        say()
        say("=== conformance: server scenarios, handshake era (2025-11-25 and before)")
        table(server_columns)
    if client_outcomes:
        say()
        say("=== conformance: client scenarios (the gateway as the client)")
        table({"gateway": client_outcomes})
    if auth_outcomes:
        say()
        say("=== conformance: client auth/* scenarios (the gateway as the OAuth client)")
        table({"gateway": auth_outcomes})
    if modern_columns:
        say()
        say("=== conformance: server scenarios, 2026-07-28 requirements (scored ones)")
        table(modern_columns)
        report_differences(modern_columns, differences_expected)
    say()
    for note in notes:
        say(note)
    if expected.server or expected.client:
        say(
            f"expected failures ({EXPECTED.relative_to(HERE.parents[1])}): {', '.join(sorted(expected.server | expected.client))}"
        )
    say(f"results and logs: {results}")
    if problems:
        say()
        say("CONFORMANCE FAILED:")
        for problem in problems:
            say(f"  - {problem}")
        return 1
    say("conformance: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
