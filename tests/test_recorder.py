"""The call recorder (voxray/media/recorder.py): where it may write, and what the WAV holds."""

from __future__ import annotations

import asyncio
import struct
import wave

import numpy as np
import pytest

from voxray.media.g711 import ulaw_decode
from voxray.media.recorder import CallRecorder, open_recorder, recording_path
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import RecorderOption


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def tone(n: int, amp: int = 8000, rate: int = 16000, hz: float = 440.0) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.int16)


def test_names_stay_inside_the_recordings_folder(tmp_path):
    base = tmp_path / "rec"
    assert recording_path(str(base), "call-{id}", "abc") == (base / "call-abc.wav").resolve()
    assert recording_path(str(base), "day1/{id}.wav", "abc") == (base / "day1" / "abc.wav").resolve()
    assert recording_path(str(base), str(base / "x.wav"), "abc") == (base / "x.wav").resolve()
    for bad in ("../escape.wav", "/etc/passwd", str(tmp_path / "beside.wav"), "a/../../b.wav"):
        with pytest.raises(ProtocolError) as err:
            recording_path(str(base), bad, "abc")
        assert err.value.code == 403 and "recordings folder" in err.value.message
    with pytest.raises(ProtocolError):
        recording_path(str(base), "  ", "abc")


def test_unsupported_format_is_refused_by_name(tmp_path):
    with pytest.raises(ProtocolError) as err:
        open_recorder(str(tmp_path), RecorderOption(recorder_file="x", format="g722"), "c")
    assert err.value.code == 501 and "g722" in err.value.message
    assert open_recorder(str(tmp_path), None, "c") is None


async def test_stereo_puts_caller_left_agent_right_in_time(tmp_path):
    clock = Clock()
    rec = CallRecorder(tmp_path / "r.wav", RecorderOption(recorder_file="r"), stereo=True, clock=clock)
    # Caller: 1 s of 8 kHz frames (resampled to 16 kHz); agent: silent, then 0.5 s from t=0.5 s.
    for i in range(50):
        clock.t = (i + 1) * 0.02
        rec.heard(tone(160, rate=8000), 8000)
        if clock.t > 0.5:
            rec.sent(tone(320, amp=12000, hz=300), 16000)
    got = await rec.close()
    assert got.path == str(tmp_path / "r.wav") and abs(got.duration_ms - 1000) <= 30
    with wave.open(got.path) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 16000, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = pcm[:, 0].astype(float), pcm[:, 1].astype(float)
    assert np.abs(left[2000:14000]).max() > 5000  # the caller, all through
    assert np.abs(right[:7000]).max() == 0  # the agent said nothing for the first half
    assert np.abs(right[9000:15000]).max() > 10000
    assert not list(tmp_path.glob(".*.raw")), "temp files left behind"


async def test_mono_mix_and_g711_wav(tmp_path):
    clock = Clock()
    rec = CallRecorder(tmp_path / "m.wav", RecorderOption(recorder_file="m", format="pcmu", samplerate=8000),
                       stereo=False, clock=clock)
    for i in range(25):
        clock.t = (i + 1) * 0.02
        rec.heard(tone(320), 16000)
        rec.sent(tone(320, hz=700), 16000)
    got = await rec.close()
    raw = (tmp_path / "m.wav").read_bytes()
    tag, channels, rate = struct.unpack("<HHI", raw[20:28])
    assert (tag, channels, rate) == (7, 1, 8000) and raw[36:40] == b"data"
    size = struct.unpack("<I", raw[40:44])[0]
    assert size == len(raw) - 44 == 4000 and got.duration_ms == 500
    mixed = ulaw_decode(raw[44:])
    assert np.abs(mixed[400:3600]).max() > 9000  # both tones summed


async def test_many_recordings_at_once_do_not_mix_up(tmp_path):
    clock = Clock()
    recs = [CallRecorder(tmp_path / f"{i}.wav", RecorderOption(recorder_file=str(i)), stereo=False, clock=clock)
            for i in range(4)]
    for step in range(100):
        clock.t = (step + 1) * 0.02
        for i, r in enumerate(recs):
            r.heard(np.full(320, 1000 * (i + 1), np.int16), 16000)
    done = await asyncio.gather(*(r.close() for r in recs))
    for i, got in enumerate(done):
        with wave.open(got.path) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        assert pcm.size == 32000 and np.median(pcm) == 1000 * (i + 1)
