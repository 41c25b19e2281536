"""Tests for L{twisted_mcp.backends.oauth.single_flight}."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.single_flight import SingleFlight


class SingleFlightTests(SynchronousTestCase):
    def test_oneWorkPerKeyEachCallerItsOwnDeferred(self) -> None:
        flight: SingleFlight[str, int] = SingleFlight()
        started: list[Deferred[int]] = []

        def start() -> Deferred[int]:
            started.append(Deferred())
            return started[-1]

        first, second = flight.run("k", start), flight.run("k", start)
        other = flight.run("other", start)
        self.assertEqual(len(started), 2)
        self.assertIn("k", flight)
        first.cancel()  # one caller gives up: the work goes on for the other
        self.failureResultOf(first, CancelledError)
        started[0].callback(7)
        self.assertEqual(self.successResultOf(second), 7)
        self.assertNotIn("k", flight)
        started[1].errback(ValueError("no"))
        self.failureResultOf(other, ValueError)
        # Once over, a new caller starts new work.
        again = flight.run("k", start)
        self.assertEqual(len(started), 3)
        started[2].callback(8)
        self.assertEqual(self.successResultOf(again), 8)
