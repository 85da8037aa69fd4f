"""The real models (and any configured cloud providers) in this process, without Ray.

Tests of the media core and the bench's side-by-side runs use it to leave Ray out of
the measurement; production sessions reach the models through
`voxray.media.services.ServeModelServices`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from voxray.media.messages import (
    AsrRequest, AsrResult, TtsAudio, TtsRequest, VadChunk, VadChunkResult,
)
from voxray.media.vad_batcher import VadBatcher
from voxray.providers.catalog import ProvidersConfig


class LocalModelServices:
    """The real models (and any configured cloud providers) in this process, no Ray."""

    def __init__(self, providers: ProvidersConfig | None = None) -> None:
        from voxray.deployments.asr import make_asr_chain
        from voxray.providers.silero_vad import InProcessVad
        from voxray.deployments.tts import make_tts_chain

        providers = providers or ProvidersConfig()
        self.asr_chain = make_asr_chain(providers)
        self.tts_chain = make_tts_chain(providers)
        self.vad_batcher = VadBatcher(InProcessVad().infer)

    async def vad(self, chunk: VadChunk) -> VadChunkResult:
        return await self.vad_batcher.submit(chunk)

    async def transcribe(self, req: AsrRequest) -> AsrResult:
        from voxray.deployments.asr_batch import transcribe_single

        return await transcribe_single(self.asr_chain, req)

    async def synthesize(self, req: TtsRequest) -> AsyncIterator[TtsAudio]:
        from voxray.deployments.tts import synthesize_at_rate

        async for audio in synthesize_at_rate(self.tts_chain, req):
            yield audio
