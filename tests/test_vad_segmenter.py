"""Utterance segmentation from VAD probabilities (pure logic, exact expectations)."""

from __future__ import annotations

import numpy as np

from voxray.media.vad_segmenter import (
    WINDOW, SegmenterConfig, SpeechEnded, SpeechPaused, SpeechResumed, SpeechStarted, VadSegmenter,
)


def run(probs, config=None):
    seg = VadSegmenter(config or SegmenterConfig(min_speech_ms=96, end_silence_ms=320,
                                                 speech_padding_ms=64, silence_padding_ms=64))
    out = []
    for i, p in enumerate(probs):
        window = np.full(WINDOW, i, dtype=np.int16)  # each window tagged with its index
        out += [(i, ev) for ev in seg.push(window, p)]
    return seg, out


def test_short_clicks_do_not_start_speech():
    _, out = run([0.0] * 5 + [0.9, 0.9] + [0.0] * 20)  # 64 ms < 96 ms minimum
    assert out == []


def test_utterance_boundaries_and_padding():
    probs = [0.0] * 5 + [0.9] * 10 + [0.0] * 12
    _, out = run(probs)
    (i_start, start), (i_pause, pause), (i_end, end) = out
    assert isinstance(start, SpeechStarted) and start.start_ms == 5 * 32
    assert i_start == 7  # reported once 3 windows (96 ms) of speech were seen
    assert isinstance(end, SpeechEnded) and i_end == 15 + 10 - 1  # 10 silent windows = 320 ms
    assert end.start_ms == 160 and end.end_ms == 15 * 32 and end.silence_ms == 320
    tags = end.audio[::WINDOW].tolist()
    # 2 windows pre-roll (64 ms), the 10 speech windows, 2 windows of tail (64 ms).
    assert tags == [3, 4] + list(range(5, 15)) + [15, 16]
    assert not end.forced
    # The pause is reported at the first quiet window, with the utterance so far.
    assert isinstance(pause, SpeechPaused) and i_pause == 15 and pause.end_ms == end.end_ms
    assert pause.audio[::WINDOW].tolist() == [3, 4] + list(range(5, 16))


def test_speech_after_a_pause_voids_it():
    probs = [0.9] * 5 + [0.0] * 3 + [0.9] * 4 + [0.0] * 10
    _, out = run(probs)
    kinds = [type(e) for _, e in out]
    assert kinds == [SpeechStarted, SpeechPaused, SpeechResumed, SpeechPaused, SpeechEnded]
    first_pause, last_pause, end = out[1][1], out[3][1], out[4][1]
    assert first_pause.audio.size < last_pause.audio.size  # the resumed speech is in the turn
    # The end carries the last pause's audio and the tail of silence after it.
    assert np.array_equal(end.audio[:last_pause.audio.size], last_pause.audio)


def test_a_window_between_the_thresholds_is_a_pause_but_not_silence():
    seg, out = run([0.9] * 5 + [0.4] * 12)  # 384 ms below 0.5 but above the 0.35 release level
    assert [type(e) for _, e in out] == [SpeechStarted, SpeechPaused]  # never ends by itself
    assert seg.speaking and seg.silence_ms == 12 * 32
    assert [type(e) for e in seg.set_end_silence(300)] == [SpeechEnded]


def test_a_shorter_wait_set_in_a_pause_ends_the_turn_at_once_when_already_due():
    seg, out = run([0.9] * 5 + [0.0] * 5)  # 160 ms of silence, the turn would end at 320
    assert [type(e) for _, e in out] == [SpeechStarted, SpeechPaused]
    assert seg.set_end_silence(200) == []  # not yet: 160 < 200
    window = np.zeros(WINDOW, np.int16)
    assert [type(e) for e in seg.push(window, 0.0)] == []  # 192 ms
    ended = seg.push(window, 0.0)  # 224 ms >= 200
    assert [type(e) for e in ended] == [SpeechEnded] and ended[0].silence_ms == 224
    # The next turn is back on the configured wait.
    events = [e for p in [0.9] * 5 + [0.0] * 9 for e in seg.push(window, p)]
    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused]


def test_a_wait_already_passed_ends_the_turn_when_set():
    seg, out = run([0.9] * 5 + [0.0] * 6)  # 192 ms of silence
    ended = seg.set_end_silence(100)
    assert [type(e) for e in ended] == [SpeechEnded] and ended[0].silence_ms == 192


def test_a_longer_wait_holds_the_turn_through_a_mid_sentence_pause():
    seg, out = run([0.9] * 5 + [0.0] * 3)
    assert seg.set_end_silence(1200) == []
    window = np.zeros(WINDOW, np.int16)
    events = [e for _ in range(20) for e in seg.push(window, 0.0)]  # 736 ms in all: past 320
    assert events == [] and seg.speaking
    events = [e for p in [0.9] * 3 + [0.0] * 10 for e in seg.push(window, p)]
    assert [type(e) for e in events] == [SpeechResumed, SpeechPaused, SpeechEnded]  # 320 ms again


def test_a_released_wait_goes_back_to_the_usual_end():
    seg, out = run([0.9] * 5 + [0.0] * 3)
    assert seg.set_end_silence(1200) == []  # held while the pause's transcript is out
    window = np.zeros(WINDOW, np.int16)
    assert [e for _ in range(5) for e in seg.push(window, 0.0)] == []  # 256 ms: under 320
    assert seg.release_end_silence() == []  # not yet due by the usual rule either
    ended = [e for _ in range(2) for e in seg.push(window, 0.0)]  # 320 ms
    assert [type(e) for e in ended] == [SpeechEnded] and ended[0].silence_ms == 320
    # Released past the usual wait, the turn ends at once.
    seg, _ = run([0.9] * 5 + [0.0] * 3)
    seg.set_end_silence(1200)
    assert [e for _ in range(9) for e in seg.push(window, 0.0)] == []  # 384 ms
    assert [type(e) for e in seg.release_end_silence()] == [SpeechEnded]
    assert seg.release_end_silence() == []  # no pause to release any more


def test_hysteresis_keeps_speech_through_a_dip():
    probs = [0.9] * 5 + [0.4] * 3 + [0.9] * 5 + [0.0] * 10  # 0.4 is above the 0.35 release level
    _, out = run(probs)
    # One turn: the dip is a pause (its speculation is dropped when speech comes back), not an end.
    assert [type(e) for _, e in out] == [SpeechStarted, SpeechPaused, SpeechResumed, SpeechPaused, SpeechEnded]


def test_max_length_forces_an_end():
    cfg = SegmenterConfig(min_speech_ms=32, end_silence_ms=320, max_utterance_ms=640)
    _, out = run([0.9] * 40, cfg)
    ends = [e for _, e in out if isinstance(e, SpeechEnded)]
    assert ends and ends[0].forced and ends[0].audio.size == 20 * WINDOW


def test_flush_closes_open_utterance():
    seg, out = run([0.9] * 6)
    assert isinstance(out[0][1], SpeechStarted)
    end = seg.flush()
    assert end is not None and end.forced and seg.flush() is None
