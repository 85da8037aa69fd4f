"""Cross-call VAD batching: which chunks leave together, and how long one may wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from voxray.media.messages import VadBatch, VadBatchResult, VadChunk, VadChunkResult
from voxray.media.vad_batcher import VadBatcher

pytestmark = pytest.mark.timeout(30)


class FakeVad:
    """Answers after `latency_s`; remembers each request's keys and when it arrived."""

    def __init__(self, latency_s: float = 0.005, fail: bool = False) -> None:
        self.latency_s = latency_s
        self.fail = fail
        self.requests: list[tuple[float, list[str]]] = []

    async def __call__(self, batch: VadBatch) -> VadBatchResult:
        self.requests.append((time.monotonic(), [c.key for c in batch.chunks]))
        await asyncio.sleep(self.latency_s)
        if self.fail:
            raise RuntimeError("vad replica gone")
        return VadBatchResult(results=[VadChunkResult(key=c.key, probs=[len(c.pcm) / 1024], state=b"s", context=b"c")
                                       for c in batch.chunks])


def chunk(key: str, windows: int = 2) -> VadChunk:
    return VadChunk(key=key, pcm=b"\0" * 1024 * windows)


async def timed(batcher: VadBatcher, key: str) -> tuple[VadChunkResult, float]:
    t0 = time.monotonic()
    res = await batcher.submit(chunk(key))
    return res, time.monotonic() - t0


async def test_without_a_window_a_lone_chunk_leaves_at_once_and_later_ones_wait_for_the_request_in_flight():
    vad = FakeVad(latency_s=0.05)
    batcher = VadBatcher(vad, max_in_flight=1)
    first = asyncio.create_task(timed(batcher, "a"))
    await asyncio.sleep(0.01)
    rest = [asyncio.create_task(timed(batcher, k)) for k in ("b", "c")]
    (res_a, _), *others = await asyncio.gather(first, *rest)
    assert [keys for _, keys in vad.requests] == [["a"], ["b", "c"]]
    assert res_a.key == "a" and [r.key for r, _ in others] == ["b", "c"]
    batcher.close()


async def test_a_window_gathers_staggered_chunks_into_one_request_and_bounds_their_wait():
    # The window is wide next to the stagger so that a loaded CI machine's event-loop
    # stalls (tens of ms) cannot split the batch; the lower bounds are exact.
    window = 0.3
    vad = FakeVad()
    batcher = VadBatcher(vad, window_s=window)
    await batcher.submit(chunk("warm"))  # a request just left: the next ones wait for the window
    tasks = []
    for key in ("a", "b", "c"):
        tasks.append(asyncio.create_task(timed(batcher, key)))
        await asyncio.sleep(0.02)  # calls' chunks come in staggered
    results = await asyncio.gather(*tasks)
    assert [keys for _, keys in vad.requests] == [["warm"], ["a", "b", "c"]]
    assert [r.key for r, _ in results] == ["a", "b", "c"]  # each call gets its own answer back
    gap = vad.requests[1][0] - vad.requests[0][0]
    assert window - 0.001 <= gap < window + 0.2  # one request per window, not later
    assert max(waited for _, waited in results) < window + 0.2  # a chunk waits at most about the window
    batcher.close()


async def test_after_a_quiet_spell_a_chunk_leaves_at_once():
    window = 0.2
    vad = FakeVad(latency_s=0.0)
    batcher = VadBatcher(vad, window_s=window)
    await batcher.submit(chunk("a"))
    await asyncio.sleep(window + 0.1)
    _, waited = await timed(batcher, "b")
    assert waited < window / 2  # it did not wait for a window
    assert [keys for _, keys in vad.requests] == [["a"], ["b"]]
    batcher.close()


async def test_under_steady_load_requests_leave_once_per_window():
    vad = FakeVad()
    batcher = VadBatcher(vad, window_s=0.04)
    calls = 8

    async def call(i: int) -> None:
        await asyncio.sleep(i * 0.008)  # staggered starts, as real calls
        for _ in range(5):
            await batcher.submit(chunk(f"call{i}"))
            await asyncio.sleep(0.064 - 0.005)

    t0 = time.monotonic()
    await asyncio.gather(*(call(i) for i in range(calls)))
    elapsed = time.monotonic() - t0
    chunks = sum(len(keys) for _, keys in vad.requests)
    assert chunks == calls * 5
    # Without the window about one request per chunk would leave (40); with it, one per window at most.
    assert len(vad.requests) <= elapsed / 0.04 + 2
    assert len(vad.requests) < chunks / 2


async def test_a_failed_request_fails_every_chunk_in_it():
    batcher = VadBatcher(FakeVad(fail=True), window_s=0.02)
    results = await asyncio.gather(batcher.submit(chunk("a")), batcher.submit(chunk("b")), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    batcher.close()
