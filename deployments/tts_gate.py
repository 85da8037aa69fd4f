"""Which synthesis a TTS replica runs next: the caller-facing first clause before the rest.

Piper runs in threads, and a replica takes many requests at once (max_ongoing_requests):
left alone they all share the cores, so when eight turns end together the eighth
caller's "Sure," is computed at an eighth of the speed, behind seven other calls' long
second sentences. The gate lets `slots` synthesis steps (one Piper sentence each) run
at a time, lowest priority number first, then in arrival order: a track's first
piece goes before any later piece, which plays only after it anyway.
Cloud providers wait on the network, not the cores: they do not pass through it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from contextlib import asynccontextmanager

FIRST, LATER = 0, 1  # priorities: a track's first piece, its other pieces


class PriorityGate:
    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError("a gate needs at least one slot")
        self.slots = slots
        self._busy = 0
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self._seq = itertools.count()

    @asynccontextmanager
    async def slot(self, priority: int):
        if self._busy < self.slots and not self._waiting:
            self._busy += 1
        else:
            fut = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._seq), fut))
            try:
                await fut  # the releaser counted us in
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._release()  # handed the slot just as we were cancelled: pass it on
                else:
                    self._waiting = [w for w in self._waiting if w[2] is not fut]
                    heapq.heapify(self._waiting)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)  # the slot goes straight to the next in line
                return
        self._busy -= 1

    @property
    def waiting(self) -> int:
        return len(self._waiting)
