"""VAD deployment: Silero over batches of streams; stateless, so any replica serves any call."""

from __future__ import annotations

import asyncio
import time

from ray import serve

from voxray.media.messages import VadBatch, VadBatchResult
from voxray.deployments.silero import SileroBatch
from voxray import metrics
from voxray.faults import enable_fault_dumps
from voxray.logs import get_logger

log = get_logger("voxray.vad")


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class VadDeployment:
    def __init__(self, model_path: str | None = None) -> None:
        enable_fault_dumps()
        self._model = SileroBatch(model_path)
        log.info("silero vad loaded")

    async def infer(self, batch: VadBatch) -> VadBatchResult:
        return await self._infer_many(batch)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _infer_many(self, batches: list[VadBatch]) -> list[VadBatchResult]:
        """Requests from every ingress replica and UA node in one model pass per window."""
        chunks = [c for b in batches for c in b.chunks]
        t0 = time.perf_counter()
        results = await asyncio.to_thread(self._model.run, chunks)
        compute_ms = (time.perf_counter() - t0) * 1000
        metrics.observe("vad_batch", len(chunks))
        metrics.observe("vad_ms", compute_ms)
        out, i = [], 0
        for b in batches:
            out.append(VadBatchResult(results=results[i:i + len(b.chunks)], compute_ms=compute_ms))
            i += len(b.chunks)
        return out
