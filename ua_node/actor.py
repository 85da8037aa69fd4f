"""The UA node: one Ray actor per node (see cluster/placement.py) that runs the node's
pool of UA workers and its SIP front, and tells the ingress which worker holds a call.

It holds no call itself and loads neither pjsua2 nor aiortc: SIP workers run pjsua2,
WebRTC workers aiortc, each in its own process (ua_node/worker.py). It starts them
pinned to this node, pings them, restarts one that stops answering (Ray restarts one
that died), keeps Kamailio's list of SIP workers current, and fans drain and shutdown
out to them. A worker that dies takes only its own calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from voxray import metrics
from voxray.admission import AdmissionSettings
from voxray.faults import enable_fault_dumps
from voxray.logs import get_logger
from voxray.ua_node.config import PoolSettings
from voxray.ua_node.front.config import FrontDestination
from voxray.ua_node.front.process import KamailioFront, kamailio_path
from voxray.ua_node.pool import SIP, WEBRTC, WorkerState, choose, plan, sip_worker_count, use_front
from voxray.ua_node.sip.config import SipSettings

log = get_logger("voxray.ua_node")

NAMESPACE = "voxray"


def _free_udp_port(bind: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((bind, 0))
        return s.getsockname()[1]


@ray.remote(num_cpus=0.25, max_restarts=-1)
class UaNode:
    def __init__(self, app_name: str = "voxray", media: dict | None = None,
                 transports: dict | None = None, admission: dict | None = None) -> None:
        enable_fault_dumps()
        transports = dict(transports or {})
        self.pool = PoolSettings.model_validate(transports.get("pool") or {})
        self.sip = SipSettings.model_validate(transports.get("sip") or {})
        self.node_id = ray.get_runtime_context().get_node_id()
        cpus = next((int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n["NodeID"] == self.node_id), 1)
        kamailio = kamailio_path(self.pool.front) is not None
        front = use_front(self.pool, sip_worker_count(self.pool, self.sip), kamailio)
        if front and not self.sip.port:  # the front needs its port before the workers are told it
            self.sip = self.sip.model_copy(update={"port": _free_udp_port(self.sip.bind)})
        specs = plan(self.pool, self.sip, cpus, front, lambda: _free_udp_port(self.sip.bind))
        self.front = None
        if front:
            self.front = KamailioFront(self.pool.front, bind=self.sip.bind, port=self.sip.port,
                                       public_address=self.sip.public_address,
                                       trusted=self.sip.trusted_sources,
                                       retry_after_s=AdmissionSettings.model_validate(admission or {}).retry_after_s)
        self.workers: dict[str, tuple[object, WorkerState]] = {}
        for spec in specs:
            own = dict(transports)
            if spec.sip is not None:
                own["sip"] = spec.sip
            handle = self._worker(spec.key, spec.role, spec.index, app_name, media, own, admission)
            self.workers[spec.key] = (handle, WorkerState(spec))
        log.info("ua node starting", extra={"workers": sorted(self.workers), "front": bool(front)})
        self._setup = asyncio.get_running_loop().create_task(self._start())
        self._health: asyncio.Task | None = None

    def _worker(self, key: str, role: str, index: int, app_name: str, media, transports, admission):
        from voxray.ua_node.worker import UaWorker

        return UaWorker.options(
            name=f"voxray-ua-{self.node_id[:16]}-{key}", namespace=NAMESPACE, lifetime="detached",
            get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=self.node_id, soft=False),
        ).remote(role, index, app_name, media, transports, admission)

    # -- start and health ------------------------------------------------------------------

    async def _start(self) -> None:
        await asyncio.gather(*(self._ping(key, timeout=120) for key in self.workers))
        missing = [k for k, (_, st) in self.workers.items() if not st.up]
        if missing:
            raise RuntimeError(f"UA workers did not start: {missing}")
        if self.front is not None:
            await self.front.start(self._destinations())
        self._health = asyncio.get_running_loop().create_task(self._watch())

    def _destinations(self) -> list[FrontDestination]:
        return [FrontDestination(f"sip:{self.sip.bind}:{st.sip_port}", f"{key}-{st.pid}", self.sip.calls_per_worker)
                for key, (_, st) in sorted(self.workers.items())
                if st.spec.role == SIP and st.sip_port is not None]

    async def _ping(self, key: str, timeout: float) -> None:
        handle, st = self.workers[key]
        try:
            info = await asyncio.wait_for(handle.ready.remote(), timeout)
        except asyncio.TimeoutError:
            missed = st.missed_ping()
            log.warning("ua worker did not answer", extra={"worker": key, "missed": missed})
            if missed == 3:  # hung, not dead (Ray restarts the dead): a new process
                try:
                    ray.kill(handle, no_restart=False)
                except Exception as exc:
                    log.warning("ua worker restart failed", extra={"worker": key, "error": repr(exc)})
            return
        except Exception as exc:  # died: Ray is bringing it back
            if st.up:
                log.warning("ua worker lost", extra={"worker": key, "error": type(exc).__name__})
            st.missed_ping()
            return
        if st.heard(info):
            log.warning("ua worker restarted", extra={"worker": key, "pid": st.pid, "restarts": st.restarts})
            metrics.inc("ua_worker_restarts", worker=key)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.pool.health_interval_s)
            try:
                await self._check()
            except Exception as exc:  # the watch never stops
                log.warning("ua worker check failed", extra={"error": repr(exc)})

    async def _check(self) -> None:
        await asyncio.gather(*(self._ping(k, self.pool.health_timeout_s) for k in self.workers))
        for role in (SIP, WEBRTC):
            metrics.set_gauge("ua_workers_up", sum(1 for _, st in self.workers.values()
                                                   if st.spec.role == role and st.up), role=role)
        if self.front is not None:
            await self.front.set_destinations(self._destinations())

    async def ready(self) -> dict:
        await asyncio.shield(self._setup)
        kinds = sorted({t for _, st in self.workers.values() for t in st.info.get("transports", [])})
        return {"node_id": self.node_id, "transports": kinds, "front": self.front.uri if self.front else None,
                "workers": {k: {"role": st.spec.role, "pid": st.pid, "up": st.up, "calls": st.calls,
                                "sip_port": st.sip_port, "restarts": st.restarts}
                            for k, (_, st) in sorted(self.workers.items())}}

    # -- calls -----------------------------------------------------------------------------

    async def place(self, kind: str):
        """The worker a new call of `kind` goes to (least loaded), or None if none can take it."""
        await asyncio.shield(self._setup)
        per_worker = self.sip.calls_per_worker if kind == SIP else None
        st = choose((st for _, st in self.workers.values()), kind, per_worker)
        if st is None:
            return None
        st.calls += 1  # until its next health answer says otherwise
        return self.workers[st.spec.key][0]

    async def find_call(self, call_id: str):
        """The worker holding call_id (an inbound SIP call waiting for its agent), or None."""
        await asyncio.shield(self._setup)
        handles = [h for h, st in self.workers.values() if st.spec.role == SIP]
        found = await asyncio.gather(*(h.has_call.remote(call_id) for h in handles), return_exceptions=True)
        return next((h for h, ok in zip(handles, found, strict=True) if ok is True), None)

    async def list_calls(self) -> list[dict]:
        lists = await asyncio.gather(*(h.list_calls.remote() for h, _ in self.workers.values()),
                                     return_exceptions=True)
        return [c for calls in lists if isinstance(calls, list) for c in calls]

    async def worker(self, key: str):
        """A worker's handle by its key (sip0, webrtc1, ...): for tests and the bench."""
        return self.workers[key][0]

    async def front_state(self) -> dict | None:
        """The SIP front's view (None without one): each worker's flags and the calls Kamailio
        counts on it, which decide whether a new INVITE finds a slot; its dialogs by state;
        and its log's tail."""
        await asyncio.shield(self._setup)
        if self.front is None:
            return None
        targets, dialogs = await asyncio.gather(self.front.targets(), self.front.dialogs())
        return {"targets": [dataclasses.asdict(t) for t in targets], "dialogs": dialogs,
                "log_tail": self.front.log_tail(2000)}

    async def worker_pids(self) -> dict[str, int | None]:
        return {k: st.pid for k, (_, st) in self.workers.items()}

    # -- drain and shutdown ----------------------------------------------------------------

    async def drain(self, timeout_s: float = 300.0) -> int:
        """Take no new calls and wait for the live ones to end (bounded); returns how many are left.

        Call before removing the node (scale-down, upgrade); `shutdown` after it ends what is left.
        """
        await asyncio.shield(self._setup)
        if self.front is not None:
            await self.front.set_draining(True)
        left = await asyncio.gather(*(h.drain.remote(timeout_s) for h, _ in self.workers.values()),
                                    return_exceptions=True)
        return sum(n for n in left if isinstance(n, int))

    async def draining(self) -> bool:
        infos = await asyncio.gather(*(h.ready.remote() for h, _ in self.workers.values()), return_exceptions=True)
        return any(isinstance(i, dict) and i.get("draining") for i in infos)

    async def undrain(self) -> None:
        """Take new calls again (a scale-down or upgrade that was called off)."""
        await asyncio.gather(*(h.undrain.remote() for h, _ in self.workers.values()), return_exceptions=True)
        if self.front is not None:
            await self.front.set_draining(False)

    async def shutdown(self) -> None:
        """End calls and stop transports cleanly (SIP: BYEs, un-REGISTER), then the workers and the front."""
        if self._health is not None:
            self._health.cancel()
        handles = [h for h, _ in self.workers.values()]
        await asyncio.gather(*(asyncio.wait_for(h.shutdown.remote(), 10) for h in handles), return_exceptions=True)
        for h in handles:
            try:
                ray.kill(h, no_restart=True)
            except Exception:
                pass
        if self.front is not None:
            await self.front.stop()

    def pid(self) -> int:
        return os.getpid()
