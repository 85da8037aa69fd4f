"""OpenAI-compatible speech APIs (`/v1/audio/transcriptions`, `/v1/audio/speech`).

Many servers speak this wire format (OpenAI itself, vLLM, LocalAI, speaches), so
one provider covers them; the endpoint is configurable.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import numpy as np

from voxray.providers.base import AsrProvider, CallCredentials, Transcript, TtsChunk, TtsProvider
from voxray.providers.http_common import HttpProvider, stream_pcm, wav_bytes

OPENAI_PCM_RATE = 24000  # `response_format: pcm` is 24 kHz 16-bit mono


class OpenAiAsr(HttpProvider, AsrProvider):
    default_name, default_endpoint, default_model = "openai", "https://api.openai.com", "whisper-1"

    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None,
                         creds: CallCredentials | None = None) -> Transcript:
        endpoint, key, model = self.resolve(creds)
        data = {"model": model or "whisper-1", "response_format": "json"}
        if language:
            data["language"] = language
        t0 = time.perf_counter()
        resp = await self.client.post(
            f"{endpoint}/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {key}"} if key else {},
            data=data, files={"file": ("audio.wav", wav_bytes(pcm16k), "audio/wav")},
        )
        self.check(resp, f"{self.name} transcription")
        return Transcript(text=resp.json().get("text", ""), language=language,
                          audio_s=pcm16k.size / 16000, compute_s=time.perf_counter() - t0)


class OpenAiTts(HttpProvider, TtsProvider):
    default_name, default_endpoint, default_model = "openai", "https://api.openai.com", "tts-1"

    def __init__(self, voice: str = "alloy", **kw) -> None:
        super().__init__(**kw)
        self.voice = voice

    async def synthesize(self, text: str, speed: float = 1.0, speaker: str | None = None,
                         creds: CallCredentials | None = None) -> AsyncIterator[TtsChunk]:
        endpoint, key, model = self.resolve(creds)
        body = {"model": model or "tts-1", "input": text, "voice": speaker or self.voice,
                "response_format": "pcm", "speed": speed}
        async for chunk in stream_pcm(self.client, f"{self.name} speech", OPENAI_PCM_RATE, "POST",
                                      f"{endpoint}/v1/audio/speech", json=body,
                                      headers={"Authorization": f"Bearer {key}"} if key else {}):
            yield chunk
