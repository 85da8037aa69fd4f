"""Echo cancellation (voxray/media/echo.py) on real audio.

Our voice is Piper's (what the agent plays), the caller's is espeak-ng's; the echo is
our audio delayed, attenuated and reverberated by sox over a -66 dBFS noise floor
(bench/echo.py builds it, and runs the same pieces over more paths). Silero (as the
listener runs it), the listener's barge-in rule, the VAD segmenter and Whisper tiny.en
judge the result.

Bounds, from measured values (bench/echo.py, 2026-11-26):
- ERLE on the moderate "room -10dB" path: 24-26 dB over the whole of our speech, first
  0.5 s of convergence included; asserted >= 18 dB (6 dB of margin). 18 dB takes that
  echo (about -27 dBFS RMS) below -45 dBFS, where Silero stayed under 0.5 in every
  window measured. The loud short "line -6dB" path measured 35-39 dB: >= 28 dB.
- The raw echo is speech to Silero (~290 windows >= 0.5 of ~390): the "no speech after
  cancelling" assertion means something.
- Speech over echo: the caller's first word may be clipped or misheard under double
  talk (AEC3's suppressor): the rest of the sentence must come through exactly, and
  WER <= 0.45 (espeak's audio is dithered by sox, so runs differ in that first word).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("livekit.rtc.apm")

from bench.echo import (  # noqa: E402
    CALLER_AT_S, CALLER_TEXT, FRAME, PATHS, SR, BargeRule, agent_speech, caller_speech, echo_path, erle_db,
    line_noise, mix, place, run_canceller, speech_span, transcribe, utterances, vad_probs, wer,
)
from voxray.media.echo import BLOCK, EchoCanceller, EchoConfig  # noqa: E402
from voxray.media.vad_segmenter import SpeechStarted, VadSegmenter, WINDOW  # noqa: E402


def _tone(n: int, f: float = 440.0, amp: float = 8000.0, rate: int = SR) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * f * np.arange(n) / rate)).astype(np.int16)


# -- the interface, no models ---------------------------------------------------------

def test_silent_agent_is_a_bypass():
    ec = EchoCanceller(EchoConfig())
    frame = np.arange(320, dtype=np.int16)
    for k in range(50):
        out = ec.near_end(frame, at=k * 0.02)
        assert out is frame  # untouched, not even copied
    assert ec.blocks_processed == 0 and ec._apm is None and not ec.active
    assert ec.erle_db is None


def test_frames_blocks_and_remainders():
    ec = EchoCanceller(EchoConfig())
    far = _tone(SR)
    ec.far_end(far[:320].tobytes(), at=0.0)
    assert ec.active
    # 20 ms frames: two 10 ms blocks each, nothing held back
    out = ec.near_end(np.zeros(320, np.int16).tobytes(), at=0.02)
    assert out.size == 320 and out.dtype == np.int16
    # odd sizes (a resampler's output): whole blocks out, the rest waits
    sizes = [317, 323, 150, 170, 320]
    total_in, total_out = 0, 0
    for i, n in enumerate(sizes):
        ec.far_end(far[320 * (i + 1):320 * (i + 2)], at=0.02 * (i + 1))
        total_in += n
        total_out += ec.near_end(np.zeros(n, np.int16), at=0.02 * (i + 2)).size
        assert total_out % BLOCK == 0 and 0 <= total_in - total_out < BLOCK
    assert ec.flush().size == total_in - total_out


def test_bypass_again_after_the_tail_and_8k_far_end():
    cfg = EchoConfig(delay_ms=100, tail_ms=300)
    ec = EchoCanceller(cfg)
    ec.far_end(_tone(160, rate=8000), sample_rate=8000, at=0.0)  # one 20 ms G.711 frame
    assert ec.active
    t, k = 0.02, 0
    while ec.active and k < 100:
        ec.near_end(np.zeros(320, np.int16), at=t)
        t, k = t + 0.02, k + 1
    # echo of our last sample may come back for delay_ms + tail_ms, then no more
    assert 0.35 <= t <= 0.5
    frame = np.ones(320, np.int16)
    assert ec.near_end(frame, at=t) is frame


def test_disabled_and_bad_config():
    ec = EchoCanceller(EchoConfig(enabled=False))
    ec.far_end(_tone(320), at=0.0)
    x = np.ones(320, np.int16)
    assert ec.near_end(x, at=0.02) is x and ec._apm is None
    with pytest.raises(ValueError):
        EchoConfig(delay_ms=-1)


def test_far_end_clock_gaps_and_jitter():
    """Frames paced a few ms late stay contiguous; a pause between tracks is silence."""
    ec = EchoCanceller(EchoConfig())
    a, b = _tone(320, amp=1000), _tone(320, amp=2000)
    ec.far_end(a, at=1.0)
    ec.far_end(b, at=1.0 + 0.02 + 0.007)  # 7 ms late: appended where the last ended
    got = np.zeros(640, np.int16)
    ec._read(round(1.0 * SR), got)
    assert np.array_equal(got, np.concatenate((a, b)))
    ec.far_end(a, at=2.0)  # a second later: the gap reads as silence
    gap = np.zeros(SR // 2, np.int16)
    ec._read(round(1.5 * SR), gap)
    assert not gap.any()


# -- real audio -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def far() -> np.ndarray:
    return agent_speech()


def _segment_speech(pcm: np.ndarray, probs: list[float]) -> list[SpeechStarted]:
    seg = VadSegmenter()
    found = []
    for i, p in enumerate(probs):
        found += [e for e in seg.push(pcm[i * WINDOW:(i + 1) * WINDOW], p) if isinstance(e, SpeechStarted)]
    return found


@pytest.mark.parametrize(("path", "delay_ms", "min_erle", "config"), [
    ("room -10dB", 40, 18.0, EchoConfig()), ("room -10dB", 120, 18.0, EchoConfig()),
    ("room -10dB", 250, 18.0, EchoConfig()), ("line -6dB", 250, 28.0, EchoConfig()),
    # beyond AEC3's own search (~500 ms; 700 ms gives 2 dB unaided): the delay estimate brings it in reach
    ("room -10dB", 700, 18.0, EchoConfig(delay_ms=650)),
])
def test_echo_only_is_cancelled(far, path, delay_ms, min_erle, config):
    atten, reverb = PATHS[path]
    near = mix(echo_path(far, delay_ms, atten, reverb), line_noise(far.size))
    cleaned, ec = run_canceller(far, near, config)
    assert cleaned.size == near.size
    start, end = speech_span(far)
    span = slice(int(start * SR / 1000), int(end * SR / 1000))
    erle = erle_db(near, cleaned, span)
    assert erle >= min_erle, f"ERLE {erle:.1f} dB"
    assert ec.erle_db is not None and ec.erle_db >= min_erle  # the gauge the session would export
    raw_p, clean_p = vad_probs(near), vad_probs(cleaned)
    assert _segment_speech(near, raw_p), "the raw echo should look like speech to Silero"
    assert not _segment_speech(cleaned, clean_p), "speech found in the cancelled echo"
    assert not BargeRule(echo_guard=0.0).fires(clean_p, start, end)  # no guard needed
    assert BargeRule(echo_guard=0.1).fires(raw_p, start, end)  # today's guard does not hold this echo


def test_speech_over_echo_barges_in_and_is_transcribed(far):
    atten, reverb = PATHS["room -10dB"]
    delay_ms = 120
    c_on = (CALLER_AT_S + 0.5) * 1000
    c_off = c_on + caller_speech().size * 1000 / SR
    caller = place(caller_speech(), CALLER_AT_S + 0.5, far.size)
    near = mix(echo_path(far, delay_ms, atten, reverb), caller, line_noise(far.size))
    cleaned, _ = run_canceller(far, near)
    probs = vad_probs(cleaned)
    start, end = speech_span(far)
    fired = BargeRule(echo_guard=0.0).fires(probs, start, end)
    assert fired, "no barge-in for the caller's speech"
    assert c_on < fired[0] < c_on + 800, f"barge-in at {fired[0] - c_on:.0f} ms after the caller's first word"
    # the speaker stops there; what the caller says after is heard without our echo
    played = far.copy()
    played[int(fired[0] * SR / 1000) // FRAME * FRAME:] = 0
    near = mix(echo_path(played, delay_ms, atten, reverb), caller, line_noise(far.size))
    cleaned, _ = run_canceller(played, near)
    probs = vad_probs(cleaned)
    turn = [u for u in utterances(cleaned, probs) if u.start_ms < c_off and u.end_ms > c_on - 200]
    assert turn, "the segmenter cut no utterance for the caller"
    assert all(u.start_ms > c_on - 300 for u in turn), "an utterance began before the caller spoke (echo)"
    text = " ".join(transcribe(u.audio) for u in turn)
    assert _heard_the_request(text), text


def _heard_the_request(text: str) -> bool:
    """The caller's request came through: "need help with my account" whole at the end, at
    most three edits in all. Double talk clips the sentence's onset: measured over 8 dither
    seeds at 120 ms, WER 0.29 seven times and 0.43 once, always in "Hello"; one CI run of
    the whole suite also lost the "I" after it ("Theres a need help with my account.")."""
    from bench.asr_set import words

    return " ".join(words(text)).endswith("need help with my account") and wer(CALLER_TEXT, text) <= 0.45


def test_speech_over_echo_without_barge_in_window_keeps_the_words(far):
    """Our audio goes on under the whole sentence (barge-in off): the words still come through."""
    atten, reverb = PATHS["line -6dB"]
    caller = place(caller_speech(), 5.0, far.size)
    near = mix(echo_path(far, 40, atten, reverb), caller, line_noise(far.size))
    cleaned, _ = run_canceller(far, near)
    c_on, c_off = 5000, 5000 + caller_speech().size * 1000 / SR
    turn = [u for u in utterances(cleaned, vad_probs(cleaned)) if u.start_ms < c_off and u.end_ms > c_on - 200]
    text = " ".join(transcribe(u.audio) for u in turn)
    assert _heard_the_request(text), text


def test_bursty_jittery_arrival_still_cancels(far):
    """`/call` reads the caller's frames in bursts (one read per 96 ms VAD chunk) and the
    network jitters them; frames we send are paced a few ms late at times. The canceller
    puts both on one clock (earliest arrival wins), so the echo still goes."""
    atten, reverb = PATHS["room -10dB"]
    near = mix(echo_path(far, 120, atten, reverb), line_noise(far.size))
    rng = np.random.default_rng(3)
    ec = EchoCanceller(EchoConfig())
    out, batch = [], []
    n = near.size // FRAME
    for k in range(n):
        f = far[k * FRAME:(k + 1) * FRAME]
        if f.any():
            ec.far_end(f, at=k * 0.02 + rng.uniform(0, 0.004))  # the loop wakes 0-4 ms late
        # the frame arrives 20-60 ms after it began; read with the others of its 96 ms chunk
        batch.append((k, k * 0.02 + 0.02 + rng.uniform(0, 0.04)))
        if len(batch) == 5 or k == n - 1:
            read_at = max(t for _, t in batch)
            out += [ec.near_end(near[j * FRAME:(j + 1) * FRAME], at=read_at) for j, _ in batch]
            batch = []
    cleaned = np.concatenate(out + [ec.flush()])
    start, end = speech_span(far)
    erle = erle_db(near, cleaned, slice(int(start * SR / 1000), int(end * SR / 1000)))
    assert erle >= 18.0, f"ERLE {erle:.1f} dB"
    assert not _segment_speech(cleaned, vad_probs(cleaned))
