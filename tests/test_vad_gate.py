"""The quiet gate: steady line noise between turns skips Silero, speech never does."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.fake_models import FRAME, FakeModels, Sink
from tests.test_listener import make, stop
from voxray.media.config import MediaConfig
from voxray.media.vad_gate import WINDOW, GateConfig, QuietGate, window_levels_db

pytestmark = pytest.mark.timeout(120)


def levels(*db: float) -> np.ndarray:
    return np.array(db, dtype=np.float64)


def noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 32768 * 10 ** (dbfs / 20), int(16000 * seconds)), -32768, 32767).astype(np.int16)


def test_levels_are_the_rms_of_each_whole_window_in_dbfs():
    full_scale_square = np.tile(np.array([32767, -32767], np.int16), WINDOW // 2)
    pcm = np.concatenate([full_scale_square, np.zeros(WINDOW, np.int16), noise(0.032, -50.0),
                          np.ones(100, np.int16)])  # a last partial window is not a window
    db = window_levels_db(pcm)
    assert db.shape == (3,)
    assert db[0] == pytest.approx(0.0, abs=0.01)
    assert db[1] == pytest.approx(-100.0)
    assert db[2] == pytest.approx(-50.0, abs=1.0)


def learnt(gate: QuietGate, level: float = -50.0) -> QuietGate:
    while gate.reference_db is None:  # 8 windows Silero called quiet, none of them skipped
        assert not gate.skip(levels(level, level, level), in_turn=False)
        gate.observe(levels(level, level, level), [0.01, 0.02, 0.01])
    return gate


def test_nothing_is_skipped_before_silero_has_called_the_line_quiet_for_long_enough():
    gate = QuietGate()
    assert gate.reference_db is None
    assert not gate.skip(levels(-50, -50, -50), in_turn=False)
    gate.observe(levels(-50, -50, -50), [0.0, 0.0, 0.0])
    assert gate.reference_db is None and not gate.skip(levels(-50, -50, -50), in_turn=False)
    learnt(gate)
    assert gate.reference_db == -50.0
    assert gate.skip(levels(-49, -50, -47), in_turn=False)


def test_a_louder_chunk_after_skipped_ones_says_silero_is_stale():
    gate = learnt(QuietGate())
    assert not gate.skip(levels(-50, -40, -50), in_turn=False) and not gate.stale  # nothing skipped yet
    gate.observe(levels(-50, -40, -50), [0.01, 0.02, 0.01])
    assert gate.skip(levels(-50, -50, -50), in_turn=False)
    assert not gate.skip(levels(-50, -40, -50), in_turn=False) and gate.stale  # the listener replays the skipped
    gate.observe(levels(-50, -40, -50), [0.01, 0.02, 0.01])
    for _ in range(5):  # steady noise until the refresh: a run, but not a stale one
        if not gate.skip(levels(-50, -50, -50), in_turn=False):
            break
    assert not gate.stale


def test_a_louder_window_a_turn_or_an_unsure_score_runs_silero():
    gate = learnt(QuietGate())
    assert not gate.skip(levels(-50, -43.9, -50), in_turn=False)  # one window over the 6 dB margin
    assert not gate.skip(levels(-50, -50, -50), in_turn=True)
    gate.observe(levels(-50, -50, -50), [0.01, 0.3, 0.01])  # Silero unsure: learn the line again
    assert gate.reference_db is None and not gate.skip(levels(-50, -50, -50), in_turn=False)


def test_silero_runs_at_least_once_per_refresh_even_on_steady_noise():
    gate = learnt(QuietGate(GateConfig(refresh_windows=16)))
    runs = []
    for _ in range(24):
        skip = gate.skip(levels(-50, -50, -50), in_turn=False)
        if not skip:
            gate.observe(levels(-50, -50, -50), [0.0, 0.0, 0.0])
        runs.append(not skip)
    assert sum(runs) == 4  # every sixth 3-window chunk: never more than 16 windows unscored
    assert gate.skipped == 20 * 3


def test_the_reference_is_the_quietest_recent_window_and_follows_the_line():
    gate = learnt(QuietGate(GateConfig(memory_windows=6)))
    gate.observe(levels(-20, -50, -50), [0.05, 0.0, 0.0])  # a door slam Silero calls no voice
    assert gate.reference_db == -50.0  # does not lift the reference over a voice's level
    gate.observe(levels(-70, -70, -70), [0.0, 0.0, 0.0])  # the noise stopped
    gate.observe(levels(-70, -70, -70), [0.0, 0.0, 0.0])
    assert gate.reference_db == -70.0
    assert not gate.skip(levels(-60, -60, -60), in_turn=False)  # a soft voice under the old noise runs
    gate.observe(levels(-40, -40, -40), [0.0, 0.0, 0.0])
    gate.observe(levels(-40, -40, -40), [0.0, 0.0, 0.0])  # the line got louder: learnt once it is all that is left
    assert gate.reference_db == -40.0


def test_margin_zero_turns_the_gate_off():
    gate = learnt(QuietGate(GateConfig(margin_db=0)))
    assert not gate.skip(levels(-80, -80, -80), in_turn=False)


class SileroModels(FakeModels):
    """The real Silero (in-process, as the ingress runs it) with the fake ASR; counts scored windows."""

    def __init__(self) -> None:
        super().__init__()
        from voxray.providers.silero_vad import InProcessVad

        self._silero = InProcessVad()
        self.scored_windows = 0

    async def vad(self, chunk):
        from voxray.media.messages import VadBatch

        self.scored_windows += len(chunk.pcm) // 2 // WINDOW
        return (await self._silero.infer(VadBatch(chunks=[chunk]))).results[0]


async def run_call(pcm: np.ndarray, margin_db: float) -> tuple[SileroModels, Sink, int]:
    listener, sink, models, _ = make(models=SileroModels(), config=MediaConfig(vad_quiet_margin_db=margin_db))
    speaking_at = None
    for i in range(0, pcm.size, FRAME):
        listener.feed(pcm[i:i + FRAME].astype("<i2").tobytes())
        for _ in range(3):  # the VAD keeps up, as in real time
            await asyncio.sleep(0)
        while not listener._vad_queue.empty():
            await asyncio.sleep(0.001)
        if speaking_at is None and sink.of("speaking"):
            speaking_at = (i + FRAME) * 1000 // 16000
    await sink.wait("asrFinal", timeout=10)
    await stop(listener)
    return models, sink, speaking_at


async def test_line_noise_skips_silero_and_a_caller_is_heard_as_without_the_gate():
    from voxray.speech import piper_speech

    voice = piper_speech("Hello, I need help with my account.", 16000).astype(np.float32)
    voice = voice / np.sqrt(np.mean(voice ** 2)) * 32768 * 10 ** (-30 / 20)  # a quiet talker, -30 dBFS
    line = noise(6.0, -50.0, seed=7).astype(np.float32)
    start = int(3.0 * 16000)
    line[start:start + voice.size] += voice
    pcm = np.clip(line, -32768, 32767).astype(np.int16)

    gated, gated_sink, gated_onset = await run_call(pcm, margin_db=6.0)
    always, always_sink, always_onset = await run_call(pcm, margin_db=0.0)

    windows = pcm.size // WINDOW

    assert always.scored_windows >= windows - 3  # all but the last chunk, not yet full
    # The 3 s of noise before the voice and the 1.5 s after its turn: Silero scored a fraction.
    assert gated.scored_windows < 0.6 * windows
    # ... and the caller was heard as well: one turn, `speaking` at most one VAD chunk (96 ms) later than
    # without the gate (Silero, its state refreshed less often, may score the first words a little
    # differently even after hearing the last skipped chunk again: 0 or 80 ms later over three noise
    # seeds), never before the voice (loud from 3040 ms), and all of it transcribed (the fake ASR names
    # how much loud audio it got).
    assert len(gated_sink.of("speaking")) == len(always_sink.of("speaking")) == 1
    assert always_onset is not None and gated_onset is not None
    assert 3040 + 96 <= gated_onset <= always_onset + 96, (gated_onset, always_onset)
    assert not gated.asr_requests[-1].partial and not always.asr_requests[-1].partial
    assert gated_sink.of("asrFinal")[0].text == always_sink.of("asrFinal")[0].text
