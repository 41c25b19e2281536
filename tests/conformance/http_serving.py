"""
Serving a scenario server's ASGI app (the official SDK's Streamable HTTP app)
on 127.0.0.1 for the conformance runner: on a socket bound first (port 0:
any free one), saying `LISTENING <port>` on the real stdout once it
accepts, and stopping when stdin closes (the runner's way to stop it).
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any, TextIO


def serve_app(app: Any, host: str, port: int, stdout: TextIO) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit:
                stdout.write(f"LISTENING {sock.getsockname()[1]}\n")
                stdout.flush()

    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1))

    def watch_stdin() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        server.should_exit = True

    threading.Thread(target=watch_stdin, daemon=True).start()
    server.run(sockets=[sock])


__all__ = ["serve_app"]
