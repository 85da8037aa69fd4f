"""Threads of the local models on a small machine: CPU and wall time per utterance and per reply.

Whisper (CTranslate2) with 1 or 2 threads per worker and numpy's OpenBLAS with its
default (a spinning thread per core) or one thread; Piper (onnxruntime) with its
default threads or one thread with spinning off. Each configuration runs in its own
process, since OpenBLAS reads its thread count when numpy loads. CPU is the process's
user+system time: threads that spin or wait on each other show up there, not in wall time.

Run: .venv/bin/python bench/threads.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = "I would like to book a table for two people tonight at seven."
REPLIES = ["Sure,", "a table for two at seven.", "Sure, I can help with your account."]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def whisper_case(threads: int, workers: int, rounds: int) -> dict:
    import numpy as np

    from voxray.providers.whisper_local import WhisperLocal
    from voxray.speech import piper_speech

    audio = np.concatenate([np.zeros(4000, np.int16), piper_speech(SENTENCE, 16000), np.zeros(1600, np.int16)])
    w = WhisperLocal(cpu_threads=threads, workers=workers)
    w.load()
    await w.transcribe(audio)  # warm-up
    w0, c0 = time.perf_counter(), cpu_s()
    for _ in range(rounds):
        text = (await w.transcribe(audio)).text
    one = ((time.perf_counter() - w0) / rounds, (cpu_s() - c0) / rounds)
    w0, c0 = time.perf_counter(), cpu_s()
    for _ in range(rounds // 2 or 1):
        await asyncio.gather(*(w.transcribe(audio) for _ in range(4)))
    n = 4 * (rounds // 2 or 1)
    four = ((time.perf_counter() - w0) / n, (cpu_s() - c0) / n)
    return {"one_wall_ms": one[0] * 1000, "one_cpu_ms": one[1] * 1000, "four_wall_ms": four[0] * 1000,
            "four_cpu_ms": four[1] * 1000, "text": text}


def piper_case(threads: int, rounds: int) -> dict:
    from voxray.providers.piper_local import PiperLocal

    p = PiperLocal(threads=threads, device="cpu")
    p.load()
    voice = p._voice

    def synth() -> None:
        for t in REPLIES:
            list(voice.synthesize(t))

    synth()  # warm-up
    w0, c0 = time.perf_counter(), cpu_s()
    for _ in range(rounds):
        synth()
    return {"wall_ms": (time.perf_counter() - w0) / rounds * 1000, "cpu_ms": (cpu_s() - c0) / rounds * 1000}


def child(spec: dict) -> None:
    if spec["kind"] == "whisper":
        out = asyncio.run(whisper_case(spec["threads"], spec["workers"], spec["rounds"]))
    else:
        out = piper_case(spec["threads"], spec["rounds"])
    print(json.dumps(out))


def run_child(spec: dict, blas: str | None) -> dict:
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        env.pop(var, None)
    if blas is not None:
        env["OPENBLAS_NUM_THREADS"] = blas
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    print(f"== Whisper tiny.en, a {len(SENTENCE.split())}-word utterance (~3 s), {os.cpu_count()} CPUs; "
          f"ms per utterance ==")
    print(f"{'threads x workers':>17} {'BLAS threads':>13} {'alone wall':>10} {'alone cpu':>9} "
          f"{'4 at once wall':>14} {'cpu':>5}")
    for threads, workers in ((2, 2), (1, 2)):
        for blas in (None, "1"):
            r = run_child({"kind": "whisper", "threads": threads, "workers": workers, "rounds": args.rounds}, blas)
            print(f"{f'{threads} x {workers}':>17} {blas or 'default':>13} {r['one_wall_ms']:10.0f} "
                  f"{r['one_cpu_ms']:9.0f} {r['four_wall_ms']:14.0f} {r['four_cpu_ms']:5.0f}", flush=True)
    print("\n== Piper en_US-joe-medium, three reply clauses; ms per round ==")
    print(f"{'onnxruntime threads':>19} {'wall':>6} {'cpu':>6}")
    for threads, label in ((0, "default"), (1, "1, no spinning")):
        r = run_child({"kind": "piper", "threads": threads, "rounds": args.rounds}, "1")
        print(f"{label:>19} {r['wall_ms']:6.0f} {r['cpu_ms']:6.0f}", flush=True)


if __name__ == "__main__":
    main()
