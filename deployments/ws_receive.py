"""Reading a `/call` socket from Serve's proxy in fewer, larger pulls.

Serve terminates the WebSocket in its proxy actor; the ingress replica pulls the
socket's messages with one actor call (`receive_asgi_messages`) each time the last
pull returned, and the proxy answers with everything queued, or waits for the next
message. A caller sends a frame every 20 ms, so each frame cost a Ray actor call on
both sides: at 16 calls that was the larger part of the media plane's CPU
(bench/media_plane.py).

So the next pull starts only when the session needs audio: when the frame that
completes its next VAD chunk is due (at the pace frames have come). It returns that
frame with the ones queued since the last pull: one pull per chunk (96 ms by default)
instead of one per 20 ms frame, and the chunk reaches VAD about as early as before. (A pull started
earlier would return the queued frames at once, without the one VAD waits for, and a
second pull would follow.) A frame that is late is waited for in the proxy by the next
pull; anything else on the socket (an agent's command) waits at most `max_wait_s`
there; a pull after a quiet spell starts at once. When a reply from the agent is
likely (it was just sent a transcript) the waiting pull is woken (`PacedPull.wake`)
and `due` says None, so the command is read at once.

The pull is Serve's own (`ray.serve._private.http_util.ASGIReceiveProxy`); where the
socket's `receive` is not that (a Serve version without it, plain Starlette), nothing
changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket

Pull = Callable[[Any], Awaitable[bytes]]
Due = Callable[[], float | None]  # time.monotonic() the consumer's next data is due; None: not known


class PullPacer:
    """When the next pull may start: the protocol of `PacedPull`, free of I/O.

    `min_gap_s` keeps pulls apart when nothing says when data is due; `max_wait_s`
    bounds how long anything waits in the proxy; in between, a pull starts `lag_s`
    after `due`.
    """

    def __init__(self, max_wait_s: float, lag_s: float = 0.0, min_gap_s: float = 0.01) -> None:
        self.max_wait_s = max_wait_s
        self.lag_s = lag_s
        self.min_gap_s = min(min_gap_s, max_wait_s)
        self._last: float | None = None

    def start_at(self, now: float, due: float | None) -> float:
        """When (time.monotonic()) a pull asked for at `now` should start."""
        if self._last is None:
            return now
        earliest, latest = self._last + self.min_gap_s, self._last + self.max_wait_s
        target = earliest if due is None else min(max(due + self.lag_s, earliest), latest)
        return max(now, target)

    def started(self, now: float) -> None:
        self._last = now


class PacedPull:
    """`pull`, started when `pacer` says; `wake()` starts a waiting one now."""

    def __init__(self, pull: Pull, pacer: PullPacer, due: Due | None = None) -> None:
        self._pull = pull
        self._pacer = pacer
        self._due = due
        self._sleep: asyncio.Future | None = None

    async def __call__(self, request_metadata: Any) -> bytes:
        # Serve queued the last pull's messages just now: let the socket's reader feed them
        # to the session first, so `due` counts them.
        await asyncio.sleep(0)
        now = time.monotonic()
        wait = self._pacer.start_at(now, self._due() if self._due else None) - now
        if wait > 0:
            loop = asyncio.get_running_loop()
            self._sleep = sleep = loop.create_future()
            timer = loop.call_later(wait, lambda: sleep.done() or sleep.set_result(None))
            try:
                await sleep
            finally:
                timer.cancel()
                self._sleep = None
        self._pacer.started(time.monotonic())
        return await self._pull(request_metadata)

    def wake(self) -> None:
        if self._sleep is not None and not self._sleep.done():
            self._sleep.set_result(None)


def pace_serve_receive(ws: WebSocket, max_wait_s: float, due: Due | None = None) -> PacedPull | None:
    """Pace the pulls behind `ws` (from the next one on); None if `ws` is not read through Serve's proxy."""
    if max_wait_s <= 0:
        return None
    receive = getattr(ws, "_receive", None)
    pull = getattr(receive, "_receive_asgi_messages", None)
    if pull is None or not callable(pull):
        return None
    paced = receive._receive_asgi_messages = PacedPull(pull, PullPacer(max_wait_s), due)
    return paced
