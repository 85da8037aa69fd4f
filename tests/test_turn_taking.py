"""When a turn ends, with real speech in real time through the real models (no Ray).

A finished sentence ends its turn after a short silence, from its speculative
transcript; a pause mid-sentence does not end the turn; speech after a pause drops
that pause's speculation; and the final's audio is decoded once, never twice.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.test_media_session import Recorder
from tests.test_models import wer
from voxray.deployments.services import LocalModelServices
from voxray.media.config import MediaConfig
from voxray.media.session import MediaSession
from voxray.protocol.options import CallOption
from voxray.speech import piper_speech

pytestmark = pytest.mark.timeout(120)
RATE = 16000
FRAME = 320  # 20 ms


class CountingServices:
    """The real models, counting the audio each transcription was asked for."""

    def __init__(self, real: LocalModelServices) -> None:
        self.real = real
        self.asked: list[tuple[int, bool]] = []  # (samples, partial)

    async def vad(self, chunk):
        return await self.real.vad(chunk)

    async def transcribe(self, req):
        self.asked.append((len(req.pcm) // 2, req.partial))
        return await self.real.transcribe(req)

    def synthesize(self, req):
        return self.real.synthesize(req)


@pytest.fixture(scope="module")
def real() -> LocalModelServices:
    return LocalModelServices()


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, np.int16)


async def speak(session: MediaSession, pcm: np.ndarray) -> None:
    """Frames at the caller's pace: 20 ms of audio every 20 ms."""
    start = time.monotonic()
    for n, i in enumerate(range(0, pcm.size, FRAME)):
        session.feed(pcm[i:i + FRAME].astype("<i2").tobytes())
        await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))


async def call(real, pcm: np.ndarray, config: MediaConfig | None = None, **opt):
    services = CountingServices(real)
    rec = Recorder()
    session = MediaSession("turn-call", CallOption(codec="pcm", **opt), services, rec, config or MediaConfig())
    session.start()
    try:
        await speak(session, pcm)
        await asyncio.sleep(0.3)
    finally:
        await session.close()
    return rec, services


def finals(rec: Recorder):
    return [e for e in rec.events if e.event == "asrFinal"]


def eous(rec: Recorder):
    return [e for e in rec.events if e.event == "eou"]


async def test_a_finished_sentence_ends_its_turn_after_a_short_silence(real):
    said = "I want to cancel my subscription."
    rec, services = await call(real, np.concatenate([silence(300), piper_speech(said), silence(1500)]))
    (final,), (eou,) = finals(rec), eous(rec)
    assert wer(said, final.text) <= 0.2, final.text
    assert eou.reason == "complete" and eou.completed
    assert eou.silence_ms < 480, eou.silence_ms  # the fixed wait would have been 480 ms
    # The final's audio was decoded once: the speculation's decode is the final.
    full = [n for n, partial in services.asked if not partial]
    assert len(full) == 1, services.asked


async def test_a_pause_mid_sentence_does_not_end_the_turn(real):
    first, second = "I would like to", "book a table for two people."
    audio = np.concatenate([silence(300), piper_speech(first), silence(700), piper_speech(second), silence(2000)])
    rec, _ = await call(real, audio)
    assert len(finals(rec)) == 1, [f.text for f in finals(rec)]
    assert wer(f"{first} {second}", finals(rec)[0].text) <= 0.25, finals(rec)[0].text
    # The pause's transcript was heard as unfinished, and the caller went on.
    deltas = [e.text for e in rec.events if e.event == "asrDelta"]
    assert any(wer(first, d) <= 0.25 for d in deltas), deltas
    assert eous(rec)[0].reason == "complete"


async def test_the_same_pause_ends_the_turn_with_a_fixed_wait(real):
    """The old behaviour (eou type "silence") cuts the caller at the 700 ms pause: the test above can fail."""
    audio = np.concatenate([silence(300), piper_speech("I would like to"), silence(700),
                            piper_speech("book a table for two people."), silence(1500)])
    rec, _ = await call(real, audio, eou={"type": "silence"})
    assert len(finals(rec)) == 2, [f.text for f in finals(rec)]
    assert [e.reason for e in eous(rec)] == ["silence", "silence"]


async def test_speech_after_a_pause_drops_its_speculation(real):
    first, second = "Hello there", "I need help with my account."
    audio = np.concatenate([silence(300), piper_speech(first), silence(300), piper_speech(second), silence(1500)])
    # Every pause may last 800 ms here: the 300 ms gap (about 480 ms below Silero's threshold,
    # with Piper's fading tail and the next word's onset) is never a turn's end.
    rec, services = await call(real, audio, eou={"completeMs": 800}, vad={"silencePadding": 800})
    (final,) = finals(rec)
    assert wer(f"{first} {second}", final.text) <= 0.3, final.text
    full = [n for n, partial in services.asked if not partial]
    # One speculation for the 300 ms pause (dropped: the caller went on), one for the end (the final).
    assert len(full) == 2 and full[0] < full[1], services.asked
    # The dropped one never became a final, and the final took the last speculation as it was.
    assert final.index == 0 and len(eous(rec)) == 1


async def test_a_greeting_the_caller_goes_on_from_is_not_a_turn(real):
    """Whisper writes "Hello?" for a "Hello," the caller goes on from: a word or two never ends a turn early."""
    from voxray.speech import espeak_speech

    rest = "I need help with my account."
    audio = np.concatenate([silence(300), espeak_speech("Hello,"), silence(350), espeak_speech(rest), silence(1500)])
    rec, _ = await call(real, audio)
    assert len(finals(rec)) == 1, [f.text for f in finals(rec)]
    assert wer(f"Hello, {rest}", finals(rec)[0].text) <= 0.3, finals(rec)[0].text
