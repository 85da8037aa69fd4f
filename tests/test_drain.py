"""Draining a UA node: no new calls, live calls go on to their end, bounded wait."""

from __future__ import annotations

import asyncio

from voxray.protocol import events as ev
from voxray.ua_node.node import UaNodeCore
from voxray.ua_node.transport import MediaTransport


class SilentTransport(MediaTransport):
    kind = "pipe"

    async def close(self) -> None:
        pass


class NoModels:
    """No audio flows in these calls, so no model is ever asked."""

    async def vad(self, chunk):
        raise AssertionError("unexpected VAD call")

    async def transcribe(self, req):
        raise AssertionError("unexpected ASR call")

    async def synthesize(self, req):
        raise AssertionError("unexpected TTS call")
        yield


def _core() -> UaNodeCore:
    core = UaNodeCore(NoModels())

    async def factory(cid, opt):
        return SilentTransport(), ev.Answer(track_id=cid)

    core.register_transport("pipe", factory)
    return core


async def test_drain_refuses_new_calls_and_waits_for_live_ones():
    core = _core()
    assert (await core.open_call("live", "pipe", {})).ok
    drain = asyncio.create_task(core.drain(timeout_s=10))
    await asyncio.sleep(0.3)
    assert not drain.done()  # the live call holds it
    refused = await core.open_call("new", "pipe", {})
    assert not refused.ok and refused.code == 503
    # The live call is untouched: it still takes commands.
    assert (await core.command("live", '{"command":"pause"}')).ok
    await core.end_call("live", "done", "agent")
    assert await asyncio.wait_for(drain, 5) == 0


async def test_drain_gives_up_after_its_timeout_and_reports_what_is_left():
    core = _core()
    assert (await core.open_call("stuck", "pipe", {})).ok
    t0 = asyncio.get_running_loop().time()
    assert await core.drain(timeout_s=0.5) == 1
    assert asyncio.get_running_loop().time() - t0 < 2
    await core.shutdown()  # what the operator does next: end what is left
    assert core.live_calls() == 0
