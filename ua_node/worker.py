"""A UA worker: one process of a node's pool, holding SIP (pjsua2) or WebRTC (aiortc)
calls, never both (see ua_node/pool.py). The node (ua_node/actor.py) starts, pings and
routes calls to it; the ingress then talks to the worker that holds a call directly."""

from __future__ import annotations

import asyncio
import os
import time

import ray

from voxray import metrics
from voxray.faults import enable_fault_dumps
from voxray.logs import get_logger
from voxray.media.config import MediaConfig
from voxray.protocol import events as ev
from voxray.ua_node.node import CommandResult, UaNodeCore
from voxray.ua_node.pool import SIP, WEBRTC

log = get_logger("voxray.ua_node")


@ray.remote(num_cpus=0, max_restarts=-1)
class UaWorker:
    """Async actor: every method runs on one event loop, as the media sessions do."""

    def __init__(self, role: str, index: int, app_name: str = "voxray", media: dict | None = None,
                 transports: dict | None = None, admission: dict | None = None) -> None:
        enable_fault_dumps()
        from ray import serve

        from voxray.admission import Admission, AdmissionSettings
        from voxray.media.services import ServeModelServices

        self.role, self.index = role, index
        media_config = MediaConfig(**(media or {}))
        from voxray.media.echo import preload

        preload()  # an agent may turn echo cancellation on for its call: not a 0.3 s stall then
        gate = Admission(AdmissionSettings.model_validate(admission or {}),
                         on_limit=lambda v: metrics.set_gauge("admission_limit", v, where=f"ua_{role}{index}"))
        # The calls' audio is in this process: VAD runs here too, batched over its calls
        # (a Serve handle call per batch cost more than Silero's own work: bench/sip_media.py).
        local_vad = None
        if media_config.vad_in_process:
            from voxray.providers.silero_vad import InProcessVad

            local_vad = InProcessVad(media_config.vad_model)
        services = ServeModelServices(
            None if local_vad else serve.get_deployment_handle("VadDeployment", app_name),
            serve.get_deployment_handle("AsrDeployment", app_name),
            serve.get_deployment_handle("TtsDeployment", app_name),
            on_asr_time=gate.observe_asr, vad_window_s=media_config.vad_batch_window_ms / 1000,
            vad_infer=local_vad.infer if local_vad else None,
        )
        self.core = UaNodeCore(services, media_config, gate)
        self._transport_config = transports or {}
        self.started = time.time()
        # The transport comes up now, on the actor's loop: a worker restarted after a crash
        # listens for SIP again by itself, before anyone calls it.
        self._setup: asyncio.Task = asyncio.get_running_loop().create_task(self._setup_transport())

    async def _transport_up(self) -> None:
        """One setup at a time; a failed one is tried again on the next call."""
        if self._setup.done() and self._setup.exception() is not None:
            log.warning("transport setup failed; retrying", extra={"error": repr(self._setup.exception())})
            self._setup = asyncio.get_running_loop().create_task(self._setup_transport())
        await asyncio.shield(self._setup)

    async def _setup_transport(self) -> None:
        if self.role == WEBRTC and "webrtc" not in self.core.transports:
            from voxray.ua_node.webrtc import register as register_webrtc

            register_webrtc(self.core, self._transport_config.get("webrtc", {}))
        elif self.role == SIP and "sip" not in self.core.transports:
            from voxray.ua_node import sip

            await sip.register(self.core, self._transport_config.get("sip", {}))

    def _sip_port(self) -> int | None:
        if self.role != SIP:
            return None
        from voxray.ua_node import sip

        return sip.listening_port()

    async def ready(self) -> dict:
        """Health and load, as the node's pool reads them."""
        await self._transport_up()
        return {"role": self.role, "index": self.index, "pid": os.getpid(), "started": self.started,
                "transports": sorted(self.core.transports), "calls": self.core.live_calls(),
                "draining": self.core.draining, "sip_port": self._sip_port()}

    async def media_stats(self) -> dict:
        """Calls and the frames they moved (SIP workers); the bench reads it."""
        if self.role != SIP:
            return {"calls": self.core.live_calls(), "frames_in": 0, "frames_out": 0}
        from voxray.ua_node import sip

        return sip.media_stats()

    async def open_call(self, call_id: str, kind: str, option: dict) -> CommandResult:
        await self._transport_up()
        return await self.core.open_call(call_id, kind, option)

    async def command(self, call_id: str, command_json: str) -> CommandResult:
        return await self.core.command(call_id, command_json)

    async def next_events(self, call_id: str, timeout_s: float = 10.0) -> list[ev.EventBase] | None:
        return await self.core.next_events(call_id, timeout_s)

    async def end_call(self, call_id: str, reason: str, initiator: str) -> None:
        await self.core.end_call(call_id, reason, initiator)

    async def list_calls(self) -> list[dict]:
        return [{**c, "worker": f"{self.role}{self.index}"} for c in self.core.list_calls()]

    async def has_call(self, call_id: str) -> bool:
        return self.core.has_call(call_id)

    async def drain(self, timeout_s: float = 300.0) -> int:
        return await self.core.drain(timeout_s)

    async def undrain(self) -> None:
        self.core.undrain()

    async def shutdown(self) -> None:
        """End calls and stop the transport cleanly (SIP: BYEs, un-REGISTER) before the process goes."""
        await self.core.shutdown()
