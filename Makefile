# Each target does all of its own set-up on a fresh machine (Python 3.10+,
# Node.js 18+ with npm): a virtualenv in .venv, the package installed into it
# (a regular install, so Twisted finds the plugin), npm packages for tests.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
SOURCES := setup.py $(shell find twisted_mcp twisted -name '*.py' 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: run test unit integration bench bench-hop profile lint clean fuzz soak conformance

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created $(SOURCES)
	$(PY) -m pip install -q '.[test]'
	@rm -rf build
	touch $@

tests/node/node_modules/.installed: tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## Start the gateway in the foreground on the example config (stdio MCP server).
run: $(VENV)/.installed
	$(VENV)/bin/twistd -n --pidfile= mcp-gateway --config examples/quickstart.yaml

## Run the whole test suite (unit and integration).
test: $(VENV)/.installed tests/node/node_modules/.installed tests/conformance/node_modules/.installed bench/node/node_modules/.installed
	$(PY) -m pytest tests $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: $(VENV)/.installed tests/node/node_modules/.installed
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

tests/conformance/node_modules/.installed: tests/conformance/package.json tests/conformance/package-lock.json
	cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## The official MCP conformance suite (pinned, with its own Node.js 22): every handshake-era server
## scenario against our scenario server alone and through the gateway, and the client scenarios with
## the gateway as the client, judged against tests/conformance/expected-failures.yml; the 2026-07-28
## requirements against server_modern.py alone and through the gateway, the differences judged
## against tests/conformance/expected-modern-gateway.yml (see README).
conformance: $(VENV)/.installed tests/conformance/node_modules/.installed
	$(PY) tests/conformance/run.py

bench/node/node_modules/.installed: bench/node/package.json bench/node/package-lock.json
	cd bench/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Peers the HTTP-front benchmark compares the gateway with, in their own virtualenv
# (never a dependency of the gateway): PyPI mcp-proxy, and py-spy for its --profile; pinned.
MCP_PROXY_VERSION ?= 0.13.0
PY_SPY_VERSION ?= 0.4.3
bench/.peers-venv/.installed: Makefile
	$(PYTHON) -m venv bench/.peers-venv
	bench/.peers-venv/bin/python -m pip install -q 'mcp-proxy==$(MCP_PROXY_VERSION)' 'py-spy==$(PY_SPY_VERSION)'
	touch $@

## Measure the gateway against a direct connection to the same backend.
bench: $(VENV)/.installed bench/node/node_modules/.installed bench/.peers-venv/.installed
	$(PY) bench/bench_stdio.py
	$(PY) bench/bench_cpu.py
	$(PY) bench/bench_http.py
	$(PY) bench/bench_policy.py
	$(PY) bench/bench_sockets.py
	$(PY) bench/bench_resources.py
	$(PY) bench/bench_http_front.py
	$(PY) bench/bench_relay.py

## The cost of one hop (issue 16): the gateway against Twisted byte and JSON relays and the npm
## aggregator mcp-hub-mcp, 1 MiB answers, idle RSS, policy with audit; targets met or not (bench/README.md).
bench-hop: $(VENV)/.installed bench/node/node_modules/.installed
	$(PY) bench/bench_relay.py --json bench/profile/bench_relay.json

## Profile the gateway under the stdio benchmark's load (128, then 1 call in flight) with cProfile:
## a readable report in bench/profile/report.txt (PROFILER=py-spy samples from outside instead).
PROFILER ?= cprofile
profile: $(VENV)/.installed
	$(if $(filter py-spy,$(PROFILER)),$(MAKE) bench/.peers-venv/.installed)
	$(PY) bench/profile_gateway.py --profiler $(PROFILER) --out bench/profile/report.txt

SOAK_SECONDS ?= 60
FUZZ_SECONDS ?= 60
export SOAK_SECONDS FUZZ_SECONDS

## Soak and fault run: the daemon and stdio gateways under many clients and faulty
## backends for SOAK_SECONDS; exits non-zero when a gate fails (see soak/soak.py).
soak: $(VENV)/.installed
	$(PY) soak/soak.py

$(VENV)/.lint-installed: $(VENV)/.installed
	$(PY) -m pip install -q '.[lint]'
	@rm -rf build
	touch $@

## Lint: ruff (ruff.toml), mypy (mypy.ini), the layers contract (.importlinter).
lint: $(VENV)/.lint-installed
	$(VENV)/bin/ruff check twisted_mcp twisted tests bench soak fuzz
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

$(VENV)/.fuzz-installed: $(VENV)/.installed
	$(PY) -m pip install -q '.[fuzz]'
	@rm -rf build
	touch $@

## Coverage-guided fuzzing (atheris) of each target in fuzz/ for FUZZ_SECONDS each.
fuzz: $(VENV)/.fuzz-installed
	$(PY) fuzz/run.py

clean:
	rm -rf $(VENV) build *.egg-info tests/node/node_modules bench/node/node_modules bench/.peers-venv tests/conformance/node_modules tests/conformance/results
