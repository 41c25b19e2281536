"""
Who may connect to the C{--listen} sockets.

Every connection costs a file descriptor, and the backends need
descriptors too (a crashed one cannot restart without its pipes).  So a
connection is refused when the clients in all reach C{gateway.maxClients},
when its peer (one uid on a Unix socket, one IP address on TCP) already
holds C{gateway.maxClientsPerPeer}, or when fewer than
C{gateway.descriptorReserve} descriptors would be left.
"""

from __future__ import annotations

import os
import resource
from typing import Callable

from twisted.logger import Logger

log = Logger()


def raise_descriptor_limit() -> int:
    """Raise the soft C{RLIMIT_NOFILE} to the hard limit; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warn("could not raise the open-file limit from {soft} to {hard}: {why}", soft=soft, hard=hard, why=e)
        else:
            log.info("open-file limit raised from {soft} to {hard} (the hard limit)", soft=soft, hard=hard)
            soft = hard
    return soft


def count_open_descriptors() -> int | None:
    """How many descriptors this process has open (None where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # listdir's own descriptor
    except OSError:
        return None


class Admission:
    """
    Counts the connected clients, in all and by peer, and says why a new
    one is refused.  One is shared by every listener.

    @param limit: the open-file limit (see L{raise_descriptor_limit}).
    @param count_open: how many descriptors are open now (None: unknown).
    """

    def __init__(
        self,
        max_clients: int,
        max_per_peer: int,
        reserve: int,
        limit: int,
        count_open: Callable[[], int | None] = count_open_descriptors,
    ) -> None:
        self.max_clients = max_clients
        self.max_per_peer = max_per_peer
        self.reserve = reserve
        self.limit = limit
        self.count_open = count_open
        self.total = 0
        self.by_peer: dict[str, int] = {}
        #: Refusals since the last connection admitted (logged once per episode).
        self.refused = 0

    def enter(self, peer: str) -> tuple[str, int, str] | None:
        """
        Admit a connection from C{peer}, or say why not: the setting
        reached, its value, and a sentence for the client.
        """
        refusal = self._refusal(peer)
        if refusal is not None:
            if not self.refused:
                log.warn(
                    "refusing client connections: {why} (further refusals are counted, not logged, until one is admitted)",
                    why=refusal[2],
                )
            self.refused += 1
            return refusal
        if self.refused:
            log.info("admitting client connections again ({n} refused meanwhile)", n=self.refused)
            self.refused = 0
        self.total += 1
        self.by_peer[peer] = self.by_peer.get(peer, 0) + 1
        return None

    def leave(self, peer: str) -> None:
        self.total -= 1
        left = self.by_peer[peer] - 1
        if left:
            self.by_peer[peer] = left
        else:
            del self.by_peer[peer]

    def _refusal(self, peer: str) -> tuple[str, int, str] | None:
        if self.total >= self.max_clients:
            return "maxClients", self.max_clients, f"{self.total} clients are connected (gateway.maxClients)"
        if self.by_peer.get(peer, 0) >= self.max_per_peer:
            return (
                "maxClientsPerPeer",
                self.max_per_peer,
                f"{peer} has {self.max_per_peer} connections open (gateway.maxClientsPerPeer)",
            )
        used = self.count_open()
        if used is not None and self.limit - used < self.reserve:
            return (
                "descriptorReserve",
                self.reserve,
                f"{used} of {self.limit} file descriptors are open and {self.reserve} are kept for the backends "
                "(gateway.descriptorReserve)",
            )
        return None
