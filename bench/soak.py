"""Soak test: many concurrent calls for a long time, on loopback; reports drops, memory, drift.

    .venv/bin/python bench/soak.py                 # 50 calls for 10 minutes
    .venv/bin/python bench/soak.py --calls 8 --minutes 1

Each call loops: the caller says a sentence (real time, 20 ms frames), the agent
answers with TTS once `asrFinal` arrives, the caller listens, then pauses; every few
turns the call hangs up and a new one starts. Exit status 1 if any call dropped.
Kept out of the default test run (it takes minutes); bounded in time by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import arm_watchdog, free_port, refuse_other_cluster, start_server  # noqa: E402

SENTENCE = "I would like to book a table for two people tonight at seven."
REPLY = "Sure, a table for two at seven."
FRAME = 640  # 20 ms of 16 kHz PCM


@dataclass
class Soak:
    completed_calls: int = 0
    turns: int = 0
    refused: int = 0  # turned away by admission control (503): a busy signal, not a drop
    dropped: list[str] = field(default_factory=list)
    asr_ms: list[tuple[float, float]] = field(default_factory=list)  # (time since start, latency)


async def turn(ws, speech: bytes, started: float, stats: Soak) -> None:
    t0 = time.monotonic()
    for i in range(0, len(speech), FRAME):
        await ws.send(speech[i:i + FRAME])
        delay = t0 + (i // FRAME + 1) * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    eos = time.monotonic()
    silence = bytes(FRAME)

    async def keep_line_open() -> None:
        while True:
            await ws.send(silence)
            await asyncio.sleep(0.02)

    filler = asyncio.create_task(keep_line_open())
    try:
        async with asyncio.timeout(120):
            while True:
                msg = await ws.recv()
                if isinstance(msg, str) and json.loads(msg)["event"] == "asrFinal":
                    stats.asr_ms.append((eos - started, (time.monotonic() - eos) * 1000))
                    break
            await ws.send(json.dumps({"command": "tts", "text": REPLY, "playId": f"r{stats.turns}"}))
            while True:
                msg = await ws.recv()
                if isinstance(msg, str) and json.loads(msg)["event"] == "trackEnd":
                    break
    finally:
        filler.cancel()
    stats.turns += 1


async def caller(url: str, speech: bytes, until: float, started: float, stats: Soak, rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(0, 5))  # calls arrive spread out, not in lockstep
    while time.monotonic() < until:
        try:
            async with websockets.connect(url, max_size=2**22) as ws:
                await ws.send(json.dumps({"command": "invite", "option": {"codec": "pcm"}}))
                async with asyncio.timeout(30):
                    while json.loads(await ws.recv())["event"] != "answer":
                        pass  # a refusal (error 503) is followed by the close handled below
                for _ in range(rng.randint(2, 4)):
                    if time.monotonic() >= until:
                        break
                    await turn(ws, speech, started, stats)
                    await asyncio.sleep(rng.uniform(2, 6))  # the caller thinks
                await ws.send(json.dumps({"command": "hangup"}))
                async with asyncio.timeout(30):
                    while True:
                        msg = await ws.recv()
                        if isinstance(msg, str) and json.loads(msg)["event"] == "hangup":
                            break
            stats.completed_calls += 1
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 1013:  # refused at the door (503): busy, try later
                stats.refused += 1
                await asyncio.sleep(rng.uniform(5, 10))
                continue
            stats.dropped.append(f"{type(exc).__name__}: {exc}"[:200])
        except Exception as exc:  # a drop: counted, reported, and the caller dials again
            stats.dropped.append(f"{type(exc).__name__}: {exc}"[:200])


def ray_rss_by_process() -> dict[str, float]:
    """RSS (MB) of Ray's processes, keyed `pid name`; the name is the process title's actor
    part (`ray::ServeReplica:voxray:AsrDeployment`), without the method it runs now."""
    out: dict[str, float] = {}
    for p in psutil.process_iter(["pid", "cmdline", "memory_info"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd:
            name = cmd.split()[0].split(".")[0] if cmd.startswith("ray::") else (
                "raylet" if "raylet" in cmd else "gcs_server")
            out[f"{p.info['pid']} {name}"] = p.info["memory_info"].rss / 2**20
    return out


async def sample_memory(samples: list[tuple[float, dict[str, float]]], started: float, until: float) -> None:
    while time.monotonic() < until + 5:
        samples.append((time.monotonic() - started, await asyncio.to_thread(ray_rss_by_process)))
        await asyncio.sleep(10)


async def soak(url: str, calls: int, minutes: float, seed: int) -> tuple[Soak, list[tuple[float, dict[str, float]]]]:
    from voxray.speech import piper_speech

    pcm = np.concatenate([np.zeros(4800, np.int16), piper_speech(SENTENCE)])
    speech = pcm.astype("<i2").tobytes()
    stats, memory = Soak(), []
    started = time.monotonic()
    until = started + minutes * 60
    rng = random.Random(seed)
    sampler = asyncio.create_task(sample_memory(memory, started, until))
    await asyncio.gather(*(caller(url, speech, until, started, stats, random.Random(rng.random()))
                           for _ in range(calls)))
    sampler.cancel()
    return stats, memory


def report(stats: Soak, memory: list[tuple[float, dict[str, float]]], calls: int, minutes: float) -> str:
    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q)) if xs else 0.0

    total = [(t, sum(m.values())) for t, m in memory]
    lines = [
        f"soak: {calls} concurrent calls for {minutes:g} min (loopback, real-time audio)",
        f"{'calls completed':<28}{stats.completed_calls}",
        f"{'turns (utterance+reply)':<28}{stats.turns}",
        f"{'calls dropped':<28}{len(stats.dropped)}",
        f"{'call attempts refused (503)':<28}{stats.refused}",
    ]
    if total:
        lines.append(f"{'Ray RSS start -> end (MB)':<28}{total[0][1]:.0f} -> {total[-1][1]:.0f} "
                     f"({total[-1][1] - total[0][1]:+.0f})")
    # Drift: per minute, so a steady state and a trend can be told apart.
    lines += ["", "| minute | utterances | asrFinal p50 (s) | p95 (s) | Ray RSS (MB) |", "|---|---|---|---|---|"]
    for m in range(int(np.ceil(minutes))):
        lat = [ms / 1000 for t, ms in stats.asr_ms if m * 60 <= t < (m + 1) * 60]
        rss = [v for t, v in total if t < (m + 1) * 60]
        lines.append(f"| {m + 1} | {len(lat)} | {pct(lat, 50):.1f} | {pct(lat, 95):.1f} | "
                     f"{rss[-1] if rss else 0:.0f} |")
    if len(memory) >= 2:  # where memory went: the processes that grew most
        first, last = memory[0][1], memory[-1][1]
        growth = sorted(((last[k] - first.get(k, 0.0), k) for k in last), reverse=True)[:5]
        lines += ["", "growth by process (MB): " + ", ".join(f"{k} {g:+.0f}" for g, k in growth)]
    lines += [f"  drop: {d}" for d in stats.dropped[:10]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)

    from voxray.cluster.local import shutdown
    from voxray.config import VoxrayConfig

    refuse_other_cluster()
    config = VoxrayConfig()
    config.serve.port = free_port()
    watchdog = arm_watchdog(args.minutes * 60 + 600)
    start_server(config)
    try:
        url = f"ws://127.0.0.1:{config.serve.port}/call"
        stats, memory = asyncio.run(soak(url, args.calls, args.minutes, args.seed))
        print(report(stats, memory, args.calls, args.minutes), flush=True)
    finally:
        watchdog.cancel()
        shutdown()
    sys.exit(1 if stats.dropped else 0)


if __name__ == "__main__":
    main()
