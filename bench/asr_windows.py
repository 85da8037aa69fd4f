"""ASR compute and word error rate: Whisper's full 30 s window vs bucketed windows.

The labelled set of bench/asr_set.py (16 sentences of 1-11 s, Piper and espeak-ng
voices, clean and with line noise: 64 utterances) goes through the local Whisper
with the full window (faster-whisper's own behaviour, voxray before bucketing) and
with bucketed windows, each one by one and in batches of 8 (what the ASR replica does
under load). Compute per utterance is wall time (CTranslate2 keeps both cores busy);
utterances per core is utterances over CPU seconds; WER is over all reference words.
Each mode is timed on the same utterances, one after the other in this process.

Run alone: .venv/bin/python bench/asr_windows.py [--quick] [--set FILE.npz]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WindowRun:
    mode: str
    batch: int
    utterances: int
    audio_s: float
    wall_s: float
    cpu_s: float
    wer: float
    redone: int  # bucketed results that failed the repetition/confidence tests and went again

    @property
    def ms_per_utt(self) -> float:
        return self.wall_s / self.utterances * 1000

    @property
    def utt_per_core_s(self) -> float:
        return self.utterances / self.cpu_s


async def _measure(mode: str, bucket_s: float, batch: int, utts, log) -> WindowRun:
    from bench.asr_set import wer
    from voxray.providers.whisper_local import WhisperLocal

    whisper = WhisperLocal(window_bucket_s=bucket_s)
    whisper.load()
    await whisper.transcribe(utts[0].pcm)  # warm-up out of the timing
    whisper.redone = 0
    log(f"asr bench: {mode}, {len(utts)} utterances, batch {batch}")
    texts: list[str] = []
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    for i in range(0, len(utts), batch):
        chunk = [u.pcm for u in utts[i:i + batch]]
        out = [await whisper.transcribe(chunk[0])] if batch == 1 else await whisper.transcribe_batch(chunk)
        texts += [t.text for t in out]
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    return WindowRun(mode, batch, len(utts), sum(u.seconds for u in utts), wall, cpu,
                     wer([u.text for u in utts], texts), whisper.redone)


async def _run(quick: bool, log, set_path: str | None = None) -> list[WindowRun]:
    from bench.asr_set import SENTENCES, labelled_set, load_set

    utts = load_set(set_path) if set_path else labelled_set(SENTENCES[::4] if quick else None)
    return [await _measure("full 30 s window", 30.0, 1, utts, log),
            await _measure("full, batched", 30.0, 8, utts, log),
            await _measure("bucketed", 5.0, 1, utts, log),
            await _measure("bucketed, batched", 5.0, 8, utts, log)]


def run(quick: bool = False, log=print, set_path: str | None = None) -> list[WindowRun]:
    return asyncio.run(_run(quick, log, set_path))


def table(runs: list[WindowRun]) -> str:
    full = runs[0]
    head = (f"{'mode':<18} {'batch':>5} {'utts':>4} {'audio s':>7} {'wall s':>6} {'cpu s':>6} "
            f"{'ms/utt':>6} {'utt/core-s':>10} {'gain':>5} {'WER':>6} {'redone':>6}")
    lines = [head, "-" * len(head)]
    for r in runs:
        lines.append(f"{r.mode:<18} {r.batch:>5} {r.utterances:>4} {r.audio_s:>7.1f} {r.wall_s:>6.2f} "
                     f"{r.cpu_s:>6.2f} {r.ms_per_utt:>6.0f} {r.utt_per_core_s:>10.2f} "
                     f"{r.utt_per_core_s / full.utt_per_core_s:>4.1f}x {r.wer:>6.3f} {r.redone:>6}")
    single = [r for r in runs if r.batch == 1]
    batched = [r for r in runs if r.batch > 1]
    for old, new in ((single[0], single[-1]), (batched[0], batched[-1])) if batched else ():
        lines.append(f"{new.mode} vs {old.mode}: {new.utt_per_core_s / old.utt_per_core_s:.1f}x utterances "
                     f"per core, {old.ms_per_utt / new.ms_per_utt:.1f}x faster, WER {new.wer:.3f} vs {old.wer:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 of the 16 sentences")
    p.add_argument("--set", dest="set_path", help="the labelled set saved by bench/asr_burst.py --save-set "
                   "(for a machine without the voices; default: make it)")
    args = p.parse_args(argv)
    sys.path.append(str(Path(__file__).resolve().parent.parent))  # after an installed voxray wheel, if any
    print(table(run(args.quick, log=lambda *a: print(*a, file=sys.stderr, flush=True), set_path=args.set_path)))


if __name__ == "__main__":
    main()
