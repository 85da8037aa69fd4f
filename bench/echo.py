"""Echo cancellation vs the VAD-margin guard: ERLE, false barge-ins, recognition.

The agent's voice (Piper) is played to the caller; the caller's line brings it back
delayed (40/120/250 ms), attenuated and reverberated (sox), over a -66 dBFS noise
floor; in half the runs a caller (espeak-ng, another voice) speaks over it. Each run
goes through voxray's pieces offline, on a simulated clock: `EchoCanceller` (20 ms
frames, far end at send time, near end at arrival), Silero (`SileroBatch`, as the
listener runs it), the listener's barge-in rule (`bargeIn`: `minSpeechMs` 160 of VAD
windows at or above threshold + `echoGuard`, none before `ignoreMs` 400 after playback
starts), the `VadSegmenter` and Whisper tiny.en on the caller's turn.

Three ways of listening while we speak:
  aec    the canceller on, the guard off (echoGuard 0): what this bench argues for
  guard  no canceller, echoGuard 0.1 (voxray's default today)
  none   no canceller, no guard

Echo only: ERLE (input/output energy over the agent's speech, first 0.5 s of
convergence included) and false barge-ins per minute of the agent speaking (each
firing counted and the rule re-armed, as if the agent went on talking).
Speech over echo: when the first barge-in fires, relative to the caller's first word
(negative: our own echo cut us off), then (our audio stops there, as the speaker does) the WER of what
Whisper makes of the caller's turn (every utterance the segmenter cut that overlaps
the caller's speech; echo mistaken for speech lands in it).

Run: .venv/bin/python bench/echo.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from voxray.media.barge_in import BargeInRun, barge_in_threshold  # noqa: E402
from voxray.media.echo import EchoCanceller, EchoConfig  # noqa: E402
from voxray.media.messages import VadChunk  # noqa: E402
from voxray.media.vad_segmenter import WINDOW, WINDOW_MS, SegmenterConfig, SpeechEnded, VadSegmenter  # noqa: E402
from voxray.speech import espeak_speech, piper_speech, read_wav, write_wav  # noqa: E402

SR = 16000
FRAME = SR // 50  # 20 ms media frames
AGENT_TEXT = [
    "Thanks for calling. Your order shipped yesterday and should arrive on Friday.",
    "If you would like to change the delivery address, I can do that for you now.",
    "Is there anything else I can help you with today?",
]
# espeak-ng speech that Whisper tiny.en hears reliably (tests/conftest.py's SENTENCE)
CALLER_TEXT = "Hello, I need help with my account."
CALLER_AT_S = 2.0  # the caller starts this long after our audio starts
NOISE_DBFS = -66.0

# echo paths: name -> (attenuation dB, sox reverb args or None)
PATHS: dict[str, tuple[float, list[str] | None]] = {
    "line -6dB": (6.0, None),  # a trunk's hybrid: loud, short
    "room -10dB": (10.0, ["reverb", "50", "50", "50"]),  # speakerphone in an office
    "hall -3dB": (3.0, ["reverb", "80", "30", "100"]),  # speakerphone, big room, loud
}
DELAYS_MS = (40, 120, 250)


@dataclass(frozen=True)
class BargeRule:
    """voxray.media.listener.Listener._check_barge_in, offline (BargeInOption's defaults), on
    the listener's own rule (voxray/media/barge_in.py)."""

    threshold: float = 0.5
    echo_guard: float = 0.1
    min_speech_ms: int = 160
    ignore_ms: int = 400

    def fires(self, probs: list[float], start_ms: float, end_ms: float) -> list[float]:
        """Times (ms) at which a barge-in would fire while a track plays over [start, end)."""
        out, run = [], BargeInRun()
        threshold = barge_in_threshold(self.threshold, self.echo_guard)
        for i, p in enumerate(probs):
            t = (i + 1) * WINDOW_MS  # the window's end: when its probability is known
            if not (start_ms <= t < end_ms):
                run.reset()
                continue
            if run.step(p >= threshold, t - start_ms, self.min_speech_ms, self.ignore_ms):
                out.append(t)
        return out


# -- audio --------------------------------------------------------------------------

@functools.cache
def agent_speech() -> np.ndarray:
    gap = np.zeros(int(0.4 * SR), np.int16)
    parts = [np.zeros(int(0.5 * SR), np.int16)]
    for text in AGENT_TEXT:
        parts += [piper_speech(text, SR), gap]
    x = np.concatenate(parts + [np.zeros(SR, np.int16)])
    return x[: x.size // FRAME * FRAME]


@functools.cache
def caller_speech() -> np.ndarray:
    return espeak_speech(CALLER_TEXT, SR)


def echo_path(far: np.ndarray, delay_ms: float, atten_db: float, reverb: list[str] | None) -> np.ndarray:
    """What comes back on the caller's line: sox reverb (if any), volume, delay (no dither: repeatable)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "far.wav", Path(tmp) / "echo.wav"
        write_wav(src, far)
        effects = list(reverb or []) + ["vol", f"{-atten_db}dB", "pad", f"{delay_ms / 1000:.4f}"]
        subprocess.run(["sox", "-q", "-V1", "-D", "-R", str(src), str(dst), *effects], check=True)
        out = read_wav(dst)[0][: far.size]
    return np.pad(out, (0, far.size - out.size))


def line_noise(n: int, seed: int = 7) -> np.ndarray:
    rms = 32768 * 10 ** (NOISE_DBFS / 20)
    return np.random.default_rng(seed).normal(0, rms, n)


def mix(*parts: np.ndarray) -> np.ndarray:
    n = max(p.size for p in parts)
    acc = np.zeros(n)
    for p in parts:
        acc[: p.size] += p
    return np.clip(np.rint(acc), -32768, 32767).astype(np.int16)


def place(x: np.ndarray, at_s: float, n: int) -> np.ndarray:
    out = np.zeros(n, np.int16)
    i = int(at_s * SR)
    out[i:i + x.size] = x[: max(0, n - i)]
    return out


# -- the call, offline ----------------------------------------------------------------

def run_canceller(far: np.ndarray, near: np.ndarray, config: EchoConfig | None = None,
                  net_ms: float = 20.0) -> tuple[np.ndarray, EchoCanceller]:
    """Frame by frame on a simulated clock: far frame k is sent at k*20 ms (only when it
    holds audio, as the speaker sends), the caller's frame k arrives `net_ms` after it began."""
    ec = EchoCanceller(config or EchoConfig())
    out = []
    for k in range(near.size // FRAME):
        f = far[k * FRAME:(k + 1) * FRAME]
        if f.size and np.any(f):
            ec.far_end(f.tobytes(), at=k * 0.02)
        out.append(ec.near_end(near[k * FRAME:(k + 1) * FRAME].tobytes(), at=k * 0.02 + net_ms / 1000))
    cleaned = np.concatenate(out + [ec.flush()])
    return cleaned, ec


@functools.cache
def _silero():
    from voxray.providers.silero_vad import SileroBatch

    return SileroBatch()


def vad_probs(pcm: np.ndarray) -> list[float]:
    n = pcm.size // WINDOW * WINDOW
    res = _silero().run([VadChunk(key="echo", pcm=pcm[:n].astype("<i2").tobytes())])
    return res[0].probs


def utterances(pcm: np.ndarray, probs: list[float]) -> list[SpeechEnded]:
    seg = VadSegmenter(SegmenterConfig())
    out = []
    for i, p in enumerate(probs):
        out += [e for e in seg.push(pcm[i * WINDOW:(i + 1) * WINDOW], p) if isinstance(e, SpeechEnded)]
    last = seg.flush()
    return out + ([last] if last is not None else [])


@functools.cache
def _whisper():
    from voxray.providers.whisper_local import WhisperLocal

    w = WhisperLocal(cpu_threads=2)
    w.load()
    return w


def transcribe(pcm: np.ndarray) -> str:
    return asyncio.run(_whisper().transcribe(pcm)).text


def wer(ref: str, hyp: str) -> float:
    from bench.asr_set import wer as corpus_wer

    return corpus_wer([ref], [hyp])


def erle_db(near: np.ndarray, cleaned: np.ndarray, span: slice) -> float:
    e_in = float(np.mean(near[span].astype(np.float64) ** 2))
    e_out = float(np.mean(cleaned[span].astype(np.float64) ** 2))
    return 10 * np.log10(e_in / max(e_out, 1e-9))


def speech_span(far: np.ndarray) -> tuple[float, float]:
    """First and last non-silent sample of our audio, in ms."""
    loud = np.flatnonzero(np.abs(far) > 4)
    return loud[0] * 1000 / SR, (loud[-1] + 1) * 1000 / SR


VARIANTS = {"aec": BargeRule(echo_guard=0.0), "guard": BargeRule(echo_guard=0.1), "none": BargeRule(echo_guard=0.0)}


def echo_only(far: np.ndarray, delay_ms: int, path: str) -> dict:
    atten, reverb = PATHS[path]
    near = mix(echo_path(far, delay_ms, atten, reverb), line_noise(far.size))
    t0 = time.process_time()
    cleaned, ec = run_canceller(far, near)
    aec_cpu = time.process_time() - t0
    start, end = speech_span(far)
    span = slice(int(start * SR / 1000), int(end * SR / 1000))
    raw_p, clean_p = vad_probs(near), vad_probs(cleaned)
    minutes = (end - start) / 60000
    fires = {v: len(rule.fires(clean_p if v == "aec" else raw_p, start, end)) / minutes
             for v, rule in VARIANTS.items()}
    return {"erle": erle_db(near, cleaned, span), "gauge": ec.erle_db, "fires": fires,
            "speech_windows": {"raw": sum(p >= 0.5 for p in raw_p), "aec": sum(p >= 0.5 for p in clean_p)},
            "aec_rtf": aec_cpu / (near.size / SR)}


def speech_over_echo(far: np.ndarray, delay_ms: int, path: str, caller_db: float = 0.0) -> dict:
    atten, reverb = PATHS[path]
    caller = (caller_speech().astype(np.float64) * 10 ** (caller_db / 20))
    caller = place(np.clip(np.rint(caller), -32768, 32767).astype(np.int16), CALLER_AT_S + 0.5, far.size)
    c_on = (CALLER_AT_S + 0.5) * 1000
    c_off = c_on + caller_speech().size * 1000 / SR
    noise = line_noise(far.size)
    start, end = speech_span(far)
    out = {}
    for v, rule in VARIANTS.items():
        def listen(far_played: np.ndarray) -> tuple[np.ndarray, list[float]]:
            near = mix(echo_path(far_played, delay_ms, atten, reverb), caller, noise)
            heard = run_canceller(far_played, near)[0] if v == "aec" else near
            return heard, vad_probs(heard)

        heard, probs = listen(far)
        fired = rule.fires(probs, start, end)
        if fired:  # the speaker stops at the (first) barge-in: the rest of our audio is never played
            cut = int(fired[0] * SR / 1000) // FRAME * FRAME
            played = far.copy()
            played[cut:] = 0
            heard, probs = listen(played)
        turn = [u for u in utterances(heard, probs) if u.start_ms < c_off and u.end_ms > c_on - 200]
        text = " ".join(transcribe(u.audio) for u in turn).strip()
        out[v] = {"fired_ms": (fired[0] - c_on) if fired else None,
                  "text": text, "wer": wer(CALLER_TEXT, text)}
    return out


CLEAN_AT_S = (1.0, 2.5, 4.0, 6.0)  # where the caller starts over our audio on a line without echo


def clean_line(far: np.ndarray, at_s: float) -> dict:
    """The caller talking over our audio on a line that does not echo: what the canceller
    costs them (their level through it, and how much later barge-in fires)."""
    caller = place(caller_speech(), at_s, far.size)
    near = mix(caller, line_noise(far.size))
    cleaned = run_canceller(far, near)[0]
    start, end = speech_span(far)
    c_on = at_s * 1000
    span = slice(int(at_s * SR), int(at_s * SR) + caller_speech().size)
    level = erle_db(near, cleaned, span)  # dB the caller lost

    def fired(pcm: np.ndarray, rule: BargeRule) -> float | None:
        got = rule.fires(vad_probs(pcm), start, end)
        return got[0] - c_on if got else None
    return {"lost_db": level, "aec": fired(cleaned, VARIANTS["aec"]), "guard": fired(near, VARIANTS["guard"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one delay only")
    ap.add_argument("--caller-db", type=float, default=0.0, help="caller level change (dB) for speech-over-echo")
    args = ap.parse_args()
    t_start = time.perf_counter()
    far = agent_speech()
    delays = DELAYS_MS[1:2] if args.quick else DELAYS_MS
    print(f"agent speech {far.size / SR:.1f} s (Piper), caller '{CALLER_TEXT}' (espeak-ng) at "
          f"{CALLER_AT_S:.1f} s into our audio, {args.caller_db:+.0f} dB; line noise {NOISE_DBFS:.0f} dBFS; "
          "simulated 20 ms frames, caller frames arrive 20 ms after capture")
    print()
    print("ECHO ONLY                    ERLE dB           false barge-ins/min        VAD windows>=0.5   AEC")
    print(f"{'path':<12}{'delay':>6}  {'energy':>8}{'gauge':>8}   {'aec':>7}{'guard':>7}{'none':>7}"
          f"   {'raw':>7}{'aec':>7}   {'%core':>6}")
    over = []
    for path in PATHS:
        for d in delays:
            r = echo_only(far, d, path)
            f = r["fires"]
            print(f"{path:<12}{d:>4}ms  {r['erle']:>8.1f}{(r['gauge'] or 0):>8.1f}   {f['aec']:>7.1f}{f['guard']:>7.1f}"
                  f"{f['none']:>7.1f}   {r['speech_windows']['raw']:>7}{r['speech_windows']['aec']:>7}"
                  f"   {100 * r['aec_rtf']:>6.2f}")
            over.append((path, d, speech_over_echo(far, d, path, args.caller_db)))
    print()
    print("SPEECH OVER ECHO   first barge-in (ms after the caller's first word; - = never)   caller's turn WER")
    print(f"{'path':<12}{'delay':>6}  {'aec':>8}{'guard':>8}{'none':>8}   {'aec':>6}{'guard':>6}{'none':>6}"
          f"   aec transcript / guard transcript")
    for path, d, r in over:
        def fired(v: str) -> str:
            ms = r[v]["fired_ms"]
            return "-" if ms is None else f"{ms:.0f}"

        print(f"{path:<12}{d:>4}ms  {fired('aec'):>8}{fired('guard'):>8}{fired('none'):>8}"
              f"   {r['aec']['wer']:>6.2f}{r['guard']['wer']:>6.2f}{r['none']['wer']:>6.2f}"
              f"   {r['aec']['text']!r} / {r['guard']['text']!r}")
    print()
    print()
    print("CLEAN LINE (no echo): the caller talks over our audio   barge-in ms after their first word")
    print(f"{'caller at':<12}{'lost dB':>8}   {'aec':>6}{'guard':>7}")
    for at in CLEAN_AT_S:
        r = clean_line(far, at)
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"
        print(f"{at:>8.1f} s  {r['lost_db']:>8.1f}   {ms(r['aec']):>6}{ms(r['guard']):>7}")
    print()
    print("first barge-in < 0: our own echo cut the agent off before the caller said a word (the caller then")
    print("speaks into silence, hence the clean WER). aec: the caller's first word can be clipped or misheard")
    print("under double talk (AEC3's suppressor, most in its first 2.5 s); caller alone, no echo: WER "
          f"{wer(CALLER_TEXT, transcribe(np.pad(caller_speech(), (4000, 4000)))):.2f}")
    print(f"bench wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
