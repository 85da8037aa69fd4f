"""The speaker's rules with fake models: tracks, interruptions, streaming, pacing, hangups."""

from __future__ import annotations

import asyncio
import base64
import time
import wave

import numpy as np
import pytest

from tests.fake_models import FakeModels, Sink, tone
from voxray.media import tts_cache
from voxray.media.config import MediaConfig
from voxray.media.speaker import Speaker
from voxray.protocol.commands import Background, Play, Tts
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import CallOption

pytestmark = pytest.mark.timeout(30)


class Caller:
    speaking = False


def make(config: MediaConfig | None = None, models: FakeModels | None = None):
    models = models or FakeModels()
    sink, caller = Sink(), Caller()
    speaker = Speaker("call-1", CallOption(codec="pcm"), models, sink, config or MediaConfig(),
                      caller_speaking=lambda: caller.speaking)
    speaker.start()
    return speaker, sink, models, caller


async def stop(speaker: Speaker) -> None:
    for t in speaker.pending_tasks():
        t.cancel()
    await asyncio.gather(*speaker.pending_tasks(), return_exceptions=True)


@pytest.fixture(autouse=True)
def fresh_tts_cache():
    """Each test starts with an empty process cache (short pieces are kept without asking)."""
    tts_cache._shared = None
    yield
    tts_cache._shared = None


def tts(**kw) -> Tts:
    return Tts.model_validate(kw)


def heard(sink: Sink) -> np.ndarray:
    return np.concatenate([np.frombuffer(f, "<i2") for f in sink.frames]) if sink.frames else np.zeros(0)


async def test_tts_plays_in_real_time_between_track_start_and_end():
    speaker, sink, models, _ = make()
    t0 = time.monotonic()
    await speaker.tts(tts(text="x" * 20, playId="a"))  # 200 ms of tone
    end = (await sink.wait("trackEnd"))[0]
    took = time.monotonic() - t0
    assert [n for n in sink.names() if n != "metrics"] == ["trackStart", "trackEnd"]
    # first audio, then (active-call's) the synthesis done, not from the cache
    metrics = [e for e in sink.events if e.event == "metrics"]
    assert [m.key for m in metrics] == ["ttfb.tts.fake", "completed.tts.fake"]
    assert metrics[1].data["cached"] is False and metrics[1].data["length"] == 200 * 16 * 2
    assert end.play_id == "a" and end.duration == 200
    assert len(sink.frames) == 10 and np.abs(heard(sink)).max() > 4000
    assert 0.17 <= took < 0.6  # paced at 20 ms a frame, not sent in a burst
    await stop(speaker)


async def test_a_new_play_id_interrupts_and_the_same_one_queues():
    speaker, sink, _, _ = make()
    await speaker.tts(tts(text="x" * 50, playId="a"))
    await sink.wait("trackStart")
    await speaker.tts(tts(text="x" * 5, playId="a"))  # queues behind
    await asyncio.sleep(0.1)
    assert sink.of("interruption") == []
    await speaker.tts(tts(text="x" * 5, playId="b"))  # interrupts a (and what queued behind it)
    ends = await sink.wait("trackEnd", count=2)
    cut = sink.of("interruption")[0]
    assert cut.play_id == "a" and 0 < cut.current < cut.total_duration == 500
    assert sink.cleared == 1  # audio queued toward the caller is dropped at once
    # The queued "a" never started: it ends without events of its own.
    assert [e.play_id for e in ends] == ["a", "b"] and len(sink.of("trackStart")) == 2
    await stop(speaker)


async def test_streamed_tokens_are_spoken_clause_by_clause_on_one_track():
    speaker, sink, models, _ = make()
    for token in ["Hello ", "there, ", "how are ", "you today? ", "Fine."]:
        await speaker.tts(tts(text=token, playId="s", streaming=True))
    await asyncio.sleep(0.05)
    assert len(models.tts_requests) >= 1  # the first clause left before the stream ended
    await speaker.tts(tts(text="", playId="s", streaming=True, endOfStream=True))
    await sink.wait("trackEnd")
    assert len(sink.of("trackStart")) == 1
    assert "".join(r.text for r in models.tts_requests).replace(" ", "") == "Hellothere,howareyoutoday?Fine."
    await stop(speaker)


async def test_auto_hangup_after_the_track_and_wait_input_silence():
    speaker, sink, _, _ = make()
    await speaker.tts(tts(text="x" * 5, autoHangup=True))
    await sink.wait("trackEnd")
    await asyncio.sleep(0.02)
    assert sink.hangups == [("autohangup", "server")]
    await speaker.tts(tts(text="x" * 5, waitInputTimeout=0.1))
    await sink.wait("silence", timeout=2)
    await speaker.tts(tts(text="x" * 5, waitInputTimeout=0.2))
    await sink.wait("trackEnd", count=3)
    speaker.cancel_wait_input()  # the caller spoke
    await asyncio.sleep(0.3)
    assert len(sink.of("silence")) == 1
    await stop(speaker)


async def test_base64_pcm_plays_as_sent_and_bad_base64_is_refused():
    speaker, sink, _, _ = make()
    pcm = tone(100)
    await speaker.tts(tts(text=base64.b64encode(pcm.astype("<i2").tobytes()).decode(), base64=True))
    await sink.wait("trackEnd")
    assert np.array_equal(heard(sink)[:pcm.size], pcm)
    with pytest.raises(ProtocolError) as bad:
        await speaker.tts(tts(text="not base64!", base64=True))
    assert bad.value.code == 422
    with pytest.raises(ProtocolError) as odd:
        await speaker.tts(tts(text=base64.b64encode(b"abc").decode(), base64=True))
    assert odd.value.code == 422
    await stop(speaker)


async def test_pause_holds_the_track_and_muting_sends_nothing():
    speaker, sink, _, _ = make()
    speaker.pause()
    await speaker.tts(tts(text="x" * 10))
    await asyncio.sleep(0.15)
    assert sink.frames == [] and sink.of("trackStart") == []
    speaker.resume()
    await sink.wait("trackEnd")
    n = len(sink.frames)
    speaker.muted = True
    await speaker.tts(tts(text="x" * 10))
    await sink.wait("trackEnd", count=2)
    assert len(sink.frames) == n
    await stop(speaker)


async def test_a_failed_synthesis_is_reported_and_ends_its_track():
    models = FakeModels()
    models.fail_tts = True
    speaker, sink, _, _ = make(models=models)
    await speaker.tts(tts(text="hello", playId="f"))
    err = (await sink.wait("error"))[0]
    assert (err.sender, err.code) == ("tts", 503)
    await stop(speaker)


def _wav(path, pcm: np.ndarray, rate: int = 16000) -> str:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return str(path)


async def test_background_loops_under_the_call_and_ducks_while_the_caller_speaks(tmp_path):
    speaker, sink, _, caller = make(MediaConfig(play_dirs=(str(tmp_path),)))
    clip = _wav(tmp_path / "bg.wav", np.full(1600, 10000, np.int16))  # 100 ms, looped
    await speaker.background(Background(url=clip, volume=0.5, duck=0.2))
    await asyncio.sleep(0.3)
    loud = heard(sink)
    assert loud.size > 2 * 1600 and np.all(loud[-320:] == 5000)  # looped past its end, at volume
    caller.speaking = True
    await asyncio.sleep(0.1)
    assert np.all(heard(sink)[-320:] == 1000)  # ducked
    await speaker.background(Background(url=None))
    await asyncio.sleep(0.06)
    n = len(sink.frames)
    await asyncio.sleep(0.1)
    assert len(sink.frames) == n  # stopped: nothing to send
    await stop(speaker)


async def test_play_reads_only_from_allowed_folders(tmp_path):
    allowed, other = tmp_path / "media", tmp_path / "elsewhere"
    allowed.mkdir()
    other.mkdir()
    speaker, sink, _, _ = make(MediaConfig(play_dirs=(str(allowed),)))
    await speaker.play(Play(url=_wav(allowed / "ok.wav", tone(100)), play_id="ok"))
    await sink.wait("trackEnd")
    with pytest.raises(ProtocolError) as refused:
        await speaker.play(Play(url=_wav(other / "no.wav", tone(100))))
    assert refused.value.code == 403
    await stop(speaker)


async def test_ducking_glides_with_a_transition(tmp_path):
    """active-call's ambiance transitionSpeed: the level moves by `transition` per 20 ms frame."""
    speaker, sink, _, caller = make(MediaConfig(play_dirs=(str(tmp_path),)))
    clip = _wav(tmp_path / "bg.wav", np.full(1600, 10000, np.int16))
    await speaker.background(Background(url=clip, volume=0.5, duck=0.2, transition=0.1))
    await asyncio.sleep(0.2)
    caller.speaking = True
    n = len(sink.frames)
    await asyncio.sleep(0.2)
    levels = [int(np.frombuffer(f, "<i2")[-1]) for f in sink.frames[n:n + 6]]
    # 5000 -> 1000 in steps of 1000 (0.1 x 10000): gradual, never a jump.
    assert levels[:4] == [4000, 3000, 2000, 1000] or levels[1:5] == [4000, 3000, 2000, 1000], levels
    await stop(speaker)


async def test_a_clip_without_play_id_is_known_by_its_url_and_replaced_by_another(tmp_path):
    speaker, sink, _, _ = make(MediaConfig(play_dirs=(str(tmp_path),)))
    first = _wav(tmp_path / "a.wav", tone(2000))
    await speaker.play(Play(url=first))
    await sink.wait("trackStart")
    await speaker.play(Play(url=_wav(tmp_path / "b.wav", tone(100))))
    await sink.wait("trackEnd", count=2)
    starts = [e.play_id for e in sink.of("trackStart")]
    assert starts[0] == first and starts[1].endswith("b.wav")
    assert sink.of("interruption")[0].play_id == first  # the new clip cut the first one
    await stop(speaker)


async def test_a_short_piece_said_again_replays_from_the_cache():
    speaker, sink, models, _ = make()
    await speaker.tts(tts(text="Sure, " + "y" * 30, playId="a"))
    await sink.wait("trackEnd")
    await speaker.tts(tts(text="Sure, " + "z" * 20, playId="b", option={"volume": 2}))
    await sink.wait("trackEnd", count=2)
    # "Sure," went to the model once; each reply's own words every time.
    assert [r.text for r in models.tts_requests] == ["Sure,", "y" * 30, "z" * 20]
    ttfb = [e for e in sink.events if e.event == "metrics" and e.key == "ttfb.tts.fake"]
    assert [m.data["cached"] for m in ttfb] == [False, True]
    # The kept audio is the voice as synthesized: each track's volume applies as it plays.
    pcm = heard(sink).astype(np.int64)
    opener = 5 * 160  # "Sure," is 50 ms of the fake's tone
    a, b = pcm[:opener], pcm[(50 + 300) * 16:(50 + 300) * 16 + opener]
    assert np.abs(a).max() > 4000 and abs(np.abs(b).max() / np.abs(a).max() - 0.4) < 0.02
    await stop(speaker)


async def test_pieces_are_kept_only_when_short_same_voice_and_on_voxrays_account():
    speaker, sink, models, _ = make()
    for i, (text, extra) in enumerate([
        ("Sure, " + "y" * 30, {}),
        ("y" * 30, {}),  # over tts_phrase_max_chars: synthesized again
        ("Sure, " + "y" * 30, {"option": {"speaker": "other"}}),  # another voice
        ("Sure, " + "y" * 30, {"option": {"secretKey": "k", "endpoint": "http://127.0.0.1:9"}}),  # the agent's own
    ]):
        await speaker.tts(tts(text=text, playId=f"p{i}", **extra))
        await sink.wait("trackEnd", count=i + 1)
    assert [r.text for r in models.tts_requests] == ["Sure,", "y" * 30, "y" * 30, "Sure,", "y" * 30,
                                                     "Sure,", "y" * 30]
    await stop(speaker)
    # Off (0): every piece is synthesized.
    speaker, sink, models, _ = make(MediaConfig(tts_phrase_max_chars=0))
    for i in range(2):
        await speaker.tts(tts(text="Sure, " + "y" * 30, playId=f"q{i}"))
        await sink.wait("trackEnd", count=i + 1)
    assert [r.text for r in models.tts_requests].count("Sure,") == 2
    await stop(speaker)


async def test_a_failed_piece_is_not_kept():
    speaker, sink, models, _ = make()
    models.fail_tts = True
    await speaker.tts(tts(text="Sure.", playId="a"))
    await sink.wait("trackEnd")
    models.fail_tts = False
    await speaker.tts(tts(text="Sure.", playId="b"))
    await sink.wait("trackEnd", count=2)
    assert [r.text for r in models.tts_requests] == ["Sure.", "Sure."]
    assert len(sink.frames) == 3  # the second one played (50 ms), from the model
    await stop(speaker)


async def test_a_streamed_reply_plays_its_kept_opener_before_the_rest_is_written():
    speaker, sink, models, _ = make()
    await speaker.tts(tts(text="Sure, " + "y" * 30, playId="a"))  # "Sure," is kept from here on
    await sink.wait("trackEnd")
    for token in ["Sure", ", I can", " help"]:  # the model is still writing its sentence
        await speaker.tts(tts(text=token, playId="s", streaming=True))
    await sink.wait("trackStart", count=2, timeout=1.0)  # the opener plays already
    await speaker.tts(tts(text=" you today.", playId="s", streaming=True, endOfStream=True))
    await sink.wait("trackEnd", count=2)
    assert [r.text for r in models.tts_requests] == ["Sure,", "y" * 30, "I can help you today."]
    await stop(speaker)


async def test_a_short_piece_is_kept_when_its_track_is_cut_at_its_first_sound():
    """The bench's callers hang up at the reply's first frame; a barge-in can come as early."""
    models = FakeModels()
    models.tts_chunk_gap_s = 0.2
    speaker, sink, models, _ = make(models=models)
    await speaker.tts(tts(text="Sure, " + "y" * 30, playId="a"))
    await sink.wait("trackStart")
    await speaker.interrupt()
    await speaker.tts(tts(text="Sure, " + "z" * 20, playId="b"))
    await sink.wait("trackEnd", count=2)
    assert [r.text for r in models.tts_requests].count("Sure,") == 1
    await stop(speaker)
