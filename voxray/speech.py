"""Make caller speech offline (for the demo, tests and the bench): Piper or espeak-ng."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from voxray.media.resample import resample


def write_wav(path: str | Path, pcm: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: need mono 16-bit PCM")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16), w.getframerate()


@functools.cache
def _piper_voice():
    from piper import PiperVoice

    from voxray.providers.model_paths import piper_voice_path

    return PiperVoice.load(piper_voice_path())


def piper_speech(text: str, rate: int = 16000) -> np.ndarray:
    """The same audio for the same text, every time.

    Piper (VITS) adds random noise to each synthesis: with its defaults, "Please transfer
    me to the billing department" came back from Whisper tiny.en as "Place transfer meet
    at the billing department" one run in a few, and a test with a word-error bound
    failed at random. Test, demo and bench callers need speech that repeats.
    """
    from piper.config import SynthesisConfig

    voice = _piper_voice()
    chunks = list(voice.synthesize(text, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    pcm = np.concatenate([c.audio_int16_array.reshape(-1) for c in chunks])
    return resample(pcm, chunks[0].sample_rate, rate)


def espeak_speech(text: str, rate: int = 16000) -> np.ndarray:
    """espeak-ng speaks to a WAV, sox converts it (both Debian packages)."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        raise RuntimeError("espeak-ng and sox are needed (apt-get install espeak-ng sox)")
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out)], check=True)
        return read_wav(out)[0]


def conversation(utterances: list[str], gap_s: float = 4.0, lead_s: float = 0.3,
                 voice: str = "piper", rate: int = 16000) -> np.ndarray:
    """Utterances separated by silence long enough for the agent's reply."""
    speak = piper_speech if voice == "piper" else espeak_speech
    parts = [np.zeros(int(lead_s * rate), np.int16)]
    for text in utterances:
        parts += [speak(text, rate), np.zeros(int(gap_s * rate), np.int16)]
    return np.concatenate(parts)
