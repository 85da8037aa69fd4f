"""The real models, loaded offline from their packages: silero (batched), whisper, piper."""

from __future__ import annotations

import asyncio

import jiwer
import numpy as np
import pytest

from tests.conftest import SENTENCE
from voxray.media.messages import VadChunk
from voxray.providers.silero_vad import WINDOW, SileroBatch
from voxray.providers.piper_local import PiperLocal
from voxray.providers.whisper_local import WhisperLocal


def normalize(text: str) -> str:
    return " ".join("".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split())


def wer(ref: str, hyp: str) -> float:
    return jiwer.wer(normalize(ref), normalize(hyp))


@pytest.fixture(scope="module")
def silero() -> SileroBatch:
    return SileroBatch()


def _whole_windows(pcm: np.ndarray) -> np.ndarray:
    return pcm[: pcm.size // WINDOW * WINDOW]


def test_silero_tells_speech_from_silence_and_noise(silero, speech16k):
    rng = np.random.default_rng(1)
    speech = _whole_windows(speech16k)
    silence = np.zeros(WINDOW * 30, np.int16)
    noise = (rng.normal(0, 300, WINDOW * 30)).astype(np.int16)
    res = silero.run([VadChunk(key=k, pcm=a.tobytes()) for k, a in
                      (("speech", speech), ("silence", silence), ("noise", noise))])
    probs = {r.key: np.array(r.probs) for r in res}
    assert (probs["speech"] > 0.5).mean() > 0.4
    assert probs["silence"].max() < 0.2
    assert probs["noise"].max() < 0.5


def test_batched_run_equals_stream_by_stream_with_carried_state(silero, speech16k):
    a = _whole_windows(speech16k)[: WINDOW * 20]
    b = _whole_windows(speech16k)[WINDOW * 10: WINDOW * 26]
    solo_a = silero.run([VadChunk(key="a", pcm=a.tobytes())])[0]
    solo_b = silero.run([VadChunk(key="b", pcm=b.tobytes())])[0]
    # The same audio split in two requests, batched with another stream of a different length.
    first = silero.run([VadChunk(key="a", pcm=a[: WINDOW * 7].tobytes()), VadChunk(key="b", pcm=b.tobytes())])
    second = silero.run([VadChunk(key="a", pcm=a[WINDOW * 7:].tobytes(),
                                  state=first[0].state, context=first[0].context)])
    np.testing.assert_allclose(first[0].probs + second[0].probs, solo_a.probs, atol=1e-5)
    np.testing.assert_allclose(first[1].probs, solo_b.probs, atol=1e-5)


def test_silero_refuses_partial_windows(silero):
    with pytest.raises(ValueError, match="whole 512-sample windows"):
        silero.run([VadChunk(key="x", pcm=b"\0" * 1000)])


@pytest.fixture(scope="module")
def whisper() -> WhisperLocal:
    w = WhisperLocal()
    w.load()
    return w


@pytest.fixture(scope="module")
def piper() -> PiperLocal:
    p = PiperLocal()
    p.load()
    return p


def test_whisper_transcribes_espeak_sentence(whisper, speech16k):
    t = asyncio.run(whisper.transcribe(speech16k))
    assert wer(SENTENCE, t.text) <= 0.5, t.text
    assert t.language == "en" and t.audio_s == pytest.approx(speech16k.size / 16000)


def test_piper_speaks_text_that_whisper_understands(piper, whisper):
    from voxray.media.resample import resample

    async def both():
        chunks = [c async for c in piper.synthesize("The weather is sunny today. We will go to the park.")]
        assert len(chunks) == 2  # one per sentence: the first can play while the second is made
        pcm = np.concatenate([np.frombuffer(c.pcm, dtype="<i2") for c in chunks])
        return await whisper.transcribe(resample(pcm, chunks[0].sample_rate, 16000))

    t = asyncio.run(both())
    assert wer("The weather is sunny today. We will go to the park.", t.text) <= 0.2, t.text
