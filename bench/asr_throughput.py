"""ASR throughput: utterances per second, batched across utterances vs one by one.

The same N utterances (Piper speech, 2-4 s each) go through the local Whisper
once serially (`transcribe`, one model call each) and once as batches of B
(`transcribe_batch`, what the ASR deployment does under load). Both wall time
and CPU time are reported: the wall-time ratio is the throughput gain a replica
sees; CPU time shows how much of it is better use of the cores rather than less work.

Run alone: .venv/bin/python bench/asr_throughput.py [--utterances 8] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SENTENCES = [
    "I would like to book a table for two people tonight at seven.",
    "Please transfer me to the billing department.",
    "Can you tell me my balance?",
    "I want to cancel my subscription.",
    "The weather is nice today.",
    "My order number is twelve.",
    "Hello, I need help with my account.",
    "Goodbye and thank you.",
]


@dataclass
class AsrRun:
    mode: str
    batch: int
    utterances: int
    audio_s: float
    wall_s: float
    cpu_s: float

    @property
    def utt_per_s(self) -> float:
        return self.utterances / self.wall_s

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s


def make_utterances(n: int) -> list[np.ndarray]:
    from voxray.speech import piper_speech

    pad = np.zeros(3200, np.int16)  # the segmenter's pre-roll and tail, roughly
    spoken = [np.concatenate((pad, piper_speech(s), pad)) for s in SENTENCES]
    return [spoken[i % len(spoken)] for i in range(n)]


async def _measure(whisper, utterances: list[np.ndarray], batch: int) -> AsrRun:
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    if batch == 1:
        for u in utterances:
            await whisper.transcribe(u)
    else:
        for i in range(0, len(utterances), batch):
            await whisper.transcribe_batch(utterances[i:i + batch])
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    return AsrRun("serial" if batch == 1 else "batched", batch, len(utterances),
                  sum(u.size for u in utterances) / 16000, wall, cpu)


async def _run(n: int, batches: list[int], log) -> list[AsrRun]:
    from voxray.providers.whisper_local import WhisperLocal

    utterances = make_utterances(n)
    whisper = WhisperLocal()
    whisper.load()
    await whisper.transcribe(utterances[0])  # warm-up out of the timing
    runs = []
    for b in [1] + batches:
        log(f"asr bench: {n} utterances, batch {b}")
        runs.append(await _measure(whisper, utterances, b))
    return runs


def run(utterances: int = 8, quick: bool = False, log=print) -> list[AsrRun]:
    batches = [utterances] if quick else sorted({4, utterances})
    return asyncio.run(_run(utterances, batches, log))


def table(runs: list[AsrRun]) -> str:
    serial = runs[0]
    head = f"{'mode':<8} {'batch':>5} {'utts':>5} {'audio s':>7} {'wall s':>7} {'cpu s':>6} {'utt/s':>6} {'gain':>5}"
    lines = [head, "-" * len(head)]
    for r in runs:
        lines.append(f"{r.mode:<8} {r.batch:>5} {r.utterances:>5} {r.audio_s:>7.1f} {r.wall_s:>7.2f} "
                     f"{r.cpu_s:>6.2f} {r.utt_per_s:>6.2f} {r.utt_per_s / serial.utt_per_s:>4.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--utterances", type=int, default=8)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(table(run(args.utterances, args.quick, log=lambda *a: print(*a, file=sys.stderr, flush=True))))


if __name__ == "__main__":
    main()
