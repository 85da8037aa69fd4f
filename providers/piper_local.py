"""Local TTS with a Piper voice (ONNX)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from voxray.providers.base import CallCredentials, ProviderError, TtsChunk, TtsProvider
from voxray.providers.model_paths import piper_voice_path

_DONE = object()


class PiperLocal(TtsProvider):
    name = "piper"

    def __init__(self, voice_path: str | None = None) -> None:
        self.voice_path = voice_path or piper_voice_path()
        self._voice = None

    def load(self) -> None:
        from piper import PiperVoice

        self._voice = PiperVoice.load(self.voice_path)

    async def synthesize(self, text: str, speed: float = 1.0, speaker: str | None = None,
                         creds: CallCredentials | None = None) -> AsyncIterator[TtsChunk]:
        if self._voice is None:
            raise ProviderError("piper voice not loaded")
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=1.0 / speed)
        chunks = iter(self._voice.synthesize(text, syn_config=config))
        # Piper synthesises sentence by sentence; pull each off the loop so the
        # first sentence is sent while the next one is computed.
        while True:
            chunk = await asyncio.to_thread(next, chunks, _DONE)
            if chunk is _DONE:
                return
            yield TtsChunk(pcm=chunk.audio_int16_bytes, sample_rate=chunk.sample_rate)
