"""Echo cancellation on a real /call call: the caller's line carries our own TTS back
(delayed, attenuated, reverberated), with and without the caller speaking over it.

The test's "phone" loops every audio frame the server sends back into the caller's
audio `DELAY_MS` later, through a room impulse response, as a speakerphone or a bad
trunk would. Real Piper speech out, real Silero and Whisper on what comes back."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.conftest import SENTENCE
from tests.test_models import wer
from tests.wsclient import CallClient

pytestmark = pytest.mark.e2e

DELAY_MS = 120
REPLY = ("Thank you for calling the city library. Our opening hours are nine to five on weekdays, "
         "and ten to two on Saturdays. You can renew books online or by phone at any time.")


def room_response(rate: int = 16000, gain_db: float = -6.0, seed: int = 7) -> np.ndarray:
    """A direct path plus 150 ms of decaying reflections, scaled to `gain_db`."""
    rng = np.random.default_rng(seed)
    n = int(0.15 * rate)
    tail = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.03 * rate)) * 0.25
    ir = np.concatenate(([1.0], tail))
    return ir / np.sqrt(np.sum(ir ** 2)) * 10 ** (gain_db / 20)


class EchoingPhone:
    """Sends the caller's line every 20 ms: our audio back DELAY_MS later, plus speech.

    The echo path is fixed in the line's own time, as a handset's or a trunk's is: the
    agent's m-th frame comes back in the phone's frame `base + m`, `base` set by the
    first one heard (its arrival plus DELAY_MS). Taking each frame's arrival time instead
    would make this test process's scheduling jitter part of the echo path."""

    def __init__(self, client: CallClient, speech: np.ndarray | None = None, speech_at_s: float = 0.0) -> None:
        self.client = client
        self.ir = room_response()
        self.tail = np.zeros(self.ir.size - 1)
        self.speech = speech
        self.speech_at_s = speech_at_s
        self.speech_started: float | None = None
        self.index = 0  # the phone's frames sent so far
        self.base: int | None = None
        self.rng = np.random.default_rng(3)

    def _echo(self) -> np.ndarray:
        if self.base is None and self.client.audio:
            self.base = self.index + DELAY_MS // 20
        x = np.zeros(320)
        if self.base is not None and 0 <= self.index - self.base < len(self.client.audio):
            x = np.frombuffer(self.client.audio[self.index - self.base][1], dtype="<i2").astype(np.float64)
        y = np.convolve(x, self.ir)
        y[: self.tail.size] += self.tail
        self.tail = y[320:].copy()
        return y[:320]

    async def run(self, track_started: asyncio.Event) -> None:
        t0 = time.monotonic()
        pos = 0
        while True:
            now = time.monotonic()
            frame = self._echo() + self.rng.normal(0, 15, 320)  # a quiet line's noise floor
            if self.speech is not None and track_started.is_set():
                if self.speech_started is None and now - track_started.at >= self.speech_at_s:
                    self.speech_started = now
                if self.speech_started is not None and pos < self.speech.size:
                    chunk = self.speech[pos:pos + 320].astype(np.float64)
                    frame[: chunk.size] += chunk
                    pos += 320
            await self.client.ws.send(np.clip(np.rint(frame), -32768, 32767).astype("<i2").tobytes())
            self.index += 1
            await asyncio.sleep(max(0.0, t0 + self.index * 0.02 - time.monotonic()))


async def _call(server: str, **option) -> CallClient:
    client = await CallClient.connect(f"ws://{server}/call")
    await client.send({"command": "invite", "option": {"codec": "pcm", "caller": "speakerphone", **option}})
    await client.wait_for("answer", timeout=15)
    return client


async def _speak_with_echo(server: str, speech: np.ndarray | None = None, **option) -> tuple[CallClient, EchoingPhone]:
    client = await _call(server, **option)
    phone = EchoingPhone(client, speech, speech_at_s=2.0)
    started = asyncio.Event()
    loop = asyncio.create_task(phone.run(started))
    try:
        n = len(client.events)
        await client.send({"command": "tts", "text": REPLY, "playId": "reply"})
        await client.wait_for("trackStart", timeout=30, after=n, playId="reply")
        started.at = time.monotonic()
        started.set()
        await client.wait_for("trackEnd", timeout=60, after=n, playId="reply")
        await asyncio.sleep(2.0 if speech is None else 0.0)  # echo tail, then anything it caused
        if speech is not None:
            await client.wait_for("asrFinal", timeout=30, after=n)
    finally:
        loop.cancel()
    return client, phone


async def test_our_own_echo_neither_barges_in_nor_is_transcribed(voxray_server):
    client, _ = await _speak_with_echo(voxray_server, echoCancel=True)
    try:
        heard = [n for n in client.names() if n in ("interruption", "asrFinal", "asrDelta")]
        assert heard == [], f"the agent heard itself: {heard}"
        end = next(e for e in client.events if e["event"] == "trackEnd")
        assert end["duration"] > 8000  # the whole reply played
    finally:
        await client.close()


async def test_without_the_canceller_the_echo_cuts_the_agent_off(voxray_server):
    """The control: the same line with echoCancel off (the default: the VAD margin only)."""
    client, _ = await _speak_with_echo(voxray_server)
    try:
        # The margin lets the echo through: it cuts the agent off (what happens on a quiet
        # machine) or, at the least, is transcribed as if the caller had said it.
        heard = [n for n in client.names() if n in ("interruption", "asrFinal", "asrDelta")]
        assert heard, client.names()
    finally:
        await client.close()


async def test_the_caller_speaking_over_the_echo_barges_in_and_is_heard(voxray_server, speech16k):
    client, phone = await _speak_with_echo(voxray_server, speech16k, echoCancel=True)
    try:
        cut = next(e for e in client.events if e["event"] == "interruption")
        assert phone.speech_started is not None
        assert 0 < client.arrival(cut) - phone.speech_started < 1.5, "barge-in came too late (or before the caller)"
        final = next(e for e in client.events if e["event"] == "asrFinal")
        # The canceller's double-talk suppression can clip the first word ("Hello").
        assert wer(SENTENCE, final["text"]) <= 0.45, final["text"]
    finally:
        await client.close()
