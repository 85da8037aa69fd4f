"""ASR deployment: hosts the ASR providers and transcribes whole utterances."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from voxray.deployments.messages import AsrRequest, AsrResult
from voxray.logs import bind_call, get_logger
from voxray.providers.base import AsrProvider, ProviderError
from voxray.providers.whisper_local import WhisperLocal

log = get_logger("voxray.asr")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class AsrDeployment:
    def __init__(self, default_provider: str = "whisper", whisper_model: str | None = None,
                 cpu_threads: int = 2) -> None:
        self._providers: dict[str, AsrProvider] = {
            "whisper": WhisperLocal(model_path=whisper_model, cpu_threads=cpu_threads),
        }
        self._default = default_provider
        # The replica reports ready only once every model is in memory.
        for p in self._providers.values():
            p.load()
        log.info("asr providers loaded", extra={"providers": list(self._providers)})

    async def transcribe(self, req: AsrRequest) -> AsrResult:
        name = req.provider or self._default
        provider = self._providers.get(name)
        if provider is None:
            raise ProviderError(f"unknown ASR provider '{name}' (have: {', '.join(self._providers)})")
        with bind_call(req.call_id):
            result = await transcribe_request(provider, req)
            log.info("transcribed", extra={"provider": name, "audio_s": round(result.audio_s, 3),
                                           "compute_s": round(result.compute_s, 3)})
        return result


async def transcribe_request(provider: AsrProvider, req: AsrRequest) -> AsrResult:
    t = await provider.transcribe(np.frombuffer(req.pcm, dtype="<i2"), req.language)
    return AsrResult(text=t.text, provider=provider.name, language=t.language,
                     audio_s=t.audio_s, compute_s=t.compute_s)
