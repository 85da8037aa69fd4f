"""Ways for a media session to reach the models.

`ServeModelServices` goes through Serve handles (production). `LocalModelServices`
loads the same real models in-process; tests of the media core and the bench's
side-by-side runs use it to leave Ray out of the measurement.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from voxray.deployments.messages import (
    AsrRequest, AsrResult, TtsAudio, TtsRequest, VadBatch, VadBatchResult, VadChunk, VadChunkResult,
)
from voxray.deployments.vad_batcher import VadBatcher
from voxray.providers.catalog import ProvidersConfig


class ServeModelServices:
    def __init__(self, vad_handle, asr_handle, tts_handle) -> None:
        self._asr = asr_handle
        self._tts = tts_handle
        self.vad_batcher = VadBatcher(lambda batch: vad_handle.infer.remote(batch))

    async def vad(self, chunk: VadChunk) -> VadChunkResult:
        return await self.vad_batcher.submit(chunk)

    async def transcribe(self, req: AsrRequest) -> AsrResult:
        return await self._asr.transcribe.remote(req)

    async def synthesize(self, req: TtsRequest) -> AsyncIterator[TtsAudio]:
        async for audio in self._tts.options(stream=True).synthesize.remote(req):
            yield audio


class LocalModelServices:
    """The real models (and any configured cloud providers) in this process, no Ray."""

    def __init__(self, providers: ProvidersConfig | None = None) -> None:
        from voxray.deployments.asr import make_asr_chain
        from voxray.deployments.silero import SileroBatch
        from voxray.deployments.tts import make_tts_chain

        providers = providers or ProvidersConfig()
        self._silero = SileroBatch()
        self.asr_chain = make_asr_chain(providers)
        self.tts_chain = make_tts_chain(providers)

        async def infer(batch: VadBatch) -> VadBatchResult:
            return VadBatchResult(results=await asyncio.to_thread(self._silero.run, batch.chunks))

        self.vad_batcher = VadBatcher(infer)

    async def vad(self, chunk: VadChunk) -> VadChunkResult:
        return await self.vad_batcher.submit(chunk)

    async def transcribe(self, req: AsrRequest) -> AsrResult:
        from voxray.deployments.asr import transcribe_request

        return await transcribe_request(self.asr_chain, req)

    async def synthesize(self, req: TtsRequest) -> AsyncIterator[TtsAudio]:
        from voxray.deployments.tts import synthesize_at_rate

        async for audio in synthesize_at_rate(self.tts_chain, req):
            yield audio
