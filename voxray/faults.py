"""Fatal-signal dumps for every voxray process (Ray actors and replicas included).

The UA node holds native threads (pjsua2's SIP, media and clock threads, aiortc's
codecs in PyAV, the models' thread pools). A crash shown with one thread's stack
hides the thread that corrupted what; all threads' Python stacks go to the
process's stderr (for Ray processes: its worker log) on SIGSEGV, SIGFPE, SIGABRT,
SIGBUS and SIGILL.
"""

from __future__ import annotations

import faulthandler
import sys


def enable_fault_dumps() -> None:
    """All threads' stacks on a fatal signal (replaces Ray's current-thread-only setting)."""
    try:
        faulthandler.enable(file=sys.stderr, all_threads=True)
    except (AttributeError, ValueError, OSError):  # stderr replaced by an object without a file descriptor
        pass
