"""TTS deployment: hosts the TTS providers and streams audio back per sentence."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import ray
from ray import serve
from ray.serve.config import RequestRouterConfig

from voxray.deployments.routing import FillFirstRouter
from voxray.deployments.tts_gate import FIRST, LATER, PriorityGate
from voxray.media.messages import TtsAudio, TtsRequest
from voxray.faults import enable_fault_dumps
from voxray.loop_watch import LoopWatch
from voxray.logs import bind_call, get_logger
from voxray.providers.base import model_lane, run_model_step
from voxray.providers.catalog import ProvidersConfig, build_tts
from voxray.providers.fallback import TtsChain
from voxray.media.resample import resample
from voxray.priority import IdleLane

log = get_logger("voxray.tts")


def make_tts_chain(providers: ProvidersConfig, default_voice: str | None = None, default_device: str = "auto",
                   gpu_ids: list | None = None, piper_threads: int = 1) -> TtsChain:
    """gpu_ids: the GPUs Ray gave this replica (None outside Ray): without one, local models use no CUDA."""
    built = []
    for spec in providers.tts:
        if spec.kind == "piper":
            spec = spec.model_copy(update={"model_path": spec.model_path or default_voice,
                                           "device": spec.device or default_device, "cpu_threads": piper_threads})
        p = build_tts(spec)
        if hasattr(p, "gpu_ids"):
            p.gpu_ids = gpu_ids
        p.load()
        built.append(p)
    return TtsChain(built, {s.name: s.timeout_s for s in providers.tts}, providers.retries)


async def synthesize_at_rate(chain: TtsChain, req: TtsRequest) -> AsyncIterator[TtsAudio]:
    """Run the chain and convert its audio to the rate the call asked for."""
    failures: list[str] = []
    first = True
    async for name, chunk in chain.synthesize(req.text, req.speed, req.speaker, req.provider, req.creds, failures):
        pcm = np.frombuffer(chunk.pcm, dtype="<i2")
        if chunk.sample_rate != req.sample_rate:
            pcm = await run_model_step(resample, pcm, chunk.sample_rate, req.sample_rate)
        yield TtsAudio(pcm=pcm.astype("<i2").tobytes(), sample_rate=req.sample_rate, provider=name,
                       failures=failures if first else [])
        first = False


class Lanes:
    """Where a replica's local syntheses run.

    A track's first piece (the caller waits in silence for it) goes through the gate on the
    replica's threads, first pieces before later ones. A later piece has slack: its track
    is playing the pieces before it. It runs in the idle lane, one at a time on a thread at
    the lowest CPU priority, so when turns end together it takes only the cores that the
    transcripts and the first pieces leave free. Measured (bench/run.py, 8 calls on 2
    cores, six runs each): `asrFinal` p95 ~1.51 -> ~1.19 s; with the replies heard whole,
    more of them have a gap after their first piece (~26 -> ~32 of 64, the longest ~1 ->
    ~2 s). Letting a waiting later piece leave the idle lane as its track ran dry, or two
    later pieces at once, gave more gaps, not fewer (README, bench).
    """

    def __init__(self, slots: int = 1, later_idle: bool = True) -> None:
        self.gate = PriorityGate(slots) if slots > 0 else None
        self.idle = IdleLane(name="tts-later") if later_idle else None
        self.idle_gate = PriorityGate(1) if later_idle else None

    def pick(self, first_piece: bool) -> tuple[PriorityGate | None, IdleLane | None]:
        """The gate a piece's steps pass and the lane they run in (None: the replica's threads)."""
        if first_piece or self.idle is None:
            return self.gate, None
        return self.idle_gate, self.idle


async def gated(lanes: Lanes, chain: TtsChain, req: TtsRequest) -> AsyncIterator[TtsAudio]:
    """`synthesize_at_rate`, each local synthesis step (one Piper sentence) in its lane (see
    `Lanes`): the first pieces of tracks first (bench: 8 calls' first clauses p95 ~520 ->
    ~200 ms), later pieces on spare cores."""
    provider = chain.providers.get(req.provider or chain.names[0])
    stream = synthesize_at_rate(chain, req).__aiter__()
    gate, lane = lanes.pick(req.first_piece)
    if gate is None or not getattr(provider, "computes_locally", False):
        async for audio in stream:
            yield audio
        return
    priority = FIRST if req.first_piece else LATER
    while True:
        async with gate.slot(priority):
            # Set and reset around the step, in this frame: its blocking calls
            # (run_model_step) read the lane; the caller's context is left as it was.
            token = model_lane.set(lane)
            try:
                audio = await stream.__anext__()
            except StopAsyncIteration:
                return
            finally:
                model_lane.reset(token)
        yield audio


# 0.25 CPU: two replicas (the standby) of each of ASR and TTS fit a 2-core node with the rest.
# Fill-first routing (deployments/routing.py): the standby waits warm instead of halving the work.
@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32,
                  request_router_config=RequestRouterConfig(request_router_class=FillFirstRouter,
                                                            request_router_kwargs={"fill": 8}))
class TtsDeployment:
    def __init__(self, providers: dict | None = None, piper_voice: str | None = None,
                 piper_device: str = "auto", slots: int = 1, piper_threads: int = 1,
                 later_idle: bool = True) -> None:
        enable_fault_dumps()
        gpu_ids = ray.get_gpu_ids()  # what num_gpus gave this replica
        self.chain = make_tts_chain(ProvidersConfig.model_validate(providers or {}), piper_voice, piper_device,
                                    gpu_ids, piper_threads)
        self.lanes = Lanes(slots, later_idle)
        self.loop_watch = LoopWatch("tts")
        log.info("tts providers loaded", extra={"providers": self.chain.names, "gpu_ids": gpu_ids,
                                                "devices": {n: p.describe() for n, p in self.chain.providers.items()
                                                            if hasattr(p, "describe")}})

    async def synthesize(self, req: TtsRequest) -> AsyncIterator[TtsAudio]:
        """Streamed: call through a handle with `.options(stream=True)`."""
        self.loop_watch.ensure_started()
        with bind_call(req.call_id):
            async for audio in gated(self.lanes, self.chain, req):
                yield audio
