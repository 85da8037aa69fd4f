"""TTS deployment: hosts the TTS providers and streams audio back per sentence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
from ray import serve

from voxray.deployments.messages import TtsAudio, TtsRequest
from voxray.logs import bind_call, get_logger
from voxray.providers.base import ProviderError, TtsProvider
from voxray.providers.piper_local import PiperLocal
from voxray.ua_node.media.resample import resample

log = get_logger("voxray.tts")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class TtsDeployment:
    def __init__(self, default_provider: str = "piper", piper_voice: str | None = None) -> None:
        self._providers: dict[str, TtsProvider] = {"piper": PiperLocal(voice_path=piper_voice)}
        self._default = default_provider
        for p in self._providers.values():
            p.load()
        log.info("tts providers loaded", extra={"providers": list(self._providers)})

    async def synthesize(self, req: TtsRequest) -> AsyncIterator[TtsAudio]:
        """Streamed: call through a handle with `.options(stream=True)`."""
        name = req.provider or self._default
        provider = self._providers.get(name)
        if provider is None:
            raise ProviderError(f"unknown TTS provider '{name}' (have: {', '.join(self._providers)})")
        with bind_call(req.call_id):
            async for audio in synthesize_at_rate(provider, req):
                yield audio


async def synthesize_at_rate(provider: TtsProvider, req: TtsRequest) -> AsyncIterator[TtsAudio]:
    """Run a provider and convert its audio to the rate the call asked for."""
    async for chunk in provider.synthesize(req.text, speed=req.speed, speaker=req.speaker):
        pcm = np.frombuffer(chunk.pcm, dtype="<i2")
        if chunk.sample_rate != req.sample_rate:
            pcm = await asyncio.to_thread(resample, pcm, chunk.sample_rate, req.sample_rate)
        yield TtsAudio(pcm=pcm.astype("<i2").tobytes(), sample_rate=req.sample_rate, provider=provider.name)
