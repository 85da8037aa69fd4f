"""Silero VAD run over many streams at once, with each stream's state carried in.

`SileroBatch` steps the model window by window; at each step every stream that still
has a window goes into one batched ONNX call, so N concurrent calls cost about one call
of batch N rather than N calls.

`InProcessVad` runs those batches off the event loop of the process that holds the
calls' audio: the VadDeployment's replicas, the ingress for `/call` sessions, and each
UA worker for its SIP and WebRTC calls (`[media] vad_in_process`). Silero costs about
2 ms of CPU per second of audio batched over calls (bench/run.py's VAD table); a Serve
handle call costs the caller, Serve's router thread and the VAD replica more than the
model's own work (bench/media_plane.py, bench/sip_media.py).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from voxray import metrics
from voxray.media.messages import VadBatch, VadBatchResult, VadChunk, VadChunkResult
from voxray.providers.model_paths import silero_vad_path

WINDOW = 512
CONTEXT = 64
SR = np.array(16000, dtype=np.int64)


class SileroBatch:
    def __init__(self, model_path: str | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            model_path or silero_vad_path(), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def run(self, chunks: list[VadChunk]) -> list[VadChunkResult]:
        n = len(chunks)
        if n == 0:
            return []
        audio = []
        for c in chunks:
            if len(c.pcm) % (WINDOW * 2):
                raise ValueError(f"stream {c.key}: pcm must be whole {WINDOW}-sample windows")
            audio.append(np.frombuffer(c.pcm, dtype="<i2").astype(np.float32) / 32768.0)
        state = np.zeros((2, n, 128), dtype=np.float32)
        context = np.zeros((n, CONTEXT), dtype=np.float32)
        for i, c in enumerate(chunks):
            if c.state is not None:
                state[:, i, :] = np.frombuffer(c.state, dtype=np.float32).reshape(2, 128)
            if c.context is not None:
                context[i] = np.frombuffer(c.context, dtype=np.float32)
        steps = [a.size // WINDOW for a in audio]
        probs: list[list[float]] = [[] for _ in range(n)]
        for step in range(max(steps)):
            live = [i for i in range(n) if steps[i] > step]
            x = np.stack([audio[i][step * WINDOW:(step + 1) * WINDOW] for i in live])
            x = np.concatenate((context[live], x), axis=1)
            out, new_state = self._session.run(
                None, {"input": x, "state": state[:, live, :], "sr": SR}
            )
            state[:, live, :] = new_state
            context[live] = x[:, -CONTEXT:]
            for j, i in enumerate(live):
                probs[i].append(float(out[j, 0]))
        return [
            VadChunkResult(
                key=c.key, probs=probs[i],
                state=np.ascontiguousarray(state[:, i, :]).tobytes(),
                context=context[i].tobytes(),
            )
            for i, c in enumerate(chunks)
        ]


class InProcessVad:
    # Batches leave up to 50 times a second per process; a Ray metric call costs tens of
    # microseconds, so one batch in METRIC_EVERY is recorded (the histograms keep their shape).
    METRIC_EVERY = 8

    def __init__(self, model_path: str | None = None) -> None:
        self._model = SileroBatch(model_path)
        self._batches = 0

    async def infer(self, batch: VadBatch) -> VadBatchResult:
        t0 = time.perf_counter()
        # Off the event loop (a batch of 256 streams takes ~10 ms); an ONNX Runtime session
        # may run in two threads at once, which is the most the VadBatcher sends.
        results = await asyncio.to_thread(self._model.run, batch.chunks)
        compute_ms = (time.perf_counter() - t0) * 1000
        self._batches += 1
        if self._batches % self.METRIC_EVERY == 1:
            metrics.observe("vad_batch", len(batch.chunks))
            metrics.observe("vad_ms", compute_ms)
        return VadBatchResult(results=results, compute_ms=compute_ms)
