"""Threads at the lowest CPU priority (voxray/priority.py), for model work with slack."""

from __future__ import annotations

import os
import threading

import pytest

from voxray.priority import IDLE, IdleLane, lower_this_thread, thread_is_lowered

# The lowest-priority threads are Linux's SCHED_IDLE (test_tts_lanes uses the same mark).
linux_only = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")


@linux_only
def test_lowering_a_thread_leaves_the_others_as_they_were():
    seen = {}

    def worker():
        seen["got"] = lower_this_thread()
        seen["policy"] = os.sched_getscheduler(0)
        seen["lowered"] = thread_is_lowered()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"got": IDLE, "policy": os.SCHED_IDLE, "lowered": True}
    assert os.sched_getscheduler(0) != os.SCHED_IDLE and not thread_is_lowered()


@linux_only
def test_an_idle_lane_runs_every_step_on_its_lowered_threads():
    lane = IdleLane(threads=2)
    try:
        results = [lane.submit(lambda: (thread_is_lowered(), threading.current_thread().name)).result(timeout=5)
                   for _ in range(4)]
    finally:
        lane.shutdown()
    assert all(lowered for lowered, _ in results)
    assert all(name.startswith("idle-lane") for _, name in results)
    assert lane.got == IDLE and lane.steps == 4
    assert not thread_is_lowered()  # the submitting thread is untouched
