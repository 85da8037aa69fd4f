"""Ray overhead on the audio path: what one handle call costs beyond the model's work.

Measured from a driver inside a running voxray app (handles from
`serve.get_deployment_handle`, the same calls the ingress makes):

- VAD: `infer` with one stream's 64 ms chunk; minus the replica's reported model time.
- ASR: `transcribe` of a 2 s utterance; minus Whisper's reported compute time. What is
  left includes the ASR batch window (`serve.batch` waits up to 20 ms for company).
- TTS: streamed `synthesize` to its first chunk; minus the first chunk's synthesis
  time measured in this process with the same code and voice (median vs median).
- Serve handle, no work: `CallRegistry.list` (a tiny reply), for the bare handle cost.
- Plain Ray actor call: an echo actor taking the same 64 ms chunk.
- UA worker actor call: `list_calls` on one of this node's UA workers (the ingress <-> UA worker hop).

Calls are sequential (one in flight), so queueing behind other work is not counted.
Run alone: .venv/bin/python bench/ray_hops.py [--quick] (starts its own embedded Ray).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK_BYTES = 2048  # 64 ms at 16 kHz, 16-bit: two Silero windows
UTTERANCE = "I would like to book a table for two people tonight at seven."
REPLY = "Sure, a table for two at seven."


@dataclass
class Hop:
    name: str
    n: int
    p50_ms: float
    p95_ms: float
    model_p50_ms: float | None  # the model's own time, taken out of the overhead
    overhead_p50_ms: float
    overhead_p95_ms: float


def _hop(name: str, total_ms: list[float], model_ms: list[float] | None) -> Hop:
    t = np.array(total_ms)
    over = t - np.array(model_ms) if model_ms is not None else t
    return Hop(name, len(t), float(np.percentile(t, 50)), float(np.percentile(t, 95)),
               float(np.percentile(model_ms, 50)) if model_ms is not None else None,
               float(np.percentile(over, 50)), float(np.percentile(over, 95)))


async def _timed(n: int, call: Callable[[], Awaitable[float | None]]) -> tuple[list[float], list[float]]:
    """n sequential calls after 3 unmeasured ones; returns round trips and model times (ms)."""
    for _ in range(3):
        await call()
    total, model = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        m = await call()
        total.append((time.perf_counter() - t0) * 1000)
        model.append(m if m is not None else 0.0)
    return total, model


def _utterance_2s() -> bytes:
    from voxray.speech import piper_speech

    speech = piper_speech(UTTERANCE)[:32000]
    return np.pad(speech, (0, 32000 - speech.size)).astype("<i2").tobytes()


async def _local_tts_first_chunk_ms(n: int) -> list[float]:
    from voxray.media.messages import TtsRequest
    from voxray.deployments.tts import make_tts_chain, synthesize_at_rate
    from voxray.providers.catalog import ProvidersConfig

    chain = make_tts_chain(ProvidersConfig())
    out = []
    for i in range(n + 3):
        stream = synthesize_at_rate(chain, TtsRequest(call_id="hops", text=REPLY, sample_rate=16000))
        t0 = time.perf_counter()
        await stream.__anext__()
        if i >= 3:
            out.append((time.perf_counter() - t0) * 1000)
        await stream.aclose()
    return out


@dataclass
class HopsReport:
    hops: list[Hop]


async def measure(app_name: str = "voxray", n: int = 200, n_model: int = 20, log=print) -> HopsReport:
    import ray
    from ray import serve

    from voxray.cluster.placement import local_ua_node
    from voxray.media.messages import AsrRequest, TtsRequest, VadBatch, VadChunk

    # The VadDeployment is there only with media.vad_in_process = false (this bench's own app).
    has_vad = "VadDeployment" in serve.status().applications[app_name].deployments
    vad = serve.get_deployment_handle("VadDeployment", app_name) if has_vad else None
    asr = serve.get_deployment_handle("AsrDeployment", app_name)
    tts = serve.get_deployment_handle("TtsDeployment", app_name)
    registry = serve.get_deployment_handle("CallRegistry", app_name)
    chunk = VadBatch(chunks=[VadChunk(key="hops", pcm=b"\0" * CHUNK_BYTES)])
    utt = AsrRequest(call_id="hops", pcm=_utterance_2s())
    say = TtsRequest(call_id="hops", text=REPLY, sample_rate=16000)

    @ray.remote(num_cpus=0)
    class Echo:
        def echo(self, data: bytes) -> int:
            return len(data)

    echo = Echo.remote()
    node = local_ua_node(app_name)
    first = sorted((await node.ready.remote())["workers"])[0]
    ua = await node.worker.remote(first)  # calls talk to their UA worker directly

    async def vad_call() -> float:
        return (await vad.infer.remote(chunk)).compute_ms

    async def asr_call() -> float:
        return (await asr.transcribe.remote(utt)).compute_s * 1000

    async def tts_call() -> None:
        stream = tts.options(stream=True).synthesize.remote(say)
        await stream.__anext__()
        stream.cancel()

    async def registry_call() -> None:
        await registry.list.remote()

    async def actor_call() -> None:
        await echo.echo.remote(chunk.chunks[0].pcm)

    async def ua_call() -> None:
        await ua.list_calls.remote()

    hops = []
    for name, count, fn, has_model in (
        *([("VAD infer, 64 ms chunk", n, vad_call, True)] if has_vad else []),
        ("ASR transcribe, 2 s utterance", n_model, asr_call, True),
        ("TTS synthesize, first chunk", n_model, tts_call, False),
        ("Serve handle, no work (registry)", n, registry_call, False),
        ("plain Ray actor call (64 ms chunk)", n, actor_call, False),
        ("UA worker actor call (list_calls)", n, ua_call, False),
    ):
        log(f"hops bench: {name} x{count}")
        total, model = await _timed(count, fn)
        hops.append(_hop(name, total, model if has_model else None))
    log("hops bench: local TTS first chunk (for the TTS overhead)")
    local = await _local_tts_first_chunk_ms(n_model)
    i = next(i for i, h in enumerate(hops) if h.name.startswith("TTS"))
    t = hops[i]
    m = float(np.percentile(local, 50))
    # Tail vs the median model time: a percentile minus a percentile can go negative.
    hops[i] = Hop(t.name, t.n, t.p50_ms, t.p95_ms, m, t.p50_ms - m, t.p95_ms - m)
    ray.kill(echo)
    return HopsReport(hops)


def table(report: HopsReport) -> str:
    head = f"{'hop':<36} {'n':>4} {'p50':>7} {'p95':>7} {'model p50':>9} {'ovh p50':>7} {'ovh p95':>7}"
    lines = [head, "-" * len(head)]
    for h in report.hops:
        model = "-" if h.model_p50_ms is None else f"{h.model_p50_ms:.1f}"
        lines.append(f"{h.name:<36} {h.n:>4} {h.p50_ms:>7.1f} {h.p95_ms:>7.1f} {model:>9} "
                     f"{h.overhead_p50_ms:>7.1f} {h.overhead_p95_ms:>7.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.run import free_port, refuse_other_cluster, start_server
    from voxray.cluster.local import shutdown
    from voxray.cluster.ray_start import eprint
    from voxray.config import VoxrayConfig

    refuse_other_cluster()
    config = VoxrayConfig()
    config.serve.host, config.serve.port = "127.0.0.1", free_port()
    config.media.vad_in_process = False  # deploy the VadDeployment: its hop is one of the rows
    try:
        start_server(config)
        report = asyncio.run(measure(config.serve.app_name, *((30, 5) if args.quick else (200, 20)), log=eprint))
    finally:
        shutdown()
    print(table(report))


if __name__ == "__main__":
    main()
