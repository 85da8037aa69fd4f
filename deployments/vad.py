"""VAD deployment: Silero over batches of streams; stateless, so any replica serves any call."""

from __future__ import annotations

from ray import serve

from voxray.media.messages import VadBatch, VadBatchResult
from voxray.providers.silero_vad import InProcessVad
from voxray.faults import enable_fault_dumps
from voxray.logs import get_logger

log = get_logger("voxray.vad")


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class VadDeployment:
    def __init__(self, model_path: str | None = None) -> None:
        enable_fault_dumps()
        self._model = InProcessVad(model_path)
        log.info("silero vad loaded")

    async def infer(self, batch: VadBatch) -> VadBatchResult:
        return await self._infer_many(batch)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _infer_many(self, batches: list[VadBatch]) -> list[VadBatchResult]:
        """Requests from every ingress replica and UA node in one model pass per window."""
        done = await self._model.infer(VadBatch(chunks=[c for b in batches for c in b.chunks]))
        out, i = [], 0
        for b in batches:
            out.append(VadBatchResult(results=done.results[i:i + len(b.chunks)], compute_ms=done.compute_ms))
            i += len(b.chunks)
        return out
