#!/bin/sh
# Install the real MCP servers whose tool listings make the search-quality catalog
# (docs/design/surface.md §8.1, §8.3): the npm ones into bench/surface-node (exact versions,
# --ignore-scripts, so no browser download or build step runs: listing tools needs neither), each
# PyPI one in its own virtualenv under bench/.venvs/ (mcp-atlassian beside mcp 2.3.0 resolves to a
# version that does not start, so no server shares an environment). Idempotent: an environment
# already built for the pinned version is kept. Then `python bench/surface_catalog.py --refresh`.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}

MCP_SERVER_GIT_VERSION=2026.10.19
MCP_SERVER_TIME_VERSION=2026.10.19
MCP_ATLASSIAN_VERSION=0.23.1

echo "npm servers -> bench/surface-node"
cd "$HERE/surface-node"
if [ -f package-lock.json ]; then
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
else
    npm install --ignore-scripts --no-audit --no-fund --loglevel=error
fi

pypi_server() {  # venv name, requirement
    venv="$HERE/.venvs/$1"
    stamp="$venv/.installed-$2"
    if [ -f "$stamp" ]; then
        echo "$2 already in bench/.venvs/$1"
        return
    fi
    echo "$2 -> bench/.venvs/$1"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$2"
    touch "$stamp"
}

pypi_server git "mcp-server-git==$MCP_SERVER_GIT_VERSION"
pypi_server time "mcp-server-time==$MCP_SERVER_TIME_VERSION"
pypi_server atlassian "mcp-atlassian==$MCP_ATLASSIAN_VERSION"
