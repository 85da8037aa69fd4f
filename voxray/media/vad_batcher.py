"""Cross-call batching toward the VAD deployment.

Every call in an ingress replica submits its chunks here; while a request is in
flight, new chunks wait and leave together in the next request. Under load one
handle call carries many calls' audio; alone, a chunk leaves at once.

With a window (`window_s` > 0) requests also leave at most once per window: calls'
chunks come in staggered, so without it a request was nearly always free and left
with one or two chunks (16 calls made ~200 requests a second; through a Serve handle
each cost the ingress, Serve's router and the VAD replica more than Silero's own work,
and in-process each is a thread hop and a model run per window). A chunk waits at
most the window; one that comes after a quiet spell leaves at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from voxray.media.messages import VadBatch, VadBatchResult, VadChunk, VadChunkResult

InferFn = Callable[[VadBatch], Awaitable[VadBatchResult]]


class VadBatcher:
    def __init__(self, infer: InferFn, max_batch: int = 256, max_in_flight: int = 2,
                 window_s: float = 0.0) -> None:
        self._infer = infer
        self._window_s = window_s
        self._last_send = float("-inf")  # loop time the last request left
        self._max_batch = max_batch
        self._pending: list[tuple[VadChunk, asyncio.Future[VadChunkResult]]] = []
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.chunks = 0

    async def submit(self, chunk: VadChunk) -> VadChunkResult:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="vad-batcher")
        fut: asyncio.Future[VadChunkResult] = asyncio.get_running_loop().create_future()
        self._pending.append((chunk, fut))
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            wait = self._last_send + self._window_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # let the other calls' chunks of this window join
            await self._slots.acquire()
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]
            if not self._pending:
                self._wakeup.clear()
            if not batch:
                self._slots.release()
                continue
            self._last_send = loop.time()
            asyncio.create_task(self._send(batch))

    async def _send(self, batch: list[tuple[VadChunk, asyncio.Future[VadChunkResult]]]) -> None:
        try:
            result = await self._infer(VadBatch(chunks=[c for c, _ in batch]))
            self.batches += 1
            self.chunks += len(batch)
            for (_, fut), res in zip(batch, result.results, strict=True):
                if not fut.done():
                    fut.set_result(res)
        except Exception as exc:  # the calls decide what a failed VAD means for them
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        finally:
            self._slots.release()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
