"""A model call the session gives up on stops on the replica too (voxray/media/services.py).

Serve leaves a request running on its replica when only the asyncio task awaiting it is
cancelled; a speculation the caller talked over would still be decoded, and an
interrupted reply still synthesized to its end, on the cores the live turns need. Here a
real Serve deployment stands in for the ASR and TTS replicas and says which of its
requests were cancelled.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from voxray.media.messages import AsrRequest, TtsRequest, VadBatch, VadBatchResult
from voxray.media.services import ServeModelServices

pytestmark = pytest.mark.e2e


async def _no_vad(batch: VadBatch) -> VadBatchResult:
    raise AssertionError("this test makes no VAD call")


def _probe_deployment():
    """Defined here so that Serve pickles it by value to its replica."""
    from ray import serve

    from voxray.media.messages import AsrResult, TtsAudio

    @serve.deployment(max_ongoing_requests=16)
    class ModelProbe:
        def __init__(self) -> None:
            self.seen: dict[str, str] = {}  # call id -> running, cancelled or finished

        async def _hold(self, call_id: str) -> None:
            self.seen[call_id] = "running"
            try:
                await asyncio.sleep(30)
                self.seen[call_id] = "finished"
            except asyncio.CancelledError:
                self.seen[call_id] = "cancelled"
                raise

        async def transcribe(self, req: AsrRequest) -> AsrResult:
            await self._hold(req.call_id)
            return AsrResult(text="never", provider="probe")

        async def synthesize(self, req: TtsRequest):
            yield TtsAudio(pcm=b"\0\0" * 320, sample_rate=req.sample_rate, provider="probe")
            await self._hold(req.call_id)

        async def state(self, call_id: str) -> str | None:
            return self.seen.get(call_id)

    return ModelProbe


async def _state(handle, call_id: str, want: str, timeout_s: float = 10.0) -> str | None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    state = None
    while asyncio.get_running_loop().time() < deadline:
        state = await handle.state.remote(call_id)
        if state == want:
            break
        await asyncio.sleep(0.1)
    return state


async def test_a_dropped_transcription_and_a_stopped_synthesis_are_cancelled_on_the_replica(voxray_server):
    from ray import serve

    app = f"cancel-probe-{uuid.uuid4().hex[:6]}"
    handle = await asyncio.to_thread(serve.run, _probe_deployment().bind(), name=app, route_prefix=None)
    try:
        services = ServeModelServices(None, handle, handle, vad_infer=_no_vad)

        asr_id = "asr-" + uuid.uuid4().hex[:8]
        task = asyncio.create_task(services.transcribe(AsrRequest(call_id=asr_id, pcm=b"\0\0" * 1600)))
        assert await _state(handle, asr_id, "running") == "running"
        task.cancel()  # what the listener does when the caller goes on after a pause
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _state(handle, asr_id, "cancelled") == "cancelled"

        tts_id = "tts-" + uuid.uuid4().hex[:8]
        stream = services.synthesize(TtsRequest(call_id=tts_id, text="A reply the caller interrupts."))
        first = await anext(stream)
        assert first.provider == "probe"
        assert await _state(handle, tts_id, "running") == "running"
        await stream.aclose()  # what the speaker does when the track is interrupted
        assert await _state(handle, tts_id, "cancelled") == "cancelled"
    finally:
        await asyncio.to_thread(serve.delete, app)
