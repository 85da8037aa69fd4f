"""The event-loop stall watch sees a real stall on a real loop, and nothing on an idle one."""

from __future__ import annotations

import asyncio
import logging
import time

from voxray.loop_watch import LoopWatch


async def test_a_blocked_loop_is_seen_and_logged(caplog):
    watch = LoopWatch("test", interval_s=0.05, warn_ms=100)
    watch.ensure_started()
    await asyncio.sleep(0.2)
    quiet = watch.max_lag_ms
    with caplog.at_level(logging.WARNING, logger="voxray.loop"):
        time.sleep(0.3)  # what a blocking call on the event loop does to every call on it
        await asyncio.sleep(0.12)
    watch.stop()
    assert quiet < 100  # before the block: no stall
    assert watch.max_lag_ms >= 200, watch.max_lag_ms
    assert watch.stalls >= 1
    assert any(r.getMessage() == "event loop stalled" and r.lag_ms >= 200 for r in caplog.records)


async def test_ensure_started_runs_one_watch():
    watch = LoopWatch("test", interval_s=0.05)
    watch.ensure_started()
    first = watch._task
    watch.ensure_started()
    assert watch._task is first
    await asyncio.sleep(0.15)
    watch.stop()
    assert watch.stalls == 0
