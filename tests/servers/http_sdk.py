"""HTTP test backend built with the official mcp 2.3 SDK (MCPServer + uvicorn).

Usage:
  python tests/servers/http_sdk.py --port N [--transport streamable|sse]
                                   [--stateless] [--json] [--verbose]

  --port N        TCP port on 127.0.0.1 (0 = pick a free one). Always loopback.
  --transport     streamable (default): MCP Streamable HTTP at /mcp.
                  sse: legacy 2024-11-05 HTTP+SSE transport: GET /sse opens the
                  stream, whose first event `endpoint` names the POST URL
                  (/messages/?session_id=<hex>).
  --stateless     streamable only: no Mcp-Session-Id, a fresh transport per POST
                  (GET /mcp and DELETE /mcp answer 405).
  --json          streamable only: answer POSTs with one application/json body
                  instead of a text/event-stream (progress notifications are
                  then dropped by the SDK: JSON mode has no back channel).
  --verbose       INFO logging and the uvicorn access log (on stderr).

Once listening it prints exactly one line "LISTENING <port>" to stdout (and
nothing else ever goes to stdout). It exits with status 0 on SIGTERM/SIGINT
and when its stdin reaches EOF.

Tools:
  echo(text) -> text
  sleep(seconds) -> "slept <seconds>" (%g); notifications/progress about every
                 0.1 s when the request carries _meta.progressToken.
  pid() -> os.getpid()
  add(a: int, b: int) -> a + b

Env:
  HTTP_CANCEL_LOG  if set, "cancelled <request-id>" is appended to this file
                   whenever a running request is cancelled by the peer's
                   notifications/cancelled (not on shutdown).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import time

# Everything but the LISTENING line goes to stderr, whatever a library prints.
_STDOUT = sys.stdout
sys.stdout = sys.stderr

print(f"http_sdk.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)

import uvicorn  # noqa: E402
from _sleep import sleep_with_progress  # noqa: E402  (tests/servers/ is sys.path[0])
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from sse_starlette.sse import AppStatus  # noqa: E402

HOST = "127.0.0.1"


def build_server(log_level: str) -> MCPServer:
    server = MCPServer("http-sdk", version="1.0", log_level=log_level)

    @server.tool()
    async def sleep(seconds: float, ctx: Context) -> str:
        """Sleep for `seconds`, reporting progress every ~0.1 s."""
        return await sleep_with_progress(seconds, ctx, "HTTP_CANCEL_LOG")

    @server.tool()
    def echo(text: str) -> str:
        """Return `text` unchanged."""
        return text

    @server.tool()
    def pid() -> int:
        """Return the server's process id."""
        return os.getpid()

    @server.tool()
    def add(a: int, b: int) -> int:
        """Return a + b."""
        return a + b

    return server


class _Server(uvicorn.Server):
    """uvicorn server that prints LISTENING and exits 0 on SIGTERM/SIGINT.

    (uvicorn's own capture_signals re-raises the signal after shutdown, which
    would make the exit status -15/-2.)
    """

    def request_exit(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True
        # Make sse-starlette end open SSE streams (GET streams, /sse) now
        # rather than holding the graceful shutdown open.
        AppStatus.should_exit = True
        _arm_watchdog()

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda s, f: self.request_exit())
        yield

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            port = sockets[0].getsockname()[1] if sockets else self.config.port
            _STDOUT.write(f"LISTENING {port}\n")
            _STDOUT.flush()


_watchdog_armed = threading.Event()


def _arm_watchdog(seconds: float = 5.0) -> None:
    """Backstop: never outlive a shutdown request by more than `seconds`."""
    if _watchdog_armed.is_set():
        return
    _watchdog_armed.set()

    def kill() -> None:
        time.sleep(seconds)
        print("http_sdk.py: shutdown took too long, exiting hard", file=sys.stderr, flush=True)
        os._exit(0)

    threading.Thread(target=kill, daemon=True).start()


def _watch_stdin(server: _Server) -> None:
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    print("http_sdk.py: stdin closed, exiting", file=sys.stderr, flush=True)
    server.request_exit()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--transport", choices=["streamable", "sse"], default="streamable")
    p.add_argument("--stateless", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    if args.transport == "sse" and (args.stateless or args.json):
        p.error("--stateless/--json apply to --transport streamable only")

    log_level = "INFO" if args.verbose else "WARNING"
    mcp = build_server(log_level)
    if args.transport == "streamable":
        app = mcp.streamable_http_app(json_response=args.json, stateless_http=args.stateless, host=HOST)
    else:
        app = mcp.sse_app(host=HOST)
    serve(app, args.port, log_level, args.verbose)


def serve(app: object, port: int, log_level: str, verbose: bool) -> None:
    """Serve an ASGI app on 127.0.0.1:port as described above (LISTENING, exit 0); never returns."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(128)
    sock.setblocking(False)

    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        log_level=log_level.lower(),
        access_log=verbose,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    threading.Thread(target=_watch_stdin, args=(server,), daemon=True).start()
    server.run(sockets=[sock])
    print(f"{os.path.basename(sys.argv[0])}: stopped", file=sys.stderr, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
