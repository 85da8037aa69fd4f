"""Utterance segmentation from VAD probabilities (pure logic, exact expectations)."""

from __future__ import annotations

import numpy as np

from voxray.media.vad_segmenter import (
    WINDOW, SegmenterConfig, SpeechEnded, SpeechStarted, VadSegmenter,
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
    (i_start, start), (i_end, end) = out
    assert isinstance(start, SpeechStarted) and start.start_ms == 5 * 32
    assert i_start == 7  # reported once 3 windows (96 ms) of speech were seen
    assert isinstance(end, SpeechEnded) and i_end == 15 + 10 - 1  # 10 silent windows = 320 ms
    assert end.start_ms == 160 and end.end_ms == 15 * 32 and end.silence_ms == 320
    tags = end.audio[::WINDOW].tolist()
    # 2 windows pre-roll (64 ms), the 10 speech windows, 2 windows of tail (64 ms).
    assert tags == [3, 4] + list(range(5, 15)) + [15, 16]
    assert not end.forced


def test_hysteresis_keeps_speech_through_a_dip():
    probs = [0.9] * 5 + [0.4] * 3 + [0.9] * 5 + [0.0] * 10  # 0.4 is above the 0.35 release level
    _, out = run(probs)
    assert [type(e) for _, e in out] == [SpeechStarted, SpeechEnded]


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
