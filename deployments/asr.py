"""ASR deployment: hosts the ASR providers and transcribes whole utterances.

Utterances for the local Whisper from many calls are batched (`AsrScheduler`): while
one model call runs, the next utterances queue and go together in the next one, turn
ends before partials, so throughput grows with load and a final never waits behind a
partial. Other providers are called per request.
"""

from __future__ import annotations

import asyncio
import time

import ray
from ray import serve
from ray.serve.config import RequestRouterConfig

from voxray import metrics
from voxray.deployments.asr_batch import (GATHER_S, MAX_BATCH, AsrScheduler, batch_provider, max_batch,
                                          transcribe_batch, transcribe_single)
from voxray.deployments.routing import FillFirstRouter
from voxray.media.messages import AsrRequest, AsrResult
from voxray.faults import enable_fault_dumps
from voxray.loop_watch import LoopWatch
from voxray.logs import bind_call, get_logger
from voxray.config import ModelsConfig
from voxray.providers.catalog import ProvidersConfig, build_asr
from voxray.providers.fallback import AsrChain

log = get_logger("voxray.asr")

FIFO_GATHER_S = 0.02  # what the first-come-first-served queue (Serve's own batching before) waited


def make_asr_chain(providers: ProvidersConfig, models: ModelsConfig | None = None,
                   gpu_ids: list | None = None) -> AsrChain:
    """gpu_ids: the GPUs Ray gave this replica (None outside Ray): without one, local models use no CUDA."""
    models = models or ModelsConfig()
    built = []
    for spec in providers.asr:
        if spec.kind == "whisper":
            # The models section fills in what a Whisper provider does not set itself.
            spec = spec.model_copy(update={
                "model_path": spec.model_path or models.whisper_model, "cpu_threads": models.whisper_threads,
                "workers": models.whisper_workers,
                "window_bucket_s": spec.window_bucket_s or models.whisper_bucket_s,
                "min_window_s": spec.min_window_s or models.whisper_min_window_s,
                "device": spec.device or models.whisper_device,
                "compute_type": spec.compute_type or models.whisper_compute_type,
            })
        p = build_asr(spec)
        if hasattr(p, "gpu_ids"):
            p.gpu_ids = gpu_ids
        p.load()
        built.append(p)
    return AsrChain(built, {s.name: s.timeout_s for s in providers.asr}, providers.retries)


def loaded_devices(chain) -> dict[str, dict]:
    """Where each local model of a chain runs (providers with a `describe()`), for the log."""
    return {name: p.describe() for name, p in chain.providers.items() if hasattr(p, "describe")}


# 0.25 CPU: two replicas (the standby) of each of ASR and TTS fit a 2-core node with the rest.
# Fill-first routing: one replica batches the utterances while the standby waits warm.
@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32,
                  request_router_config=RequestRouterConfig(request_router_class=FillFirstRouter,
                                                            request_router_kwargs={"fill": MAX_BATCH}))
class AsrDeployment:
    def __init__(self, providers: dict | None = None, models: dict | None = None) -> None:
        enable_fault_dumps()
        # The replica reports ready only once every model is in memory.
        settings = ModelsConfig.model_validate(models or {})
        gpu_ids = ray.get_gpu_ids()  # what num_gpus gave this replica
        self.chain = make_asr_chain(ProvidersConfig.model_validate(providers or {}), settings, gpu_ids)
        fifo = settings.whisper_queue == "fifo"
        self.scheduler = AsrScheduler(self._transcribe_many, max_batch(self.chain, settings),
                                      FIFO_GATHER_S if fifo else GATHER_S, prioritize=not fifo,
                                      concurrency=settings.whisper_workers,
                                      partial_max_load=settings.partial_max_load)
        self.loop_watch = LoopWatch("asr")
        log.info("asr providers loaded", extra={"providers": self.chain.names, "gpu_ids": gpu_ids,
                                                "max_batch": self.scheduler.max_batch,
                                                "devices": loaded_devices(self.chain)})

    async def transcribe(self, req: AsrRequest) -> AsrResult:
        self.loop_watch.ensure_started()
        with bind_call(req.call_id):
            if batch_provider(self.chain, req) is not None:
                result = await self.scheduler.submit(req)
                if result.skipped:
                    metrics.inc("asr_partials_skipped")
                    return result
            else:
                result = await transcribe_single(self.chain, req)
            log.info("transcribed", extra={"provider": result.provider, "audio_s": round(result.audio_s, 3),
                                           "compute_s": round(result.compute_s, 3),
                                           "queued_s": round(result.queued_s, 3), "partial": req.partial,
                                           "batch": result.batch_size})
        return result

    async def _transcribe_many(self, reqs: list[AsrRequest]) -> list[AsrResult]:
        # Requests may name different local Whisper providers: one model call per provider.
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault(id(batch_provider(self.chain, r)), []).append(i)
        t0 = time.perf_counter()
        done = await asyncio.gather(*(transcribe_batch(self.chain, [reqs[i] for i in idx])
                                      for idx in groups.values()))
        metrics.observe("asr_batch", len(reqs))
        metrics.observe("asr_batch_ms", (time.perf_counter() - t0) * 1000)
        out: list[AsrResult | None] = [None] * len(reqs)
        for idx, results in zip(groups.values(), done, strict=True):
            for i, res in zip(idx, results, strict=True):
                out[i] = res
        return out  # type: ignore[return-value]
