"""Codecs against references: G.711 bit-exact with CPython's audioop; G.722 round trip."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from voxray.media.codecs import CodecError, make_codec

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference implementation (Python 3.11)

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_BYTES = bytes(range(256))


@pytest.mark.parametrize("name, enc, dec", [
    ("pcmu", audioop.lin2ulaw, audioop.ulaw2lin),
    ("pcma", audioop.lin2alaw, audioop.alaw2lin),
])
def test_g711_is_bit_exact_with_reference(name, enc, dec):
    codec = make_codec(name)
    assert codec.encode(ALL_PCM) == enc(ALL_PCM.tobytes(), 2)
    assert codec.decode(ALL_BYTES).tobytes() == dec(ALL_BYTES, 2)
    assert codec.frame_bytes(20) == 160


def _snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = ref - out.astype(np.float64)
    return 10 * np.log10(np.sum(ref**2) / max(np.sum(noise**2), 1e-9))


def test_g722_round_trip_keeps_a_tone():
    enc, dec = make_codec("g722"), make_codec("g722")
    t = np.arange(16000) / 16000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    payload = b"".join(enc.encode(tone[i:i + 320]) for i in range(0, tone.size, 320))
    assert len(payload) == 8000  # 64 kbit/s
    out = np.concatenate([dec.decode(payload[i:i + 160]) for i in range(0, len(payload), 160)])
    assert out.size == tone.size
    # The ADPCM coder has a short delay; align before comparing.
    best = max(_snr_db(tone[200 - d: tone.size - d], out[200:]) for d in range(0, 40))
    assert best > 20


def test_pcm_rejects_odd_payload_and_unknown_codec_is_named():
    with pytest.raises(CodecError):
        make_codec("pcm").decode(b"\x01\x02\x03")
    with pytest.raises(CodecError, match="unsupported codec 'amr'"):
        make_codec("amr")
