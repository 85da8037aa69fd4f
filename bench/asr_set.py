"""A labelled ASR set and word error rate: what the bench and the tests compare windows on.

Sentences of 1-12 s as callers say them (short answers, requests, a long
explanation), each spoken by two voices (Piper's joe and espeak-ng), clean and with
line noise at 20 dB SNR, padded as the VAD segmenter hands utterances to ASR
(250 ms pre-roll, 100 ms tail). Lengths are spread so that windows land on every
bucket edge (just under and just over 5 s and 10 s).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

RATE = 16000
PRE_ROLL_S = 0.25
TAIL_S = 0.1
NOISE_SNR_DB = 20.0

SENTENCES = [
    "Yes.",
    "No thanks.",
    "Hello there.",
    "Can you hear me?",
    "I want to cancel my subscription.",
    "Please transfer me to the billing department.",
    "Can you tell me the balance of my account?",
    "I would like to book a table for two people tonight.",
    "My flight was delayed and I missed the connection in Chicago.",
    "I ordered a blue jacket last week but the package never arrived at my house.",
    "Could you please check whether the doctor has any free appointments on Friday morning?",
    "I have been trying to reset my password for an hour and the email with the link never comes.",
    "When I called yesterday the agent told me the refund would be processed within three days, "
    "but nothing has happened.",
    "We are moving to a new apartment at the end of the month, so I need to change the address "
    "on the account and also move the internet service to the new place.",
    "Good morning, I am calling about the invoice you sent me, there is a charge on it that I do "
    "not recognise and I would like someone to explain it to me before I pay anything.",
    "Thank you very much for your help, that is all I needed today, goodbye.",
]
VOICES = ("piper", "espeak")


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    noisy: bool
    pcm: np.ndarray  # int16, 16 kHz, padded like the segmenter's output

    @property
    def seconds(self) -> float:
        return self.pcm.size / RATE


def _speak(text: str, voice: str) -> np.ndarray:
    from voxray.speech import espeak_speech, piper_speech

    return piper_speech(text, RATE) if voice == "piper" else espeak_speech(text, RATE)


def _with_noise(pcm: np.ndarray, seed: int) -> np.ndarray:
    signal = pcm.astype(np.float64)
    power = np.mean(signal[np.abs(signal) > 300] ** 2) if np.any(np.abs(signal) > 300) else 1.0
    noise = np.random.default_rng(seed).normal(0.0, np.sqrt(power / 10 ** (NOISE_SNR_DB / 10)), pcm.size)
    return np.clip(signal + noise, -32768, 32767).astype(np.int16)


def labelled_set(sentences: list[str] | None = None, voices: tuple[str, ...] = VOICES,
                 noise: tuple[bool, ...] = (False, True)) -> list[Utterance]:
    out = []
    pre, tail = np.zeros(int(PRE_ROLL_S * RATE), np.int16), np.zeros(int(TAIL_S * RATE), np.int16)
    for i, text in enumerate(sentences or SENTENCES):
        for voice in voices:
            clean = np.concatenate((pre, _speak(text, voice), tail))
            for noisy in noise:
                pcm = _with_noise(clean, seed=i) if noisy else clean
                out.append(Utterance(text, voice, noisy, pcm))
    return out


def save_set(utts: list[Utterance], path: str) -> None:
    """The set as one .npz, for a machine without the voices (a GPU box): `load_set` reads it."""
    np.savez_compressed(path, **{f"u{i}": u.pcm for i, u in enumerate(utts)},
                        meta=np.array(json.dumps([[u.text, u.voice, u.noisy] for u in utts])))


def load_set(path: str) -> list[Utterance]:
    d = np.load(path)
    return [Utterance(text, voice, noisy, d[f"u{i}"])
            for i, (text, voice, noisy) in enumerate(json.loads(str(d["meta"])))]


_NUMBERS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
            "8": "eight", "9": "nine", "10": "ten"}


def words(text: str) -> list[str]:
    """Lowercase words without punctuation; spelled-out small numbers and British spellings agree."""
    text = text.lower().replace("-", " ").replace("recognize", "recognise")
    return [_NUMBERS.get(w, w) for w in re.findall(r"[a-z0-9']+", text)]


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus word error rate (jiwer): all edits over all reference words."""
    import jiwer

    norm = [" ".join(words(t)) for t in refs], [" ".join(words(t)) or "<empty>" for t in hyps]
    return jiwer.wer(*norm)
