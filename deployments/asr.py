"""ASR deployment: hosts the ASR providers and transcribes whole utterances."""

from __future__ import annotations

import numpy as np
from ray import serve

from voxray.deployments.messages import AsrRequest, AsrResult
from voxray.logs import bind_call, get_logger
from voxray.providers.catalog import ProvidersConfig, build_asr
from voxray.providers.fallback import AsrChain

log = get_logger("voxray.asr")


def make_asr_chain(providers: ProvidersConfig, default_model: str | None = None,
                   default_threads: int = 2) -> AsrChain:
    built = []
    for spec in providers.asr:
        if spec.kind == "whisper":
            spec = spec.model_copy(update={"model_path": spec.model_path or default_model,
                                           "cpu_threads": default_threads})
        p = build_asr(spec)
        p.load()
        built.append(p)
    return AsrChain(built, {s.name: s.timeout_s for s in providers.asr}, providers.retries)


async def transcribe_request(chain: AsrChain, req: AsrRequest) -> AsrResult:
    t, name, failures = await chain.transcribe(
        np.frombuffer(req.pcm, dtype="<i2"), req.language, req.provider, req.creds)
    return AsrResult(text=t.text, provider=name, language=t.language, audio_s=t.audio_s,
                     compute_s=t.compute_s, failures=failures)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class AsrDeployment:
    def __init__(self, providers: dict | None = None, whisper_model: str | None = None,
                 cpu_threads: int = 2) -> None:
        # The replica reports ready only once every model is in memory.
        self.chain = make_asr_chain(ProvidersConfig.model_validate(providers or {}), whisper_model, cpu_threads)
        log.info("asr providers loaded", extra={"providers": self.chain.names})

    async def transcribe(self, req: AsrRequest) -> AsrResult:
        with bind_call(req.call_id):
            result = await transcribe_request(self.chain, req)
            log.info("transcribed", extra={"provider": result.provider, "audio_s": round(result.audio_s, 3),
                                           "compute_s": round(result.compute_s, 3)})
        return result
