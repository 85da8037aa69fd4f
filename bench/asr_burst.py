"""Turn ends arriving together at one ASR replica: its queue and the real Whisper, no Ray.

N calls end their turns within 300 ms of each other (the worst case of bench/run.py's
levels); each request goes through the replica's scheduler (`AsrScheduler`,
deployments/asr_batch.py) with the settings the ASR deployment picks on that device:
on CUDA up to 8 utterances per model call, on the CPU one, two model calls at once. What
is timed is each request's arrival -> transcript: the ASR part of the turn latencies
that bench/run.py measures end to end, without the VAD's release of the turn (~90 ms)
and the Ray hops (~20-40 ms).

Utterances are the caller turns (up to 6 s) of bench/asr_set.py's labelled set, made
with Piper and espeak-ng; on a machine without those voices (a GPU box), save the set
where they are and load it there:

    .venv/bin/python bench/asr_burst.py --save-set /tmp/asr_set.npz     # here
    python bench/asr_burst.py --set /tmp/asr_set.npz                    # there

Run: .venv/bin/python bench/asr_burst.py [--calls 1,8,32] [--device auto]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_TURN_S = 6.0
SPREAD_S = 0.3


@dataclass
class Level:
    calls: int
    rounds: int
    latencies_s: list[float]

    def pct(self, q: float) -> float:
        """Nearest rank, in ms."""
        xs = sorted(self.latencies_s)
        return xs[max(0, math.ceil(q * len(xs)) - 1)] * 1000


def load_turns(path: str | None) -> list[np.ndarray]:
    from bench.asr_set import labelled_set, load_set

    utts = load_set(path) if path else labelled_set()
    return [u.pcm for u in utts if u.seconds <= MAX_TURN_S]


async def run_level(whisper, settings, turns: list[np.ndarray], calls: int, rounds: int,
                    rng: random.Random) -> Level:
    from voxray.deployments.asr_batch import GATHER_S, AsrScheduler, max_batch, transcribe_batch
    from voxray.media.messages import AsrRequest
    from voxray.providers.fallback import AsrChain

    chain = AsrChain([whisper], {whisper.name: None})
    # As the ASR deployment sets its queue up (deployments/asr.py, which imports Ray).
    scheduler = AsrScheduler(lambda reqs: transcribe_batch(chain, reqs), max_batch(chain, settings), GATHER_S,
                             concurrency=settings.whisper_workers)
    await scheduler.submit(AsrRequest(call_id="warm-up", pcm=turns[0].astype("<i2").tobytes()))
    latencies: list[float] = []

    async def turn(call: int, pcm: np.ndarray, at_s: float, t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + at_s - time.perf_counter()))
        start = time.perf_counter()
        await scheduler.submit(AsrRequest(call_id=f"call-{call}", pcm=pcm.astype("<i2").tobytes()))
        latencies.append(time.perf_counter() - start)

    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            await asyncio.gather(*(turn(c, turns[rng.randrange(len(turns))], rng.uniform(0, SPREAD_S), t0)
                                   for c in range(calls)))
            await asyncio.sleep(0.2)
    finally:
        await scheduler.aclose()
    return Level(calls, rounds, latencies)


async def run(calls: list[int], rounds: int, device: str, set_path: str | None, seed: int) -> tuple[dict, list[Level]]:
    from voxray.config import ModelsConfig
    from voxray.providers.whisper_local import WhisperLocal

    settings = ModelsConfig()  # the defaults a replica runs with
    turns = load_turns(set_path)
    whisper = WhisperLocal(cpu_threads=settings.whisper_threads, workers=settings.whisper_workers, device=device)
    whisper.load()
    rng = random.Random(seed)
    # `rounds` at 8 calls; as many turns above (at least one round), twice as many rounds at 1.
    levels = [await run_level(whisper, settings, turns, n, max(1, rounds * 8 // max(n, 8)) if n > 1 else rounds * 2,
                              rng) for n in calls]
    return whisper.describe(), levels


def table(described: dict, levels: list[Level]) -> str:
    head = f"{'calls':>5} {'turns':>5} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}"
    lines = [f"whisper on {described['device']} ({described['running_compute_type']}): turn ends within "
             f"{SPREAD_S * 1000:.0f} ms of each other, arrival -> transcript", head, "-" * len(head)]
    for lv in levels:
        lines.append(f"{lv.calls:>5} {len(lv.latencies_s):>5} {lv.pct(0.5):>7.0f} {lv.pct(0.95):>7.0f} "
                     f"{lv.pct(1.0):>7.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="1,8,32", help="calls ending their turns together, comma-separated")
    p.add_argument("--rounds", type=int, default=10, help="rounds at 8 calls (fewer above, more at 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--set", dest="set_path", help="a labelled set saved with --save-set (default: make it)")
    p.add_argument("--save-set", help="write the labelled set to this .npz and stop")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    # Run as a script: find `bench` (after any installed voxray, which a model-only box may have from a wheel).
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    if args.save_set:
        from bench.asr_set import labelled_set, save_set

        save_set(labelled_set(), args.save_set)
        print(f"saved the labelled set to {args.save_set}")
        return
    calls = [int(c) for c in args.calls.split(",") if c]
    print(table(*asyncio.run(run(calls, args.rounds, args.device, args.set_path, args.seed))))


if __name__ == "__main__":
    main()
