"""Call registry: which calls are up, on which ingress replica, and kill requests.

One small deployment shared by all ingress replicas. It is touched at call start
and end and by the HTTP API, never per audio frame. Kill requests reach the
replica that holds the call through a long poll each replica keeps open.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from pydantic import BaseModel
from ray import serve

from voxray.config import SecuritySettings
from voxray.deployments.cdr import CallRecord, CdrStore
from voxray.faults import enable_fault_dumps


class CallInfo(BaseModel):
    id: str
    replica: str
    path: str  # /call, /call/sip, /call/webrtc
    codec: str
    caller: str | None = None
    callee: str | None = None
    created_at: str  # ISO-8601
    answered_at: str | None = None


class RegistryCore:
    """The registry's state and rules, free of Ray so it can be tested alone."""

    def __init__(self) -> None:
        self.calls: dict[str, CallInfo] = {}
        self._kills: dict[str, set[str]] = defaultdict(set)
        self._kill_events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def register(self, info: CallInfo) -> None:
        self.calls[info.id] = info

    def unregister(self, call_id: str) -> None:
        self.calls.pop(call_id, None)

    def list(self) -> list[CallInfo]:
        return sorted(self.calls.values(), key=lambda c: c.created_at)

    def request_kill(self, call_id: str) -> bool:
        info = self.calls.get(call_id)
        if info is None:
            return False
        self._kills[info.replica].add(call_id)
        self._kill_events[info.replica].set()
        return True

    async def wait_kills(self, replica: str, timeout_s: float) -> list[str]:
        event = self._kill_events[replica]
        if not self._kills[replica]:
            try:
                await asyncio.wait_for(event.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        event.clear()
        ids, self._kills[replica] = sorted(self._kills[replica]), set()
        return ids

    def forget_replica(self, replica: str) -> None:
        for cid in [c.id for c in self.calls.values() if c.replica == replica]:
            del self.calls[cid]


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class CallRegistry:
    def __init__(self, cdr_path: str | None = None) -> None:
        enable_fault_dumps()
        self.core = RegistryCore()
        self.cdr = CdrStore(cdr_path or SecuritySettings().cdr_path)  # CdrStore expands ~

    async def record(self, rec: CallRecord) -> None:
        await self.cdr.add(rec)

    async def records(self, limit: int = 100, call_id: str | None = None) -> list[CallRecord]:
        return await self.cdr.list(limit, call_id)

    async def register(self, info: CallInfo) -> None:
        self.core.register(info)

    async def unregister(self, call_id: str) -> None:
        self.core.unregister(call_id)

    async def list(self) -> list[CallInfo]:
        return self.core.list()

    async def request_kill(self, call_id: str) -> bool:
        return self.core.request_kill(call_id)

    async def wait_kills(self, replica: str, timeout_s: float = 10.0) -> list[str]:
        return await self.core.wait_kills(replica, timeout_s)
