"""Real-time pacing of 20 ms frames on an absolute clock.

Frame n leaves at start + n x period, so a late tick does not shift every later frame
(the far side's jitter buffer sees a steady rate); far behind (a stalled loop), the
clock re-anchors instead of bursting frames out.
"""

from __future__ import annotations

import asyncio
import time


class FrameClock:
    def __init__(self, period_s: float, max_lag_s: float = 0.2) -> None:
        self.period_s = period_s
        self.max_lag_s = max_lag_s
        self._next: float | None = None

    def reset(self) -> None:
        """Nothing was sent for a while: the next frame starts the clock again."""
        self._next = None

    async def tick(self) -> None:
        """Return when the next frame is due (at once for the first after a reset)."""
        now = time.monotonic()
        if self._next is None:
            self._next = now + self.period_s
            return
        delay = self._next - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -self.max_lag_s:
            self._next = now
        self._next += self.period_s
