"""Conversation features on the media session, with the real models in-process."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import threading
import time

import numpy as np
import pytest

from tests.conftest import SENTENCE
from tests.test_media_session import Recorder, _feed
from tests.test_models import wer
from voxray.deployments.services import LocalModelServices
from voxray.protocol.commands import Play, Tts
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import BargeInOption, CallOption, TranscriptionOption
from voxray.speech import espeak_speech, write_wav
from voxray.media.config import MediaConfig
from voxray.media.session import MediaSession

LONG_TEXT = ("Thank you for calling. Our opening hours are from nine in the morning until six in the "
             "evening, Monday to Friday, and from ten until four on Saturdays.")


@pytest.fixture(scope="module")
def services() -> LocalModelServices:
    return LocalModelServices()


@pytest.fixture
async def make_session(services):
    sessions = []

    async def make(config: MediaConfig | None = None, **opt):
        rec = Recorder()
        s = MediaSession("conv-call", CallOption(**opt), services, rec, config)
        s.start()
        sessions.append(s)
        return s, rec

    yield make
    for s in sessions:
        await s.close()


async def test_streaming_tts_speaks_before_the_stream_ends(make_session):
    s, rec = await make_session()
    tokens = "Sure, I can help with that, let me look at the calendar. Tuesday at ten works well.".split(" ")
    t0 = time.monotonic()
    first_audio = None
    for i, token in enumerate(tokens):
        await s.tts(Tts(text=token + " ", streaming=True, play_id="llm"))
        await asyncio.sleep(0.12)  # an LLM writing ~8 tokens/s
        if first_audio is None and rec.frames:
            first_audio = rec.frames[0][0] - t0
    await s.tts(Tts(text="", streaming=True, end_of_stream=True, play_id="llm"))
    stream_done = time.monotonic() - t0
    end = (await rec.wait("trackEnd", timeout=30))[0]
    assert first_audio is not None and first_audio < stream_done, "no audio before endOfStream"
    metric = next(e for e in rec.events if e.event == "metrics" and e.key.startswith("ttfb.tts"))
    assert metric.data["streaming"] is True and metric.duration < 2000
    assert [e.play_id for e in rec.events if e.event == "trackStart"] == ["llm"]
    assert end.play_id == "llm" and end.duration > 3000  # every piece was spoken, on one track


async def test_barge_in_cuts_playback_and_reports_position(make_session, speech16k):
    s, rec = await make_session(barge_in=BargeInOption(min_speech_ms=160, ignore_ms=300))
    await s.tts(Tts(text=LONG_TEXT, play_id="long"))
    await rec.wait("trackStart")
    # The caller keeps quiet a moment, then talks over the agent (in real time).
    silence = np.zeros(16000, np.int16)
    audio = np.concatenate([silence, speech16k, silence])
    cut_time = None
    for i in range(0, audio.size, 320):
        s.feed(audio[i:i + 320].tobytes())
        await asyncio.sleep(0.02)
        if cut_time is None and "interruption" in rec.names():
            cut_time = time.monotonic()
    cut = (await rec.wait("interruption", timeout=5))[0]
    assert cut_time is not None
    assert cut.play_id == "long" and cut.subtitle == LONG_TEXT
    assert 800 <= cut.current < cut.total_duration
    assert 0 < cut.position < len(LONG_TEXT.split())
    end = (await rec.wait("trackEnd"))[0]
    assert end.play_id == "long" and end.duration == cut.current
    late = [t for t, _ in rec.frames if t > cut_time + 0.03]
    assert late == [], f"{len(late)} frames sent after the interruption"
    # The caller's words are still transcribed.
    final = (await rec.wait("asrFinal", timeout=20))[0]
    assert wer(SENTENCE, final.text) <= 0.5


async def test_no_barge_in_on_noise_or_inside_ignore_window(make_session, speech16k):
    s, rec = await make_session(barge_in=BargeInOption(min_speech_ms=160, ignore_ms=10_000))
    await s.tts(Tts(text=LONG_TEXT, play_id="long"))
    await rec.wait("trackStart")
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 2000, 16000).astype(np.int16)
    for chunk in (noise, speech16k):  # noise never counts; speech is inside the ignore window
        for i in range(0, chunk.size, 320):
            s.feed(chunk[i:i + 320].tobytes())
        await asyncio.sleep(chunk.size / 16000)
    assert "interruption" not in rec.names()
    await s.interrupt()


async def test_barge_in_can_be_turned_off(make_session, speech16k):
    s, rec = await make_session(barge_in=BargeInOption(enabled=False))
    await s.tts(Tts(text=LONG_TEXT, play_id="long"))
    await rec.wait("trackStart")
    _feed(s, np.concatenate([speech16k, np.zeros(16000, np.int16)]), "pcm")
    await rec.wait("asrFinal", timeout=20)
    assert "interruption" not in rec.names()


async def test_asr_delta_partials_precede_the_final(make_session):
    s, rec = await make_session(asr=TranscriptionOption(partial_interval_ms=500))
    speech = espeak_speech("Hello, I need help with my account. I cannot log in since yesterday evening.")
    audio = np.concatenate([np.zeros(4000, np.int16), speech, np.zeros(16000, np.int16)])
    for i in range(0, audio.size, 1600):  # 100 ms at a time, in real time
        s.feed(audio[i:i + 1600].tobytes())
        await asyncio.sleep(0.1)
    final = (await rec.wait("asrFinal", timeout=20))[0]
    # The pause after the first sentence may end its turn: the second is a turn of its own.
    deltas = [e for e in rec.events if e.event == "asrDelta" and e.index == final.index]
    assert deltas, rec.names()
    assert all(rec.events.index(d) < rec.events.index(final) for d in deltas)
    assert not [e for e in rec.events if e.event == "asrDelta" and e.index < final.index]
    assert any("help" in d.text.lower() or "account" in d.text.lower() for d in deltas)


async def test_wait_input_timeout_reports_silence(make_session):
    s, rec = await make_session()
    await s.tts(Tts(text="Are you there?", wait_input_timeout=1.0))
    end = (await rec.wait("trackEnd"))[0]
    silence = (await rec.wait("silence", timeout=5))[0]
    assert silence.duration == 1000 and silence.timestamp - end.timestamp >= 950


async def test_base64_tts_plays_the_agents_own_pcm(make_session):
    s, rec = await make_session()
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype("<i2")
    await s.tts(Tts(text=base64.b64encode(tone.tobytes()).decode(), base64=True, play_id="b64"))
    end = (await rec.wait("trackEnd"))[0]
    assert end.play_id == "b64" and abs(end.duration - 500) <= 20
    with pytest.raises(ProtocolError):
        await s.tts(Tts(text="not base64!!", base64=True))


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    rate = 22050
    t = np.arange(rate) / rate
    write_wav(d / "beep.wav", (6000 * np.sin(2 * np.pi * 660 * t)).astype(np.int16), rate)
    return d


async def test_play_local_file_inside_allowed_folder(make_session, media_dir):
    s, rec = await make_session(MediaConfig(play_dirs=(str(media_dir),)), codec="pcmu")
    await s.play(Play(url=str(media_dir / "beep.wav"), play_id="beep"))
    end = (await rec.wait("trackEnd"))[0]
    assert end.play_id == "beep" and abs(end.duration - 1000) <= 25
    with pytest.raises(ProtocolError) as info:
        await s.play(Play(url="/etc/passwd"))
    assert info.value.code == 403
    with pytest.raises(ProtocolError) as info:
        await s.play(Play(url=f"file://{media_dir}/missing.wav"))
    assert info.value.code == 404


async def test_play_url_is_fetched_once_and_private_addresses_refused(make_session, media_dir, tmp_path):
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(media_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/beep.wav"
    try:
        strict, _ = await make_session(MediaConfig(play_cache_dir=str(tmp_path)))
        with pytest.raises(ProtocolError) as info:
            await strict.play(Play(url=url))
        assert info.value.code == 403 and hits == []
        s, rec = await make_session(MediaConfig(play_cache_dir=str(tmp_path), play_allow_private_urls=True))
        await s.play(Play(url=url, play_id="one"))
        await s.play(Play(url=url, play_id="one"))
        ends = await rec.wait("trackEnd", count=2)
        assert [e.play_id for e in ends] == ["one", "one"]
        assert len(hits) == 1  # the second play came from the cache
        with pytest.raises(ProtocolError) as info:
            await s.play(Play(url=url.replace("beep", "nothing")))
        assert info.value.code == 502
    finally:
        server.shutdown()


async def test_denoise_keeps_speech_and_removes_noise(make_session):
    rng = np.random.default_rng(11)
    speech = espeak_speech(SENTENCE)
    noise = rng.normal(0, 1, speech.size)
    noise *= np.sqrt(np.mean(speech.astype(float) ** 2) / 10 ** (5 / 10))  # 5 dB SNR
    noisy = np.clip(speech + noise, -32768, 32767).astype(np.int16)
    s, rec = await make_session(denoise=True)
    _feed(s, np.concatenate([np.zeros(8000, np.int16), noisy, np.zeros(16000, np.int16)]), "pcm")
    final = (await rec.wait("asrFinal", timeout=20))[0]
    assert wer(SENTENCE, final.text) <= 0.5, final.text

    from voxray.media.denoise import Denoiser

    d = Denoiser()
    pure = rng.normal(0, 3000, 16000 * 2).astype(np.int16)
    out = np.concatenate([d.process(pure[i:i + 320]) for i in range(0, pure.size, 320)])
    reduction_db = 10 * np.log10(np.mean(pure.astype(float) ** 2) / np.mean(out[3200:].astype(float) ** 2))
    assert reduction_db > 20


async def test_answering_machine_is_detected_from_the_greeting(make_session):
    s, rec = await make_session(answer_machine_detection=True)
    greeting = espeak_speech("Hi, you have reached the voicemail of John. Please leave a message after the tone.")
    _feed(s, np.concatenate([np.zeros(4000, np.int16), greeting, np.zeros(16000, np.int16)]), "pcm")
    amd = (await rec.wait("answerMachineDetection", timeout=20))[0]
    assert "message" in amd.text.lower() and amd.start_time < amd.end_time

    human, hrec = await make_session(answer_machine_detection=True)
    _feed(human, np.concatenate([np.zeros(4000, np.int16), espeak_speech("Hello?"), np.zeros(16000, np.int16)]), "pcm")
    await hrec.wait("eou", timeout=20)
    assert "answerMachineDetection" not in hrec.names()


async def test_background_music_plays_and_ducks_under_speech(make_session, media_dir, speech16k):
    from voxray.protocol.commands import Background

    s, rec = await make_session(MediaConfig(play_dirs=(str(media_dir),)))
    await s.background(Background(url=str(media_dir / "beep.wav"), volume=0.5, duck=0.2))
    await asyncio.sleep(0.5)
    alone = np.frombuffer(b"".join(f for _, f in rec.frames), dtype="<i2")
    assert alone.size > 16000 * 0.3 and 2700 < np.abs(alone).max() < 3300  # 6000 * 0.5
    # The caller speaks (in real time): while they do, the music drops to 0.5 * 0.2.
    levels = []
    for i in range(0, speech16k.size, 320):
        s.feed(speech16k[i:i + 320].tobytes())
        await asyncio.sleep(0.02)
        if s.segmenter.speaking and rec.frames:
            levels.append(np.abs(np.frombuffer(rec.frames[-1][1], dtype="<i2")).max())
    assert len(levels) > 20 and 500 < np.median(levels) < 700
    await s.background(Background(url=None))
    await asyncio.sleep(0.1)
    count = len(rec.frames)
    await asyncio.sleep(0.3)
    assert len(rec.frames) == count  # stopped: nothing more is sent
