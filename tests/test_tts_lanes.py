"""Where a TTS replica runs a synthesis (deployments/tts.py `Lanes`, `gated`): a track's first
piece on the replica's own threads, its later pieces on threads at the lowest CPU priority."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest

from tests.conftest import live_actor_pids
from tests.test_priority import linux_only
from voxray.deployments.tts import Lanes, gated
from voxray.media.messages import TtsRequest
from voxray.priority import thread_is_lowered
from voxray.providers.base import TtsChunk, TtsProvider, model_lane, run_model_step
from voxray.providers.fallback import TtsChain


class ProbeTts(TtsProvider):
    """A local provider whose one step reports, as its audio, whether its thread was lowered."""

    name = "probe"
    computes_locally = True

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.hold = hold

    def load(self) -> None:
        pass

    def _step(self, text: str) -> bytes:
        if self.hold is not None and text == "later":
            assert self.hold.wait(5)
        return np.array([1 if thread_is_lowered() else 0], "<i2").tobytes()

    async def synthesize(self, text, speed=1.0, speaker=None, creds=None):
        yield TtsChunk(pcm=await run_model_step(self._step, text), sample_rate=16000)


def chain(provider: TtsProvider) -> TtsChain:
    return TtsChain([provider], {}, 0)


async def lowered(lanes: Lanes, tts: TtsChain, text: str, first: bool) -> bool:
    req = TtsRequest(call_id="c1", text=text, first_piece=first)
    out = [a async for a in gated(lanes, tts, req)]
    return bool(np.frombuffer(out[0].pcm, "<i2")[0])


async def test_later_pieces_run_lowered_and_first_pieces_do_not():
    lanes, tts = Lanes(), chain(ProbeTts())
    assert await lowered(lanes, tts, "first", first=True) is False
    assert await lowered(lanes, tts, "later", first=False) is True
    assert model_lane.get() is None  # the lane was set around the step only
    assert lanes.idle.steps == 1


async def test_off_every_piece_runs_on_the_replicas_threads():
    lanes, tts = Lanes(later_idle=False), chain(ProbeTts())
    assert await lowered(lanes, tts, "later", first=False) is False
    assert lanes.idle is None


async def test_a_later_piece_never_holds_up_a_first_piece():
    # A later piece starved of the cores (here: held) must not keep the gate from the
    # next caller's first piece: the two lanes have gates of their own.
    hold = threading.Event()
    lanes, tts = Lanes(slots=1), chain(ProbeTts(hold))
    later = asyncio.create_task(lowered(lanes, tts, "later", first=False))
    await asyncio.sleep(0.05)
    try:
        assert await asyncio.wait_for(lowered(lanes, tts, "first", first=True), 2) is False
        assert not later.done()
    finally:
        hold.set()
    assert await later is True


async def test_later_pieces_wait_for_each_other_in_their_lane():
    hold = threading.Event()
    lanes, tts = Lanes(), chain(ProbeTts(hold))
    a = asyncio.create_task(lowered(lanes, tts, "later", first=False))
    await asyncio.sleep(0.05)
    b = asyncio.create_task(lowered(lanes, tts, "later", first=False))
    await asyncio.sleep(0.05)
    assert lanes.idle_gate.waiting == 1 and lanes.idle.steps == 1
    hold.set()
    assert await asyncio.gather(a, b) == [True, True]


@linux_only
async def test_real_piper_synthesizes_a_later_piece_in_the_idle_lane():
    from voxray.deployments.tts import make_tts_chain
    from voxray.providers.catalog import ProvidersConfig

    tts = make_tts_chain(ProvidersConfig(), None)
    lanes = Lanes()
    req = TtsRequest(call_id="c1", text="A table for two at seven.", first_piece=False)
    audio = b"".join([a.pcm async for a in gated(lanes, tts, req)])
    first = b"".join([a.pcm async for a in gated(lanes, tts, req.model_copy(update={"first_piece": True}))])
    pcm = np.frombuffer(audio, "<i2")
    assert pcm.size > 16000 and np.abs(pcm).max() > 1000  # over a second of audible speech
    assert abs(len(first) - len(audio)) < 0.2 * len(audio)
    # Piper's sentence went through the lane (not asyncio's default threads); the first
    # piece did not, and the resampling to the call's rate followed its sentence.
    assert lanes.idle.steps >= 2
    steps = lanes.idle.steps
    _ = [a async for a in gated(lanes, tts, req.model_copy(update={"first_piece": True}))]
    assert lanes.idle.steps == steps


def _idle_threads(class_name: str) -> int:
    """Threads at SCHED_IDLE in the live actors of `class_name` (this session's Ray)."""
    idle = 0
    for pid in live_actor_pids(class_name):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                idle += os.sched_getscheduler(int(tid)) == os.SCHED_IDLE
            except OSError:  # the thread ended meanwhile
                continue
    return idle


@pytest.mark.e2e
@linux_only
async def test_the_deployed_tts_replica_synthesizes_a_reply_s_rest_on_an_idle_thread(voxray_server):
    from tests.wsclient import CallClient

    client = await CallClient.connect(f"ws://{voxray_server}/call")
    try:
        await client.send({"command": "invite", "option": {"codec": "pcm", "caller": "tester"}})
        await client.wait_for("answer", timeout=15)
        # Two pieces: "Certainly," first, the rest after it (media.tts_first_clause).
        await client.send({"command": "tts", "text": "Certainly, your table for two is booked for seven tonight.",
                           "playId": "lanes"})
        await client.wait_for("trackEnd", timeout=30, playId="lanes")
    finally:
        await client.close()
    assert _idle_threads("ServeReplica:voxray:TtsDeployment") >= 1
    # Nothing else in the replicas that carry calls runs at that priority.
    assert _idle_threads("ServeReplica:voxray:Ingress") == 0
