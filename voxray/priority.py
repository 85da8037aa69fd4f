"""Threads for model work that can wait: the lowest CPU priority.

A node's cores serve, at once, work a caller is waiting on (a turn's transcript, the first
words of a reply) and work with slack: a reply's later sentences, synthesized while its
first ones play. When eight turns end together on two cores, the second kind took the
cores from the first (bench: 8 calls' `asrFinal` p95 1.48 s with replies, 1.03 s with
none; with the later sentences idle, 1.19 s on average over six runs against 1.51).
Within one process a gate orders the work; across processes (the ASR and TTS replicas,
the media) only the kernel's scheduler can. So work with slack runs on threads at
SCHED_IDLE: such a thread gets a core only when no other thread wants it, and a free
core at full speed. Lowering a thread's priority needs no privilege; where SCHED_IDLE is
refused, the thread goes to nice 19 instead (Linux sets niceness per thread).
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

IDLE, NICE, UNCHANGED = "idle", "nice", "unchanged"
LOWEST_NICE = 19


def lower_this_thread() -> str:
    """Put the calling thread at the lowest CPU priority; returns what it got."""
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread
            return IDLE
        except OSError:
            pass
    if sys.platform.startswith("linux"):  # elsewhere a thread id given to setpriority is a process id
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_NICE)
            return NICE
        except OSError:
            pass
    return UNCHANGED


def thread_is_lowered() -> bool:
    """Whether the calling thread runs at the lowest priority (what lower_this_thread gives)."""
    if hasattr(os, "SCHED_IDLE") and os.sched_getscheduler(0) == os.SCHED_IDLE:
        return True
    return (sys.platform.startswith("linux")
            and os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) >= LOWEST_NICE)


class IdleLane(ThreadPoolExecutor):
    """An executor whose threads run at the lowest CPU priority, for model steps with slack."""

    def __init__(self, threads: int = 1, name: str = "idle-lane") -> None:
        self.got: str | None = None  # what the lane's threads got (set by the first one started)
        self.steps = 0  # blocking steps submitted here (what tests check)
        super().__init__(max_workers=threads, thread_name_prefix=name, initializer=self._lower)

    def _lower(self) -> None:
        self.got = lower_this_thread()

    def submit(self, fn, /, *args, **kwargs):
        self.steps += 1
        return super().submit(fn, *args, **kwargs)
