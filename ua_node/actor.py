"""The UA node as a Ray actor (one per node; see cluster/placement.py)."""

from __future__ import annotations

import asyncio

import ray

from voxray import metrics
from voxray.faults import enable_fault_dumps
from voxray.logs import get_logger
from voxray.media.config import MediaConfig
from voxray.protocol import events as ev
from voxray.ua_node.node import CommandResult, UaNodeCore

log = get_logger("voxray.ua_node")


@ray.remote(num_cpus=0.25, max_restarts=-1)
class UaNode:
    """Async actor: every method runs on one event loop, as the media sessions do."""

    def __init__(self, app_name: str = "voxray", media: dict | None = None,
                 transports: dict | None = None, admission: dict | None = None) -> None:
        enable_fault_dumps()
        from ray import serve

        from voxray.admission import Admission, AdmissionSettings
        from voxray.media.services import ServeModelServices

        gate = Admission(AdmissionSettings.model_validate(admission or {}),
                         on_limit=lambda v: metrics.set_gauge("admission_limit", v, where="ua_node"))
        services = ServeModelServices(
            serve.get_deployment_handle("VadDeployment", app_name),
            serve.get_deployment_handle("AsrDeployment", app_name),
            serve.get_deployment_handle("TtsDeployment", app_name),
            on_asr_time=gate.observe_asr,
        )
        self.core = UaNodeCore(services, MediaConfig(**(media or {})), gate)
        self._transport_config = transports or {}
        self.node_id = ray.get_runtime_context().get_node_id()
        # Transports come up now, on the actor's loop: an actor restarted after a crash
        # listens for SIP again by itself, before anyone calls it.
        self._setup: asyncio.Task = asyncio.get_running_loop().create_task(self._setup_transports())

    async def _transports_up(self) -> None:
        """One setup at a time; a failed one is tried again on the next call."""
        if self._setup.done() and self._setup.exception() is not None:
            log.warning("transport setup failed; retrying", extra={"error": repr(self._setup.exception())})
            self._setup = asyncio.get_running_loop().create_task(self._setup_transports())
        await asyncio.shield(self._setup)

    async def ready(self) -> dict:
        await self._transports_up()
        return {"node_id": self.node_id, "transports": sorted(self.core.transports)}

    async def _setup_transports(self) -> None:
        if "webrtc" not in self.core.transports:
            try:
                from voxray.ua_node.webrtc import register as register_webrtc
            except ImportError:
                register_webrtc = None
            if register_webrtc is not None:
                register_webrtc(self.core, self._transport_config.get("webrtc", {}))
        if "sip" not in self.core.transports:
            try:
                from voxray.ua_node.sip import register as register_sip
            except ImportError:
                register_sip = None
            if register_sip is not None:
                await register_sip(self.core, self._transport_config.get("sip", {}))

    async def open_call(self, call_id: str, kind: str, option: dict) -> CommandResult:
        await self._transports_up()
        return await self.core.open_call(call_id, kind, option)

    async def command(self, call_id: str, command_json: str) -> CommandResult:
        return await self.core.command(call_id, command_json)

    async def next_events(self, call_id: str, timeout_s: float = 10.0) -> list[ev.EventBase] | None:
        return await self.core.next_events(call_id, timeout_s)

    async def end_call(self, call_id: str, reason: str, initiator: str) -> None:
        await self.core.end_call(call_id, reason, initiator)

    async def list_calls(self) -> list[dict]:
        return self.core.list_calls()

    async def has_call(self, call_id: str) -> bool:
        """Whether this node holds the (e.g. inbound SIP) call an agent asks for."""
        return self.core.has_call(call_id)

    async def drain(self, timeout_s: float = 300.0) -> int:
        """Take no new calls and wait for the live ones to end (bounded); returns how many are left.

        Call before removing the node (scale-down, upgrade); `shutdown` after it ends what is left.
        """
        return await self.core.drain(timeout_s)

    async def draining(self) -> bool:
        return self.core.draining

    async def undrain(self) -> None:
        """Take new calls again (a scale-down or upgrade that was called off)."""
        self.core.undrain()

    async def shutdown(self) -> None:
        """End calls and stop transports cleanly (SIP: BYEs, un-REGISTER) before the actor dies."""
        await self.core.shutdown()
