"""The listener's rules with fake models, in milliseconds: turns, transcripts, partials, barge-in."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.fake_models import FRAME, FakeModels, Sink, silence, tone
from voxray.media.config import MediaConfig
from voxray.media.listener import Listener
from voxray.media.playout import Track
from voxray.protocol.options import CallOption

pytestmark = pytest.mark.timeout(30)


class Owner:
    """The session around a listener: what it plays, and what barge-in and speech start do."""

    def __init__(self) -> None:
        self.track: Track | None = None
        self.barge_ins = 0
        self.speech_starts = 0

    def playing(self) -> Track | None:
        return self.track

    async def barge_in(self) -> None:
        self.barge_ins += 1
        self.track = None

    def speech(self) -> None:
        self.speech_starts += 1


def make(option: dict | None = None, models: FakeModels | None = None,
         config: MediaConfig | None = None) -> tuple[Listener, Sink, FakeModels, Owner]:
    models = models or FakeModels()
    sink, owner = Sink(), Owner()
    listener = Listener("call-1", CallOption.model_validate({"codec": "pcm", **(option or {})}), models, sink,
                        config or MediaConfig(), playing=owner.playing, on_barge_in=owner.barge_in,
                        on_speech=owner.speech)
    listener.start()
    return listener, sink, models, owner


def say(listener: Listener, pcm: np.ndarray) -> None:
    for i in range(0, pcm.size, FRAME):
        listener.feed(pcm[i:i + FRAME].astype("<i2").tobytes())


async def stop(listener: Listener) -> None:
    for t in listener.pending_tasks():
        t.cancel()
    await asyncio.gather(*listener.pending_tasks(), return_exceptions=True)
    listener.close()


async def test_a_turn_gives_speaking_silence_and_its_transcript():
    listener, sink, _, owner = make()
    say(listener, np.concatenate([silence(300), tone(600), silence(800)]))
    final = (await sink.wait("asrFinal"))[0]
    # The pause's transcript comes first: the turn ends once it says how the pause reads.
    assert sink.names()[:4] == ["speaking", "asrDelta", "silence", "metrics"]
    assert final.text == "tone 600 ms" and final.index == 0
    assert final.end_time - final.start_time >= 600
    assert sink.of("eou")[0].completed is True
    assert owner.speech_starts == 1
    await stop(listener)


async def test_asr_provider_none_gives_turns_without_transcribing():
    listener, sink, models, _ = make({"asr": {"provider": "none"}})
    say(listener, np.concatenate([silence(300), tone(1500), silence(1500)]))
    await sink.wait("silence")
    await asyncio.sleep(0.3)
    assert sink.names() == ["speaking", "silence"] and models.asr_requests == []
    await stop(listener)


async def test_transcripts_keep_speaking_order_when_the_first_is_slow():
    models = FakeModels()
    models.asr_delay_s = [0.3, 0.0]
    listener, sink, _, _ = make(models=models)
    # 1300 ms: past the longest a pause waits for its transcript (1200), so the first turn ends
    # with its transcript still out, and the second one's comes back first.
    say(listener, np.concatenate([tone(400), silence(1300), tone(800), silence(700)]))
    finals = await sink.wait("asrFinal", count=2)
    assert [(f.index, f.text) for f in finals] == [(0, "tone 400 ms"), (1, "tone 800 ms")]
    await stop(listener)


async def test_partials_come_while_speaking_and_never_after_the_final():
    listener, sink, models, _ = make({"asr": {"partialIntervalMs": 200}})
    say(listener, tone(1500))
    deltas = await sink.wait("asrDelta")
    assert deltas[0].index == 0 and deltas[0].text.startswith("tone")
    say(listener, silence(800))
    await sink.wait("asrFinal")
    n = len(sink.of("asrDelta"))
    await asyncio.sleep(0.05)
    assert len(sink.of("asrDelta")) == n
    assert sink.names().index("asrFinal") > max(i for i, e in enumerate(sink.names()) if e == "asrDelta")
    await stop(listener)


async def test_a_short_noise_burst_is_no_turn():
    listener, sink, models, _ = make()
    say(listener, np.concatenate([tone(60), silence(800)]))  # under min_speech_ms (96)
    await asyncio.sleep(0.1)
    assert sink.of("speaking") == [] and models.asr_requests == []
    await stop(listener)


async def test_muted_caller_is_not_heard():
    listener, sink, models, _ = make()
    listener.muted = True
    say(listener, np.concatenate([tone(600), silence(800)]))
    await asyncio.sleep(0.1)
    assert sink.of("speaking") == []
    listener.muted = False
    say(listener, np.concatenate([tone(600), silence(800)]))
    await sink.wait("asrFinal")
    await stop(listener)


async def test_caller_speech_over_playing_audio_barges_in_after_the_guards():
    listener, sink, _, owner = make({"bargeIn": {"minSpeechMs": 160, "ignoreMs": 0}})
    owner.track = Track(play_id="p1", sample_rate=16000, started=True, started_at=0.0)
    say(listener, tone(100))  # shorter than min_speech_ms: not yet
    await asyncio.sleep(0.05)
    assert owner.barge_ins == 0
    say(listener, tone(200))
    await asyncio.sleep(0.05)
    assert owner.barge_ins == 1
    await stop(listener)


async def test_no_barge_in_while_nothing_plays_or_when_disabled():
    listener, sink, _, owner = make({"bargeIn": {"enabled": False}})
    owner.track = Track(play_id="p1", sample_rate=16000, started=True, started_at=0.0)
    say(listener, np.concatenate([tone(600), silence(800)]))
    await sink.wait("asrFinal")
    assert owner.barge_ins == 0
    await stop(listener)


async def test_a_failed_vad_call_is_reported_and_listening_goes_on():
    models = FakeModels()
    models.fail_vad = 1
    listener, sink, _, _ = make(models=models)
    say(listener, silence(32 * listener.config.vad_chunk_windows))  # one VAD chunk: the failing request
    await sink.wait("error")
    assert sink.of("error")[0].sender == "vad" and sink.of("error")[0].code == 503
    say(listener, np.concatenate([tone(600), silence(800)]))
    await sink.wait("asrFinal")
    await stop(listener)


async def test_answering_machine_detection_on_the_first_turn():
    listener, sink, models, _ = make({"answerMachineDetection": True})

    async def greeting(req):
        return type(await FakeModels.transcribe(models, req))(
            text="Hi, you have reached Alice. Please leave a message after the tone.", provider="fake")
    models.transcribe = greeting
    say(listener, np.concatenate([tone(3000), silence(800)]))
    await sink.wait("answerMachineDetection")
    await stop(listener)


def test_end_of_turn_bounds_come_from_the_call_and_the_node():
    from voxray.media.listener import eou_bounds

    config = MediaConfig()
    b = eou_bounds(CallOption(), config, 480)
    assert (b.complete_ms, b.unknown_ms, b.incomplete_ms) == (200, 480, 1200)
    b = eou_bounds(CallOption.model_validate({"eou": {"timeout": 2000, "completeMs": 300}}), config, 600)
    assert (b.complete_ms, b.unknown_ms, b.incomplete_ms) == (300, 600, 2000)
    # A pause that reads unfinished waits at least the usual time, whatever a short timeout says.
    b = eou_bounds(CallOption.model_validate({"eou": {"timeout": 100}}), config, 480)
    assert (b.complete_ms, b.unknown_ms, b.incomplete_ms) == (200, 480, 480)
    assert eou_bounds(CallOption.model_validate({"eou": {"type": "silence"}}), config, 480) is None
    assert eou_bounds(CallOption(), MediaConfig(speculative_asr=False), 480) is None


async def test_silence_timeout_is_a_repeating_no_input_timeout():
    """active-call's `vad.silenceTimeout`: `silence` after that long without speech, and
    again every as long; it does not stretch the wait that ends a turn."""
    listener, sink, _, _ = make({"vad": {"silenceTimeout": 1000}})
    say(listener, silence(2600))
    await sink.wait("silence")
    await asyncio.sleep(0.3)
    quiet = sink.of("silence")
    # In whole VAD windows (32 ms): the first window at or past the timeout.
    assert len(quiet) == 2 and all(1000 <= s.duration < 1032 for s in quiet) and "speaking" not in sink.names()
    assert quiet[1].start_time - quiet[0].start_time == quiet[0].duration
    await stop(listener)


async def test_speech_padding_is_the_speech_needed_before_it_counts():
    listener, sink, _, owner = make({"vad": {"speechPadding": 500}})
    say(listener, np.concatenate([silence(300), tone(300), silence(1200), tone(900), silence(1500)]))
    final = (await sink.wait("asrFinal"))[0]
    assert sink.names().count("speaking") == 1 and owner.speech_starts == 1  # the 300 ms tone did not count
    assert final.text == "tone 900 ms"
    await stop(listener)


def test_silence_padding_ends_an_utterance_when_set():
    from voxray.media.listener import segmenter_config

    def cfg(vad: dict):
        return segmenter_config(CallOption.model_validate({"codec": "pcm", "vad": vad}), MediaConfig())

    assert cfg({"silencePadding": 300}).end_silence_ms == 300
    assert cfg({"voiceThreshold": 0.6}).end_silence_ms == MediaConfig().end_silence_ms  # unset: the server's
    assert cfg({"speechPadding": 400}).min_speech_ms == 400
    assert cfg({"speechPadding": 400, "minSpeechMs": 128}).min_speech_ms == 128  # the ext field wins
    assert cfg({}).min_speech_ms == 96


class ChunkLog(FakeModels):
    """Fake models that note each VAD request's size and, at the first ASR request, how much
    audio had been fed."""

    def __init__(self) -> None:
        super().__init__()
        self.fed_ms = 0
        self.vad_windows: list[tuple[int, int]] = []  # (fed ms, windows in the request)
        self.first_asr_at_ms: int | None = None

    async def vad(self, chunk):
        self.vad_windows.append((self.fed_ms, len(chunk.pcm) // 2 // 512))
        return await super().vad(chunk)

    async def transcribe(self, req):
        if self.first_asr_at_ms is None:
            self.first_asr_at_ms = self.fed_ms
        return await super().transcribe(req)


async def paced(speech_chunk_windows: int) -> ChunkLog:
    """300 ms of silence, 650 ms of tone, silence, fed a frame at a time with the VAD keeping up."""
    listener, sink, models, _ = make(models=ChunkLog(),
                                     config=MediaConfig(vad_speech_chunk_windows=speech_chunk_windows,
                                                       vad_quiet_margin_db=0))  # every chunk scored
    pcm = np.concatenate([silence(300), tone(650), silence(700)])
    for i in range(0, pcm.size, FRAME):
        listener.feed(pcm[i:i + FRAME].astype("<i2").tobytes())
        models.fed_ms = (i + FRAME) * 1000 // 16000
        for _ in range(5):
            await asyncio.sleep(0)
    await sink.wait("asrFinal")
    await stop(listener)
    return models


async def test_while_the_caller_speaks_each_vad_window_goes_alone_so_the_pause_is_seen_at_once():
    models = await paced(1)
    before = [n for at, n in models.vad_windows if at <= 300]
    during = [n for at, n in models.vad_windows if 500 <= at <= 900]
    after = [n for at, n in models.vad_windows if at >= 1600]
    assert before and set(before) == {3}  # between turns: 96 ms chunks
    assert during and set(during) == {1}  # speaking: one 32 ms window per request
    assert after and set(after) == {3}  # the turn over: back to chunks
    # The tone ends at 950 ms; the first quiet window is [960, 992) ms: the pause's transcript
    # is asked for as soon as the frame that completes it (20 ms frames: the one ending at
    # 1000 ms) is in.
    assert models.first_asr_at_ms == 1000
    # In 96 ms chunks throughout, that window waited for the rest of its chunk, [960, 1056).
    old = await paced(0)
    assert old.first_asr_at_ms == 1060


async def test_a_pause_waits_for_its_late_transcript_before_the_usual_end():
    """A loaded ASR answers a pause's speculation late: the caller who goes on after 700 ms
    (past the usual 480) is not cut, and one who does not is ended by the transcript."""
    models = FakeModels()
    models.asr_delay_s = [1.0]  # the pause's transcript takes a second
    listener, sink, _, _ = make(models=models)
    say(listener, np.concatenate([tone(400), silence(700), tone(400), silence(200)]))
    await asyncio.sleep(0.3)
    assert sink.of("silence") == []  # the 700 ms gap did not end the turn
    say(listener, silence(1500))
    (final,) = await sink.wait("asrFinal")
    assert final.text == "tone 800 ms"  # one turn, both tones
    # The turn ended by the usual rule once its own transcript came back ("unknown").
    assert sink.of("eou")[0].reason == "unknown"
    await stop(listener)


async def test_without_a_transcript_a_pause_ends_at_the_usual_wait():
    models = FakeModels()
    listener, sink, _, _ = make(models=models)
    models.asr_delay_s = [0.2]
    original = models.transcribe

    async def failing(req):
        await original(req)
        raise RuntimeError("asr replica gone")

    models.transcribe = failing
    say(listener, np.concatenate([tone(400), silence(700)]))
    (gap,) = await sink.wait("silence")
    assert 480 <= gap.duration < 700  # released to the usual end, not held to 1200
    await stop(listener)
