"""The media session with the real models in-process (no Ray): audio in -> events, tts -> frames."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.conftest import SENTENCE
from tests.test_models import wer
from voxray.deployments.services import LocalModelServices
from voxray.protocol import events as ev
from voxray.protocol.commands import Tts
from voxray.protocol.options import CallOption
from voxray.media.codecs import make_codec
from voxray.media.session import MediaSession


class Recorder:
    """The transport side of a session: what a caller and an agent would receive."""

    def __init__(self) -> None:
        self.events: list[ev.EventBase] = []
        self.frames: list[tuple[float, bytes]] = []
        self.hangups: list[tuple[str, str]] = []

    async def emit(self, event: ev.EventBase) -> None:
        self.events.append(event)

    async def send_audio(self, payload: bytes) -> None:
        self.frames.append((time.monotonic(), payload))

    async def request_hangup(self, reason: str, initiator: str) -> None:
        self.hangups.append((reason, initiator))

    def names(self) -> list[str]:
        return [e.event for e in self.events]

    async def wait(self, name: str, timeout: float = 20.0, count: int = 1) -> list[ev.EventBase]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if e.event == name]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {count}x '{name}' in {timeout}s: {self.names()}")


@pytest.fixture(scope="module")
def services() -> LocalModelServices:
    return LocalModelServices()


async def _session(services, codec="pcm", **opt):
    rec = Recorder()
    s = MediaSession("test-call", CallOption(codec=codec, **opt), services, rec)
    s.start()
    return s, rec


def _feed(session: MediaSession, pcm16k: np.ndarray, codec: str) -> None:
    from voxray.media.resample import resample

    c = make_codec(codec)
    pcm = resample(pcm16k, 16000, c.sample_rate)
    step = c.sample_rate // 50
    for i in range(0, pcm.size, step):
        session.feed(c.encode(pcm[i:i + step]))


@pytest.mark.parametrize("codec", ["pcm", "pcmu", "g722"])
async def test_speech_in_gives_speaking_silence_asr_final_eou(services, speech16k, codec):
    s, rec = await _session(services, codec)
    try:
        audio = np.concatenate([np.zeros(8000, np.int16), speech16k, np.zeros(16000, np.int16)])
        _feed(s, audio, codec)
        final = (await rec.wait("asrFinal"))[0]
        await rec.wait("eou")
        names = [n for n in rec.names() if n in ("speaking", "silence", "asrFinal", "eou")]
        assert names == ["speaking", "silence", "asrFinal", "eou"]
        assert wer(SENTENCE, final.text) <= 0.5, final.text
        assert final.index == 0 and final.start_time < final.end_time
        # Speech starts ~0.5 s in and lasts about as long as the sentence.
        assert abs((final.end_time - final.start_time) / 1000 - speech16k.size / 16000) < 0.8
        metrics = [e for e in rec.events if e.event == "metrics"]
        assert metrics and metrics[0].key == "ttfb.asr.whisper"
    finally:
        await s.close()


async def test_silence_and_noise_give_no_events(services):
    s, rec = await _session(services)
    try:
        rng = np.random.default_rng(7)
        _feed(s, (rng.normal(0, 200, 16000 * 3)).astype(np.int16), "pcm")
        await asyncio.sleep(1.0)
        assert [n for n in rec.names() if n in ("speaking", "asrFinal")] == []
    finally:
        await s.close()


async def test_tts_plays_paced_frames_between_track_events(services):
    s, rec = await _session(services, "pcmu")
    try:
        await s.tts(Tts(text="Hello there, this is a test.", play_id="p1"))
        end = (await rec.wait("trackEnd"))[0]
        start = (await rec.wait("trackStart"))[0]
        assert start.play_id == end.play_id == "p1"
        assert all(len(f) == 160 for _, f in rec.frames)  # 20 ms of mu-law
        pcm = make_codec("pcmu").decode(b"".join(f for _, f in rec.frames))
        assert np.abs(pcm).max() > 3000  # real speech, not silence
        seconds = len(rec.frames) * 0.02
        assert abs(end.duration / 1000 - seconds) < 0.05
        span = rec.frames[-1][0] - rec.frames[0][0]
        assert span > seconds * 0.9  # paced in real time, not dumped at once
        assert rec.names().index("trackStart") < rec.names().index("trackEnd")
    finally:
        await s.close()


async def test_new_play_id_interrupts_same_play_id_queues(services):
    s, rec = await _session(services)
    try:
        await s.tts(Tts(text="This is the first sentence and it is fairly long to speak.", play_id="a"))
        await s.tts(Tts(text="Queued behind.", play_id="a"))
        await rec.wait("trackStart")
        await asyncio.sleep(0.5)
        await s.tts(Tts(text="Interrupting now.", play_id="b"))
        interruption = (await rec.wait("interruption"))[0]
        assert interruption.play_id == "a"
        assert 300 <= interruption.current < interruption.total_duration
        ends = await rec.wait("trackEnd", count=2)
        assert [e.play_id for e in ends] == ["a", "b"]
        # The queued 'a' track never started: only one 'a' trackStart.
        assert [e.play_id for e in rec.events if e.event == "trackStart"] == ["a", "b"]
    finally:
        await s.close()


async def test_auto_hangup_after_track(services):
    s, rec = await _session(services)
    try:
        await s.tts(Tts(text="Goodbye.", auto_hangup=True))
        await rec.wait("trackEnd")
        for _ in range(100):
            if rec.hangups:
                break
            await asyncio.sleep(0.01)
        assert rec.hangups == [("autohangup", "server")]
    finally:
        await s.close()
