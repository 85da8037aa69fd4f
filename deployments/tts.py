"""TTS deployment: hosts the TTS providers and streams audio back per sentence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
from ray import serve

from voxray.media.messages import TtsAudio, TtsRequest
from voxray.faults import enable_fault_dumps
from voxray.logs import bind_call, get_logger
from voxray.providers.catalog import ProvidersConfig, build_tts
from voxray.providers.fallback import TtsChain
from voxray.media.resample import resample

log = get_logger("voxray.tts")


def make_tts_chain(providers: ProvidersConfig, default_voice: str | None = None) -> TtsChain:
    built = []
    for spec in providers.tts:
        if spec.kind == "piper":
            spec = spec.model_copy(update={"model_path": spec.model_path or default_voice})
        p = build_tts(spec)
        p.load()
        built.append(p)
    return TtsChain(built, {s.name: s.timeout_s for s in providers.tts}, providers.retries)


async def synthesize_at_rate(chain: TtsChain, req: TtsRequest) -> AsyncIterator[TtsAudio]:
    """Run the chain and convert its audio to the rate the call asked for."""
    failures: list[str] = []
    first = True
    async for name, chunk in chain.synthesize(req.text, req.speed, req.speaker, req.provider, req.creds, failures):
        pcm = np.frombuffer(chunk.pcm, dtype="<i2")
        if chunk.sample_rate != req.sample_rate:
            pcm = await asyncio.to_thread(resample, pcm, chunk.sample_rate, req.sample_rate)
        yield TtsAudio(pcm=pcm.astype("<i2").tobytes(), sample_rate=req.sample_rate, provider=name,
                       failures=failures if first else [])
        first = False


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class TtsDeployment:
    def __init__(self, providers: dict | None = None, piper_voice: str | None = None) -> None:
        enable_fault_dumps()
        self.chain = make_tts_chain(ProvidersConfig.model_validate(providers or {}), piper_voice)
        log.info("tts providers loaded", extra={"providers": self.chain.names})

    async def synthesize(self, req: TtsRequest) -> AsyncIterator[TtsAudio]:
        """Streamed: call through a handle with `.options(stream=True)`."""
        with bind_call(req.call_id):
            async for audio in synthesize_at_rate(self.chain, req):
                yield audio
