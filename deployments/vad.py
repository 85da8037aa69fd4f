"""VAD deployment: Silero over batches of streams; stateless, so any replica serves any call."""

from __future__ import annotations

import asyncio
import time

from ray import serve

from voxray.deployments.messages import VadBatch, VadBatchResult
from voxray.deployments.silero import SileroBatch
from voxray.logs import get_logger

log = get_logger("voxray.vad")


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class VadDeployment:
    def __init__(self, model_path: str | None = None) -> None:
        self._model = SileroBatch(model_path)
        log.info("silero vad loaded")

    async def infer(self, batch: VadBatch) -> VadBatchResult:
        t0 = time.perf_counter()
        results = await asyncio.to_thread(self._model.run, batch.chunks)
        return VadBatchResult(results=results, compute_ms=(time.perf_counter() - t0) * 1000)

    async def check_health(self) -> None:
        return None
