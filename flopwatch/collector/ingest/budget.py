"""Bytes of envelopes held between being read off a stream and being acked, bounded.

Every Submit stream takes an envelope's size from the budget after reading it and gives it back
once the envelope is acked; a stream that finds no room waits before it reads on, so gRPC flow
control holds its sender back and the collector's memory stays bounded whatever the senders do.
Two bounds: `total` over all peers, and `per_peer` for one peer (client address and
certificate), so a peer flooding the collector waits on its own share and never on the room
other nodes need. Waiters are served in arrival order, skipping one whose own peer is full.

An envelope larger than a bound is let through when nothing else is held under that bound, so
every envelope the message size allows is taken eventually. Call from one event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass


@dataclass
class _Waiter:
    peer: str
    size: int
    future: asyncio.Future[None]


class ByteBudget:
    def __init__(self, *, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = per_peer
        self.used = 0
        self.peak = 0  # the most ever held at once
        self._by_peer: dict[str, int] = {}
        self._waiters: deque[_Waiter] = deque()
        self._waiting: dict[str, int] = {}  # waiters per peer
        self.waits = 0  # takes that had to wait

    def _fits(self, peer: str, size: int) -> bool:
        held = self._by_peer.get(peer, 0)
        fits_peer = held == 0 or held + size <= self.per_peer
        fits_total = self.used == 0 or self.used + size <= self.total
        return fits_peer and fits_total

    def _grant(self, peer: str, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)
        self._by_peer[peer] = self._by_peer.get(peer, 0) + size

    async def take(self, peer: str, size: int) -> None:
        """Take `size` bytes for `peer`, waiting for room if there is none."""
        if not self._waiting.get(peer) and self._fits(peer, size):
            self._grant(peer, size)
            return
        self.waits += 1
        waiter = _Waiter(peer, size, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._waiting[peer] = self._waiting.get(peer, 0) + 1
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.give(peer, size)  # granted just as we were cancelled: hand it back
            else:
                self._unwait(waiter)
            raise

    def _unwait(self, waiter: _Waiter) -> None:
        self._waiters.remove(waiter)
        left = self._waiting[waiter.peer] - 1
        if left:
            self._waiting[waiter.peer] = left
        else:
            del self._waiting[waiter.peer]

    def give(self, peer: str, size: int) -> None:
        """Give back `size` bytes `peer` took; wake waiters that fit now."""
        self.used -= size
        left = self._by_peer.get(peer, 0) - size
        if left > 0:
            self._by_peer[peer] = left
        else:
            self._by_peer.pop(peer, None)
        blocked: set[str] = set()  # peers whose first waiter does not fit: keep their order
        for waiter in list(self._waiters):
            if waiter.peer in blocked or waiter.future.done():  # done: cancelled, leaving
                continue
            if self._fits(waiter.peer, waiter.size):
                self._unwait(waiter)
                self._grant(waiter.peer, waiter.size)
                waiter.future.set_result(None)
            else:
                blocked.add(waiter.peer)

    def held_by(self, peer: str) -> int:
        return self._by_peer.get(peer, 0)
