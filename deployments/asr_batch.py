"""Cross-utterance ASR batching: which requests share one model call, in what order, and the fallback.

Only the local Whisper batches (one encoder pass over N padded windows); cloud
providers, agent credentials and over-long utterances take the per-request
fallback chain. Free of Ray so it is tested with the real model alone.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from voxray.config import ModelsConfig
from voxray.media.messages import AsrRequest, AsrResult
from voxray.logs import get_logger
from voxray.providers.fallback import FAILURES, AsrChain
from voxray.providers.whisper_local import WhisperLocal

log = get_logger("voxray.asr")

# 8 x 30 s windows is ~1 GB of encoder activations at most for tiny; the gather
# wait is short because, under load, requests pile up during the previous batch.
MAX_BATCH = 8
GATHER_S = 0.002


def max_batch(chain: AsrChain, settings: ModelsConfig) -> int:
    """Utterances per model call: the setting, else by where the first local Whisper runs."""
    if settings.whisper_max_batch is not None:
        return settings.whisper_max_batch
    local = [p for p in chain.providers.values() if isinstance(p, WhisperLocal)]
    return MAX_BATCH if local and local[0].device == "cuda" else 1


def batch_provider(chain: AsrChain, req: AsrRequest) -> WhisperLocal | None:
    """The local Whisper that would serve `req` first, if the request may join a batch."""
    name = req.provider or chain.names[0]
    provider = chain.providers.get(name)
    if not isinstance(provider, WhisperLocal) or req.creds is not None:
        return None
    return provider if provider.batchable(np.frombuffer(req.pcm, dtype="<i2")) else None


async def transcribe_single(chain: AsrChain, req: AsrRequest, failures: list[str] | None = None) -> AsrResult:
    """One request through the fallback chain (retries, then the next provider)."""
    t, name, chain_failures = await chain.transcribe(
        np.frombuffer(req.pcm, dtype="<i2"), req.language, req.provider, req.creds)
    return AsrResult(text=t.text, provider=name, language=t.language, audio_s=t.audio_s,
                     compute_s=t.compute_s, failures=(failures or []) + chain_failures)


async def transcribe_batch(chain: AsrChain, reqs: list[AsrRequest]) -> list[AsrResult]:
    """All of `reqs` (each batchable on the same provider) in one model call.

    If the batched call fails, each request goes through the chain on its own, so a
    batch never fails more calls than the chain would have one by one.
    """
    provider = batch_provider(chain, reqs[0])
    assert provider is not None and all(batch_provider(chain, r) is provider for r in reqs)
    try:
        transcripts = await asyncio.wait_for(
            provider.transcribe_batch([np.frombuffer(r.pcm, dtype="<i2") for r in reqs],
                                      [r.language for r in reqs]),
            chain.timeouts.get(provider.name))
    except FAILURES as exc:
        note = f"{provider.name} batch: {type(exc).__name__}: {exc}"[:300]
        log.warning("batched asr failed; one by one", extra={"error": note, "batch": len(reqs)})
        return list(await asyncio.gather(*(transcribe_single(chain, r, [note]) for r in reqs)))
    return [AsrResult(text=t.text, provider=provider.name, language=t.language, audio_s=t.audio_s,
                      compute_s=t.compute_s, batch_size=len(reqs))
            for t in transcripts]


@dataclass
class _Queued:
    req: AsrRequest
    future: asyncio.Future
    seq: int
    at: float  # monotonic time it arrived


class AsrScheduler:
    """One replica's queue for its batchable provider: finals first, stale partials dropped.

    Up to `concurrency` model calls run at once (the provider's CTranslate2 workers); what
    arrives while they are busy waits and goes together in the next call, up to
    `max_batch` requests, finals (turn ends, speculations) before partials, and partials
    one at a time and never with finals: a batch of partials would hold the model as long
    as a batch of finals while finals arrive. A second call starts only for finals: turn
    ends that arrive just after a batch began (many calls ending their turns together)
    start at once instead of waiting the whole batch out; partials wait for an idle model. A partial that a newer
    request of the same call has superseded, or that waited past `partial_max_wait_s`,
    is answered `skipped` without being decoded: under load the caller's latest audio
    is what matters, a late partial is no news, and the same audio is never decoded
    twice. A request whose caller cancelled it (a speculation the
    caller talked over) leaves the queue unheard.

    Partials are shed under load: while the model was busy more than `partial_max_load` of
    the last `load_window_s`, they are answered `skipped` too. Each partial costs as much
    compute as a final, and a call makes two a turn: at 8 calls on 2 cores they were
    two thirds of the decodes, and every one of them delayed somebody's turn end.
    """

    def __init__(self, run: Callable[[list[AsrRequest]], Awaitable[list[AsrResult]]],
                 max_batch: int = 8, gather_s: float = 0.002, prioritize: bool = True,
                 partial_max_wait_s: float = 0.5, max_partials: int = 1, concurrency: int = 1,
                 partial_max_load: float = 0.5, load_window_s: float = 2.0) -> None:
        self._run = run
        self.max_batch = max_batch
        self.gather_s = gather_s  # lets requests sent together by many calls share the first call
        self.prioritize = prioritize  # False: first come, first served, nothing skipped (the old queue)
        self.partial_max_wait_s = partial_max_wait_s
        self.max_partials = max_partials  # partials in one model call (when no final waits)
        self._queue: list[_Queued] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self.concurrency = concurrency
        self._running: set[asyncio.Task] = set()
        self.skipped = 0
        self.shed = 0  # partials skipped for load (counted in `skipped` too)
        self.partial_max_load = partial_max_load
        self.load_window_s = load_window_s
        self._busy: collections.deque[tuple[float, float]] = collections.deque()  # (start, end) of busy spells
        self._busy_since: float | None = None  # the current spell's start, while a model call runs

    def load(self, now: float | None = None) -> float:
        """The share of the last `load_window_s` in which a model call was running."""
        now = time.monotonic() if now is None else now
        start = now - self.load_window_s
        while self._busy and self._busy[0][1] <= start:
            self._busy.popleft()
        busy = sum(min(e, now) - max(s, start) for s, e in self._busy)
        if self._busy_since is not None:
            busy += now - max(self._busy_since, start)
        return min(1.0, busy / self.load_window_s)

    async def submit(self, req: AsrRequest) -> AsrResult:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="asr-scheduler")
        item = _Queued(req, asyncio.get_running_loop().create_future(), next(self._seq), time.monotonic())
        self._queue.append(item)
        self._wake.set()
        try:
            return await item.future
        finally:
            if item in self._queue:  # cancelled while waiting: never decode it
                self._queue.remove(item)

    async def aclose(self) -> None:
        """Stop the queue's worker (model calls already running finish on their own)."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    def take(self, finals_only: bool = False) -> list[_Queued]:
        """The next batch: drop what is stale or cancelled, then finals, then partials, oldest first
        (finals_only: a model call is running, so partials stay queued)."""
        latest: dict[str, int] = {}
        for q in self._queue:
            latest[q.req.call_id] = max(latest.get(q.req.call_id, -1), q.seq)
        keep = []
        now = time.monotonic()
        loaded = self.load(now) > self.partial_max_load
        for q in self._queue:
            if q.future.done():
                continue
            stale = latest[q.req.call_id] > q.seq or now - q.at > self.partial_max_wait_s
            if self.prioritize and q.req.partial and (stale or loaded):
                self.skipped += 1
                self.shed += not stale
                q.future.set_result(AsrResult(text="", provider="", skipped=True))
                continue
            keep.append(q)
        keep.sort(key=lambda q: (self.prioritize and q.req.partial, q.seq))
        size = self.max_batch
        if finals_only and (not keep or keep[0].req.partial):
            self._queue = keep
            return []
        if self.prioritize and keep and keep[0].req.partial:
            # Only partials wait: take few, so a turn's end arriving now waits little for the model.
            size = self.max_partials
        elif self.prioritize:
            size = min(size, sum(not q.req.partial for q in keep))  # finals go without partials
        batch, self._queue = keep[:size], keep[size:]
        return batch

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.gather_s:
                await asyncio.sleep(self.gather_s)
            while len(self._running) < self.concurrency:
                batch = self.take(finals_only=bool(self._running))
                if not batch:
                    break
                task = asyncio.create_task(self._run_batch(batch), name="asr-batch")
                if not self._running:
                    self._busy_since = time.monotonic()
                self._running.add(task)
                task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if not self._running and self._busy_since is not None:
            self._busy.append((self._busy_since, time.monotonic()))
            self._busy_since = None
        self._wake.set()  # a model worker is free: whatever waited goes now

    async def _run_batch(self, batch: list[_Queued]) -> None:
        started = time.monotonic()
        try:
            results = await self._run([q.req for q in batch])
        except Exception as exc:  # the batch runner falls back itself; this is a bug
            log.exception("asr batch crashed")
            for q in batch:
                if not q.future.done():
                    q.future.set_exception(exc)
            return
        for q, res in zip(batch, results, strict=True):
            if not q.future.done():
                q.future.set_result(res.model_copy(update={"queued_s": started - q.at}))
