"""A `ModelServices` that answers at once, for tests of the media core's own logic.

The real models are tested on real speech elsewhere (test_models, test_media_session,
test_conversation); here the listener's and speaker's rules are checked in
milliseconds. Caller "speech" is a loud tone, silence is zeros: the fake VAD says
1.0 for a window whose RMS is over 1000, else 0.0. The fake ASR names the length of
what it heard ("tone 600 ms"), the fake TTS speaks 10 ms of tone per character.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np

from voxray.media.messages import AsrRequest, AsrResult, TtsAudio, TtsRequest, VadChunk, VadChunkResult
from voxray.media.vad_segmenter import WINDOW
from voxray.protocol import events as ev

RATE = 16000
FRAME = 320  # 20 ms at 16 kHz


def tone(ms: int, rate: int = RATE, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def silence(ms: int, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(rate * ms / 1000), np.int16)


class FakeModels:
    def __init__(self) -> None:
        self.asr_requests: list[AsrRequest] = []
        self.tts_requests: list[TtsRequest] = []
        self.asr_delay_s: list[float] = []  # per request, in order (then none)
        self.fail_vad = 0  # the next n VAD calls fail
        self.fail_tts = False
        self.tts_chunk_gap_s = 0.0  # between a synthesis's two chunks (a model that streams)

    async def vad(self, chunk: VadChunk) -> VadChunkResult:
        if self.fail_vad:
            self.fail_vad -= 1
            raise RuntimeError("vad replica gone")
        pcm = np.frombuffer(chunk.pcm, dtype="<i2").astype(np.float32)
        probs = [1.0 if np.sqrt(np.mean(pcm[i:i + WINDOW] ** 2)) > 1000 else 0.0
                 for i in range(0, pcm.size, WINDOW)]
        return VadChunkResult(key=chunk.key, probs=probs, state=b"s", context=b"c")

    async def transcribe(self, req: AsrRequest) -> AsrResult:
        self.asr_requests.append(req)
        if self.asr_delay_s:
            await asyncio.sleep(self.asr_delay_s.pop(0))
        pcm = np.frombuffer(req.pcm, dtype="<i2").astype(np.float32)
        loud = sum(1 for i in range(0, pcm.size, WINDOW) if np.sqrt(np.mean(pcm[i:i + WINDOW] ** 2)) > 1000)
        return AsrResult(text=f"tone {round(loud * WINDOW / RATE * 1000, -2):.0f} ms", provider="fake",
                         audio_s=pcm.size / RATE)

    async def synthesize(self, req: TtsRequest) -> AsyncIterator[TtsAudio]:
        self.tts_requests.append(req)
        if self.fail_tts:
            raise RuntimeError("tts provider down")
        pcm = tone(10 * len(req.text), req.sample_rate)
        half = pcm.size // 2
        for i, part in enumerate((pcm[:half], pcm[half:])):  # two chunks, as a streaming model sends them
            if i and self.tts_chunk_gap_s:
                await asyncio.sleep(self.tts_chunk_gap_s)
            yield TtsAudio(pcm=part.astype("<i2").tobytes(), sample_rate=req.sample_rate, provider="fake")


class Sink:
    """What the agent and the caller receive from a session half."""

    def __init__(self) -> None:
        self.events: list[ev.EventBase] = []
        self.frames: list[bytes] = []
        self.hangups: list[tuple[str, str]] = []
        self.cleared = 0

    async def emit(self, event: ev.EventBase) -> None:
        self.events.append(event)

    async def send_audio(self, payload: bytes) -> None:
        self.frames.append(payload)

    async def request_hangup(self, reason: str, initiator: str) -> None:
        self.hangups.append((reason, initiator))

    def clear_audio(self) -> None:
        self.cleared += 1

    def names(self) -> list[str]:
        return [e.event for e in self.events]

    def of(self, name: str) -> list[ev.EventBase]:
        return [e for e in self.events if e.event == name]

    async def wait(self, name: str, count: int = 1, timeout: float = 5.0) -> list[ev.EventBase]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.of(name)) >= count:
                return self.of(name)
            await asyncio.sleep(0.005)
        raise AssertionError(f"no {count}x '{name}' in {timeout}s: {self.names()}")
