"""VAD throughput: how many 16 kHz streams one CPU core keeps up with.

Three ways to run Silero VAD over the same audio (a Piper sentence, then silence),
each on one thread:

- batched: voxray's `SileroBatch.run` over all streams' 64 ms chunks at once, each
  chunk carrying its stream's state (what the VAD deployment does per request);
- per stream: the same model and code, one call per stream per chunk (batch of 1),
  i.e. no cross-call batching;
- pipecat: Pipecat's `SileroVADAnalyzer`, one analyzer per stream fed 20 ms frames.
  pipecat-ai pins protobuf and soxr below the versions Ray and voxray use, so it runs
  in its own venv (bench/.pipecat-venv, created from the package registry on first
  use) in a subprocess, given the same audio file.

Figures are CPU time of the process doing the work (not wall time: on a shared
machine other jobs stretch wall time, not CPU time). real-time factor = CPU seconds
per second of one stream's audio; streams per core = 1 / RTF.

Run alone: .venv/bin/python bench/vad_throughput.py [--streams 64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SENTENCE = "I would like to book a table for two people tonight at seven."
RATE = 16000
WINDOW = 512  # Silero's window at 16 kHz (32 ms)
CHUNK_WINDOWS = 2  # 64 ms per request per call (media.vad_chunk_windows was 2; it is 3 now)
PIPECAT_FRAME_BYTES = 640  # 20 ms frames, as a transport delivers them
PIPECAT_VENV = Path(__file__).resolve().parent / ".pipecat-venv"
PIPECAT_SPEC = "pipecat-ai"
VENV_TIMEOUT_S = 900.0
WORKER_TIMEOUT_S = 600.0


@dataclass
class VadResult:
    method: str
    streams: int
    audio_s: float  # per stream
    cpu_s: float
    wall_s: float
    model_calls: int

    @property
    def rtf(self) -> float:
        return self.cpu_s / (self.streams * self.audio_s)

    @property
    def streams_per_core(self) -> float:
        return 1.0 / self.rtf


def make_audio(silence_s: float = 1.5) -> np.ndarray:
    """Lead silence, the sentence (Piper), trailing silence; whole 32 ms windows."""
    from voxray.speech import piper_speech

    speech = piper_speech(SENTENCE, RATE)
    pcm = np.concatenate((np.zeros(RATE // 4, np.int16), speech, np.zeros(int(silence_s * RATE), np.int16)))
    step = WINDOW * CHUNK_WINDOWS
    return pcm[: pcm.size // step * step].astype(np.int16)


def _chunks(audio: np.ndarray) -> list[bytes]:
    step = WINDOW * CHUNK_WINDOWS
    return [audio[i:i + step].astype("<i2").tobytes() for i in range(0, audio.size, step)]


def run_voxray(audio: np.ndarray, streams: int, batched: bool) -> tuple[VadResult, list[list[float]]]:
    """Every stream's audio, 64 ms at a time in time order, with state carried between calls."""
    from voxray.media.messages import VadChunk
    from voxray.providers.silero_vad import SileroBatch

    model = SileroBatch(threads=1)
    model.run([VadChunk(key="warm", pcm=_chunks(audio)[0])])  # first-run allocation out of the timing
    state: list[tuple[bytes | None, bytes | None]] = [(None, None)] * streams
    probs: list[list[float]] = [[] for _ in range(streams)]
    calls = 0
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    for pcm in _chunks(audio):
        reqs = [VadChunk(key=str(s), pcm=pcm, state=state[s][0], context=state[s][1]) for s in range(streams)]
        groups = [reqs] if batched else [[r] for r in reqs]
        for group in groups:
            for r in model.run(group):
                s = int(r.key)
                state[s] = (r.state, r.context)
                probs[s].extend(r.probs)
            calls += CHUNK_WINDOWS  # the model is stepped once per window
    cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
    name = "silero, cross-call batch (voxray)" if batched else "silero, one call per stream"
    return VadResult(name, streams, audio.size / RATE, cpu, wall, calls), probs


# -- pipecat, in its own venv -------------------------------------------------------


def ensure_pipecat_venv(log=print) -> Path:
    python = PIPECAT_VENV / "bin" / "python"
    probe = [str(python), "-c", "import pipecat.audio.vad.silero"]
    if python.exists() and subprocess.run(probe, capture_output=True, timeout=120).returncode == 0:
        return python
    log(f"vad bench: installing {PIPECAT_SPEC} into {PIPECAT_VENV} (once)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PIPECAT_VENV)], check=True, timeout=120)
    subprocess.run([str(python), "-m", "pip", "install", "-q", PIPECAT_SPEC], check=True, timeout=VENV_TIMEOUT_S)
    subprocess.run(probe, check=True, timeout=120)
    return python


def run_pipecat(audio: np.ndarray, streams: int, log=print) -> tuple[VadResult, list[list[float]]]:
    python = ensure_pipecat_venv(log)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audio.npy"
        np.save(path, audio)
        out = subprocess.run([str(python), __file__, "--pipecat-worker", str(path), "--streams", str(streams)],
                             capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    if out.returncode != 0:
        raise ValueError(f"pipecat worker exited {out.returncode}: {out.stderr.strip()[-300:]}")
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return VadResult(**doc["result"]), doc["probs"]


def pipecat_worker(path: str, streams: int) -> None:
    """Runs inside the pipecat venv: no voxray imports here."""
    import logging

    from loguru import logger
    from pipecat.audio.vad.silero import SileroVADAnalyzer

    logger.remove()  # its debug lines would go to stderr per analyzer
    logging.disable(logging.WARNING)
    audio = np.load(path).astype("<i2").tobytes()
    analyzers = [SileroVADAnalyzer(sample_rate=RATE) for _ in range(streams)]
    for a in analyzers:
        a.set_sample_rate(RATE)  # what a pipeline's start does; it sizes the analyzer's buffer
    probs: list[list[float]] = [[] for _ in range(streams)]
    for s, a in enumerate(analyzers):  # record each window's confidence for the cross-check
        inner = a.voice_confidence

        def spy(buf, inner=inner, out=probs[s]):
            c = inner(buf)
            out.append(float(np.asarray(c).reshape(-1)[0]))
            return c

        a.voice_confidence = spy
    analyzers[0]._run_analyzer(audio[:PIPECAT_FRAME_BYTES * 2])  # warm-up, as for the others
    analyzers[0]._model.reset_states()
    analyzers[0]._vad_buffer = b""
    probs[0].clear()
    frames = [audio[i:i + PIPECAT_FRAME_BYTES] for i in range(0, len(audio), PIPECAT_FRAME_BYTES)]
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    for frame in frames:
        for a in analyzers:
            a._run_analyzer(frame)  # what analyze_audio runs in its executor, minus the thread hop
    cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
    res = VadResult("pipecat SileroVADAnalyzer", streams, len(audio) / 2 / RATE, cpu, wall,
                    sum(len(p) for p in probs))
    print(json.dumps({"result": asdict(res), "probs": probs}))


# -- the whole comparison -------------------------------------------------------------


@dataclass
class VadReport:
    results: list[VadResult]
    batch_vs_single: float
    batch_vs_pipecat: float | None
    max_prob_diff_batched: float  # batched vs one-by-one: the same numbers
    agreement_pipecat: float | None  # share of windows where pipecat and voxray agree on speech
    pipecat_error: str | None = None


def run(streams: int = 64, quick: bool = False, pipecat: bool = True, log=print) -> VadReport:
    audio = make_audio(silence_s=0.5 if quick else 1.5)
    results = []
    sweep = [streams] if quick else sorted({1, 16, streams, 4 * streams})
    batched_probs = None
    for n in sweep:
        log(f"vad bench: batched, {n} streams")
        res, probs = run_voxray(audio, n, batched=True)
        results.append(res)
        if n == streams:
            batched, batched_probs = res, probs
    log(f"vad bench: one call per stream, {streams} streams")
    single, single_probs = run_voxray(audio, streams, batched=False)
    results.append(single)
    diff = max(abs(a - b) for pa, pb in zip(batched_probs, single_probs) for a, b in zip(pa, pb))
    pc, agree, error = None, None, None
    if pipecat:
        log(f"vad bench: pipecat, {streams} streams")
        try:
            pc, pc_probs = run_pipecat(audio, streams, log)
            results.append(pc)
            a, b = np.array(batched_probs[0]) > 0.5, np.array(pc_probs[0][: len(batched_probs[0])]) > 0.5
            agree = float((a[: b.size] == b).mean())
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            log(f"vad bench: pipecat side failed: {error}")
    return VadReport(results, batch_vs_single=single.cpu_s / batched.cpu_s,
                     batch_vs_pipecat=(pc.rtf / batched.rtf) if pc else None,
                     max_prob_diff_batched=diff, agreement_pipecat=agree, pipecat_error=error)


def table(report: VadReport) -> str:
    head = f"{'method':<36} {'streams':>7} {'audio s':>7} {'cpu s':>7} {'RTF':>9} {'streams/core':>12}"
    lines = [head, "-" * len(head)]
    for r in report.results:
        lines.append(f"{r.method:<36} {r.streams:>7} {r.audio_s:>7.2f} {r.cpu_s:>7.2f} "
                     f"{r.rtf:>9.5f} {r.streams_per_core:>12.0f}")
    lines.append("")
    lines.append(f"batched vs one call per stream: {report.batch_vs_single:.1f}x streams per core "
                 f"(same probabilities, max diff {report.max_prob_diff_batched:.1e})")
    if report.batch_vs_pipecat is not None:
        lines.append(f"batched vs pipecat SileroVADAnalyzer: {report.batch_vs_pipecat:.1f}x streams per core "
                     f"(speech/non-speech agree on {report.agreement_pipecat:.0%} of windows)")
    elif report.pipecat_error:
        lines.append(f"pipecat: not measured ({report.pipecat_error})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-pipecat", action="store_true")
    p.add_argument("--pipecat-worker", metavar="AUDIO_NPY", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pipecat_worker:
        pipecat_worker(args.pipecat_worker, args.streams)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    report = run(args.streams, args.quick, not args.no_pipecat,
                 log=lambda *a: print(*a, file=sys.stderr, flush=True))
    print(table(report))


if __name__ == "__main__":
    main()
