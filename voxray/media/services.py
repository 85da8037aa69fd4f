"""How a media session reaches the models: the `ModelServices` seam and its Serve adapter.

`ModelServices` is what a session needs (VAD, ASR, TTS). `ServeModelServices` fills
it through Serve deployment handles, retried while a failed replica is replaced;
`deployments.services.LocalModelServices` loads the same models in-process (tests,
bench); tests of the session's logic fill it with fakes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from voxray.logs import get_logger
from voxray.media.messages import (
    AsrRequest, AsrResult, TtsAudio, TtsRequest, VadBatch, VadBatchResult, VadChunk, VadChunkResult,
)
from voxray.media.vad_batcher import VadBatcher

log = get_logger("voxray.services")


class ModelServices(Protocol):
    async def vad(self, chunk: VadChunk) -> VadChunkResult: ...
    async def transcribe(self, req: AsrRequest) -> AsrResult: ...
    def synthesize(self, req: TtsRequest) -> AsyncIterator[TtsAudio]: ...


def _replica_failures() -> tuple[type[BaseException], ...]:
    """Errors that mean 'the replica went away', worth a retry (Serve routes to a live one)."""
    import ray.exceptions as rex
    import ray.serve.exceptions as sex

    return (rex.RayActorError, rex.ActorUnavailableError, rex.NodeDiedError,
            sex.ReplicaUnavailableError, sex.DeploymentUnavailableError)


class ServeModelServices:
    """Model calls through Serve handles, retried while a failed replica is replaced
    (VAD may instead run in this process: `vad_infer`)."""

    def __init__(self, vad_handle, asr_handle, tts_handle, retry_for_s: float = 30.0,
                 on_asr_time: Callable[[float], None] | None = None, vad_window_s: float = 0.0,
                 vad_infer: Callable[[VadBatch], Awaitable[VadBatchResult]] | None = None) -> None:
        self._asr = asr_handle
        self.on_asr_time = on_asr_time  # admission control watches how long ASR takes to answer
        self._tts = tts_handle
        if vad_handle is None and vad_infer is None:
            raise ValueError("VAD needs the VadDeployment's handle or an in-process model")
        self._vad = vad_handle
        self.retry_for_s = retry_for_s
        self._retryable = _replica_failures()
        # vad_infer: the model in this process (the ingress's /call sessions), else the VadDeployment.
        self.vad_batcher = VadBatcher(vad_infer or self._vad_infer, window_s=vad_window_s)

    async def _retrying(self, what: str, call, failures: list[str]):
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.1
        while True:
            response = call()
            try:
                return await response
            except asyncio.CancelledError:
                # Serve leaves the request running on the replica when only the task awaiting
                # it is cancelled: a speculation the caller talked over would still be decoded.
                response.cancel()
                raise
            except self._retryable as exc:
                failures.append(f"{what} replica: {type(exc).__name__}")
                log.warning("replica failed; retrying", extra={"what": what, "error": repr(exc)[:300]})
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _vad_infer(self, batch: VadBatch) -> VadBatchResult:
        return await self._retrying("vad", lambda: self._vad.infer.remote(batch), [])

    async def vad(self, chunk: VadChunk) -> VadChunkResult:
        return await self.vad_batcher.submit(chunk)

    async def transcribe(self, req: AsrRequest) -> AsrResult:
        failures: list[str] = []
        t0 = time.monotonic()
        result = await self._retrying("asr", lambda: self._asr.transcribe.remote(req), failures)
        if self.on_asr_time is not None:
            self.on_asr_time(time.monotonic() - t0)
        # The agent learns of the lost replica through the fallback metrics.
        return result.model_copy(update={"failures": failures + result.failures}) if failures else result

    async def synthesize(self, req: TtsRequest) -> AsyncIterator[TtsAudio]:
        failures: list[str] = []
        deadline = time.monotonic() + self.retry_for_s
        while True:
            sent = False
            stream = self._tts.options(stream=True).synthesize.remote(req)
            try:
                async for audio in stream:
                    if not sent and failures:
                        audio = audio.model_copy(update={"failures": failures + audio.failures})
                    sent = True
                    yield audio
                return
            except (GeneratorExit, asyncio.CancelledError):
                # The track stopped (interrupt, hangup) before its last piece: so does its
                # synthesis on the replica, which cancelling this side alone would not stop.
                stream.cancel()
                raise
            except self._retryable as exc:
                # Audio already played cannot be taken back: retry only before the first chunk.
                if sent or time.monotonic() > deadline:
                    raise
                failures.append(f"tts replica: {type(exc).__name__}")
                log.warning("replica failed; retrying", extra={"what": "tts", "error": repr(exc)[:300]})
                await asyncio.sleep(0.2)
