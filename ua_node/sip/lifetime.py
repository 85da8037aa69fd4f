"""When the C++ half of a pjsua2 object with Python overrides may die: only on purpose.

pjsua2 classes we subclass in Python (AudioMediaPort, Call, Account) are SWIG
"directors": C++ calls back into the Python object through a borrowed pointer. If
the C++ object is freed by the Python object's own deallocation (refcount or GC),
SWIG releases the GIL around the C++ destructor while the Python object is already
half torn down. pjmedia's clock thread, which calls every bridge port each 20 ms
(heart-beat frames even with nothing connected) and waits for the GIL inside the
port's callback, then runs Python code on that dying object: its refcount goes
0 -> 1 -> 0, it is freed twice, and the heap is corrupt. The process dies later,
anywhere (seen as SIGSEGV in the GC's `visit_decref` while aiortc parsed SDP).
`bench/ua_stress.py --port-race` shows it in a few iterations.

So the C++ half is destroyed explicitly, on the pj thread, while the Python half is
alive and intact: a callback that slips in during the destructor runs on a live
object (and sees `retired`), and pjsua2's destructor then detaches the port from the
clock under the port's lock. The Python shell left behind no longer owns anything,
so its own deallocation, whenever and on whichever thread it happens, frees no C++.
"""

from __future__ import annotations

from typing import Any


def destroy(obj: Any) -> None:
    """Free obj's C++ half now (pj thread only); a no-op for None or an already destroyed object."""
    if obj is None or not getattr(obj, "thisown", False):
        return
    obj.retired = True  # callbacks racing the destructor become no-ops
    obj.__swig_destroy__(obj)  # SWIG disowns the proxy: no second delete later
