"""Deepgram's REST APIs: pre-recorded `/v1/listen` and `/v1/speak`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import numpy as np

from voxray.providers.base import AsrProvider, CallCredentials, ProviderError, Transcript, TtsChunk, TtsProvider
from voxray.providers.http_common import HttpProvider, stream_pcm

SPEAK_RATE = 16000


class DeepgramAsr(HttpProvider, AsrProvider):
    default_name, default_endpoint, default_model = "deepgram", "https://api.deepgram.com", "nova-2"

    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None,
                         creds: CallCredentials | None = None) -> Transcript:
        endpoint, key, model = self.resolve(creds)
        params = {"model": model or "nova-2", "encoding": "linear16", "sample_rate": "16000",
                  "channels": "1", "smart_format": "true"}
        if language:
            params["language"] = language
        t0 = time.perf_counter()
        resp = await self.client.post(
            f"{endpoint}/v1/listen", params=params, content=pcm16k.astype("<i2").tobytes(),
            headers={"Content-Type": "audio/raw", **({"Authorization": f"Token {key}"} if key else {})},
        )
        self.check(resp, f"{self.name} listen")
        try:
            alt = resp.json()["results"]["channels"][0]["alternatives"][0]
        except (KeyError, IndexError, ValueError) as exc:
            raise ProviderError(f"{self.name} listen: unexpected reply ({exc!r})") from None
        return Transcript(text=alt.get("transcript", ""), language=language,
                          audio_s=pcm16k.size / 16000, compute_s=time.perf_counter() - t0)


class DeepgramTts(HttpProvider, TtsProvider):
    default_name, default_endpoint, default_model = "deepgram", "https://api.deepgram.com", "aura-asteria-en"

    async def synthesize(self, text: str, speed: float = 1.0, speaker: str | None = None,
                         creds: CallCredentials | None = None) -> AsyncIterator[TtsChunk]:
        endpoint, key, model = self.resolve(creds)
        params = {"model": speaker or model or "aura-asteria-en", "encoding": "linear16",
                  "sample_rate": str(SPEAK_RATE), "container": "none"}
        async for chunk in stream_pcm(self.client, f"{self.name} speak", SPEAK_RATE, "POST",
                                      f"{endpoint}/v1/speak", params=params, json={"text": text},
                                      headers={"Authorization": f"Token {key}"} if key else {}):
            yield chunk
