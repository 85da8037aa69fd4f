"""Call registry: which calls are up, on which ingress replica, and kill requests.

One small deployment shared by all ingress replicas. It is touched at call start
and end and by the HTTP API, never per audio frame. Kill requests reach the
replica that holds the call through a long poll each replica keeps open.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone

from pydantic import BaseModel
from ray import serve

from voxray.config import SecuritySettings
from voxray.deployments.cdr import CallRecord, CdrStore
from voxray import metrics
from voxray.faults import enable_fault_dumps
from voxray.logs import bind_call, get_logger

log = get_logger("voxray.registry")


class CallInfo(BaseModel):
    id: str
    replica: str
    path: str  # /call, /call/sip, /call/webrtc
    codec: str
    caller: str | None = None
    callee: str | None = None
    created_at: str  # ISO-8601
    answered_at: str | None = None
    node: str | None = None  # the Ray node of the replica: its loss ends the call


CALL_TYPES = {"/call": "websocket", "/call/webrtc": "webrtc", "/call/sip": "sip"}


def _call_type(info: CallInfo) -> str:
    return CALL_TYPES.get(info.path, info.path)


def _option(info: CallInfo) -> dict:
    return {"caller": info.caller, "callee": info.callee, "codec": info.codec}


def documented_listing(info: CallInfo) -> dict:
    """A call as active-call's docs list it (`GET /call/lists`: id, call_type, created_at,
    option), with voxray's own fields beside (replica, path, answered_at, ...)."""
    return {**info.model_dump(), "call_type": _call_type(info), "option": _option(info)}


def code_listing(info: CallInfo) -> dict:
    """A call as active-call's running code lists it (`GET /list`)."""
    return {"id": info.id, "callType": _call_type(info), "option": _option(info),
            "ringTime": None, "startTime": info.answered_at}


def lost_record(info: CallInfo, reason: str, when: str) -> CallRecord:
    """The call record of a call whose replica is gone and so wrote none itself."""
    return CallRecord(id=info.id, path=info.path, caller=info.caller, callee=info.callee, codec=info.codec,
                      start_time=info.created_at, answer_time=info.answered_at, hangup_time=when,
                      reason=reason, initiator="system")


class RegistryCore:
    """The registry's state and rules, free of Ray so it can be tested alone.

    A replica with calls long-polls `wait_kills` without pause (10 s per poll), so a
    replica not heard from for `replica_timeout_s` is gone (crashed, killed, scaled
    down hard) and its calls with it: they leave the list, and killing one is a 404.
    A node that Ray reports dead takes its replicas' calls at once (`forget_nodes`).
    Calls dropped either way wait in `lost` until their records are written.
    """

    def __init__(self, replica_timeout_s: float = 35.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.calls: dict[str, CallInfo] = {}
        self.replica_timeout_s = replica_timeout_s
        self._clock = clock
        self._seen: dict[str, float] = {}  # replica -> last register or poll
        self._polling: dict[str, int] = defaultdict(int)  # replica -> polls open now
        self._kills: dict[str, set[str]] = defaultdict(set)
        self._kill_events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.lost: list[tuple[CallInfo, str]] = []  # (call, reason) not yet recorded

    def _heard(self, replica: str) -> None:
        self._seen[replica] = self._clock()

    def _forget_silent(self) -> None:
        now = self._clock()
        for replica, last in list(self._seen.items()):
            if not self._polling[replica] and now - last > self.replica_timeout_s:
                self.forget_replica(replica, "replica_lost")

    def register(self, info: CallInfo) -> None:
        self._heard(info.replica)
        self.calls[info.id] = info

    def unregister(self, call_id: str) -> None:
        self.calls.pop(call_id, None)

    def sync(self, replica: str, calls: list[CallInfo]) -> None:
        """A replica's whole list of calls: after this registry was replaced (its state
        lives in memory) the replicas' next polls fill it again."""
        self._heard(replica)
        for cid in [c.id for c in self.calls.values() if c.replica == replica]:
            del self.calls[cid]
        for info in calls:
            self.calls[info.id] = info

    def list(self) -> list[CallInfo]:
        self._forget_silent()
        return sorted(self.calls.values(), key=lambda c: c.created_at)

    def request_kill(self, call_id: str) -> bool:
        self._forget_silent()
        info = self.calls.get(call_id)
        if info is None:
            return False
        self._kills[info.replica].add(call_id)
        self._kill_events[info.replica].set()
        return True

    async def wait_kills(self, replica: str, timeout_s: float) -> list[str]:
        self._heard(replica)
        self._polling[replica] += 1
        try:
            event = self._kill_events[replica]
            if not self._kills[replica]:
                try:
                    await asyncio.wait_for(event.wait(), timeout_s)
                except asyncio.TimeoutError:
                    pass
            event.clear()
            ids, self._kills[replica] = sorted(self._kills[replica]), set()
            return ids
        finally:
            self._polling[replica] -= 1
            self._heard(replica)

    def forget_replica(self, replica: str, reason: str = "replica_lost") -> None:
        """Drop a gone replica's calls (to `lost`) and its bookkeeping."""
        for cid in [c.id for c in self.calls.values() if c.replica == replica]:
            self.lost.append((self.calls.pop(cid), reason))
        for table in (self._seen, self._polling, self._kills, self._kill_events):
            table.pop(replica, None)

    def forget_nodes(self, dead: set[str]) -> None:
        """Drop the calls of replicas on nodes Ray reports dead: `node_lost`."""
        for replica in {c.replica for c in self.calls.values() if c.node in dead}:
            self.forget_replica(replica, "node_lost")

    def nodes(self) -> set[str]:
        return {c.node for c in self.calls.values() if c.node}

    def take_lost(self) -> list[tuple[CallInfo, str]]:
        self._forget_silent()
        lost, self.lost = self.lost, []
        return lost


def dead_nodes(candidates: set[str]) -> set[str]:
    """Which of these Ray nodes Ray reports dead (a blocking GCS call: run it off the loop)."""
    import ray

    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    return {n for n in candidates if n not in alive}


# On the head node: the list of calls and the records of lost ones must outlive any
# worker node (a cluster that loses its head is gone anyway).
@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}},
                  max_ongoing_requests=1000)
class CallRegistry:
    SWEEP_S = 2.0  # how soon a lost node's calls leave the list and get their records

    def __init__(self, cdr_path: str | None = None) -> None:
        enable_fault_dumps()
        self.core = RegistryCore()
        self.cdr = CdrStore(cdr_path or SecuritySettings().cdr_path)  # CdrStore expands ~
        self._sweeper: asyncio.Task | None = None

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.SWEEP_S)
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("registry sweep failed", extra={"error": repr(exc)})

    async def sweep(self) -> None:
        """Calls whose node died or whose replica went silent: off the list, with a record."""
        nodes = self.core.nodes()
        if nodes:
            self.core.forget_nodes(await asyncio.to_thread(dead_nodes, nodes))
        lost = self.core.take_lost()
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        for info, reason in lost:
            with bind_call(info.id):
                log.warning("call lost with its replica", extra={"reason": reason, "replica": info.replica,
                                                                 "node": info.node})
            metrics.inc("calls_total", path=info.path, reason=reason)
            await self.cdr.add(lost_record(info, reason, now))

    async def record(self, rec: CallRecord) -> None:
        await self.cdr.add(rec)

    async def records(self, limit: int = 100, call_id: str | None = None) -> list[CallRecord]:
        return await self.cdr.list(limit, call_id)

    async def annotate(self, call_id: str, notes: dict) -> dict:
        return await self.cdr.annotate(call_id, notes)

    async def register(self, info: CallInfo) -> None:
        self._ensure_sweeper()
        self.core.register(info)

    async def unregister(self, call_id: str) -> None:
        self.core.unregister(call_id)

    async def sync(self, replica: str, calls: list[CallInfo]) -> None:
        self._ensure_sweeper()
        self.core.sync(replica, calls)

    async def list(self) -> list[CallInfo]:
        self._ensure_sweeper()  # lost nodes' calls leave the list within a sweep (SWEEP_S)
        return self.core.list()

    async def request_kill(self, call_id: str) -> bool:
        return self.core.request_kill(call_id)

    async def wait_kills(self, replica: str, timeout_s: float = 10.0) -> list[str]:
        return await self.core.wait_kills(replica, timeout_s)
