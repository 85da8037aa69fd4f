"""Event-loop stalls: how late a short timer fires on a process's asyncio loop.

A media process whose loop stalls delays every call on it at once (frames, VAD,
events); a stall shows as many calls' latencies jumping together. The watch keeps the
worst lag seen, observes each tick into `voxray_event_loop_lag_ms` and logs a warning
for a stall, so that a latency tail can be told apart from model compute.
"""

from __future__ import annotations

import asyncio
import time

from voxray import metrics
from voxray.logs import get_logger

log = get_logger("voxray.loop")


class LoopWatch:
    """One per process and loop; `ensure_started()` from any coroutine on that loop."""

    def __init__(self, role: str, interval_s: float = 0.2, warn_ms: float = 150.0) -> None:
        self.role = role
        self.interval_s = interval_s
        self.warn_ms = warn_ms
        self.max_lag_ms = 0.0
        self.stalls = 0  # ticks later than warn_ms
        self._task: asyncio.Task | None = None

    def ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"loop-watch-{self.role}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.tick((time.perf_counter() - t0 - self.interval_s) * 1000)

    def tick(self, lag_ms: float) -> None:
        lag_ms = max(0.0, lag_ms)
        self.max_lag_ms = max(self.max_lag_ms, lag_ms)
        metrics.observe("loop_lag_ms", lag_ms, role=self.role)
        if lag_ms >= self.warn_ms:
            self.stalls += 1
            log.warning("event loop stalled", extra={"role": self.role, "lag_ms": round(lag_ms, 1)})
