"""Silero run on a batch of streams in this process, off the event loop.

The VadDeployment runs its batches with it, and so does the ingress for its `/call`
sessions (and `LocalModelServices` for tests and the bench). A `/call` call's audio
is already in the ingress (the WebSocket is its transport), and Silero costs about
2 ms of CPU per second of audio batched over calls (bench/run.py's VAD table); a
Serve handle call costs the ingress, Serve's router thread and the VAD replica more
than the model's own work (bench/media_plane.py, `[media] vad_in_process`). So the
replica's `VadBatcher` runs its batches here. SIP and WebRTC sessions (on the UA
nodes) still use the `VadDeployment`.
"""

from __future__ import annotations

import asyncio
import time

from voxray import metrics
from voxray.deployments.silero import SileroBatch
from voxray.media.messages import VadBatch, VadBatchResult


class InProcessVad:
    def __init__(self, model_path: str | None = None) -> None:
        self._model = SileroBatch(model_path)

    async def infer(self, batch: VadBatch) -> VadBatchResult:
        t0 = time.perf_counter()
        # Off the event loop (a batch of 256 streams takes ~10 ms); an ONNX Runtime session
        # may run in two threads at once, which is the most the VadBatcher sends.
        results = await asyncio.to_thread(self._model.run, batch.chunks)
        compute_ms = (time.perf_counter() - t0) * 1000
        metrics.observe("vad_batch", len(batch.chunks))
        metrics.observe("vad_ms", compute_ms)
        return VadBatchResult(results=results, compute_ms=compute_ms)
