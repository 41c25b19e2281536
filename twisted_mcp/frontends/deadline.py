"""
L{DeadlineChannel}: an HTTP connection whose every request must arrive
whole within the channel's timeout.

twisted.web's idle timeout restarts with every byte, so a client trickling
its request would keep its place (and its share of the connection caps) for
ever.  Here a whole request, head and body, must also arrive within that
time of the connection, or of the last answer; the connection is closed
otherwise.  The MCP HTTP front and the admin endpoint both use it.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web.http import HTTPChannel

log = Logger()


class DeadlineChannel(HTTPChannel):
    #: How the log names this connection's client, and the setting that bounds it.
    client_name = "HTTP client"
    timeout_setting = "the timeout"
    _deadline: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._start_deadline()

    def connectionLost(self, reason: Any = None) -> None:
        self._stop_deadline()
        super().connectionLost(reason)

    def _start_deadline(self) -> None:
        self._deadline = self.callLater(self.timeOut, self._request_too_slow)

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _request_too_slow(self) -> None:
        self._deadline = None
        transport: Any = self.transport
        if transport is None or transport.disconnecting:
            return  # the idle timeout came first
        log.info(
            "{client}: a request did not arrive whole within {timeout:g} s ({setting}); closing",
            client=self.client_name,
            timeout=self.timeOut,
            setting=self.timeout_setting,
        )
        self.setTimeout(None)  # one timeout only: each schedules its own forced abort
        self.timeoutConnection()  # close, and abort if even that stalls

    def allContentReceived(self) -> None:
        self._stop_deadline()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        transport: Any = self.transport
        if self.persistent and self._deadline is None and transport is not None and not transport.disconnecting:
            self._start_deadline()


__all__ = ["DeadlineChannel"]
