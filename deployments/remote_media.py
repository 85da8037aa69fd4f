"""`CallMedia` for calls whose media a UA worker holds (SIP/RTP, WebRTC).

The node's UA node picks the worker (`place`); from then on commands go to that
worker one actor call each and events come back by long poll, a batch per poll.
Audio never passes through here. A worker process that dies ends its calls with
`hangup` reason `ua_worker_lost`; `node_lost` when its whole node went.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ray.exceptions import ActorUnavailableError, RayActorError

from voxray.deployments.call_media import Emit
from voxray.logs import get_logger
from voxray.protocol import commands as cmd
from voxray.protocol import events as ev
from voxray.protocol.errors import ProtocolError

log = get_logger("voxray.remote_media")


def lost_reason(exc: BaseException) -> str:
    """Why a worker call failed for good: its node died (GCS says so in the error's
    text, the only place Ray puts it), or just the worker process."""
    return "node_lost" if "node has died" in str(exc) else "ua_worker_lost"


class RemoteMedia:
    inbound = False

    def __init__(self, worker, call_id: str, kind: str, emit: Emit, channel,
                 place: Callable[[], Awaitable[object]] | None = None) -> None:
        self.ua = worker  # the UA worker holding the call; None until `place` picks one
        self._place = place
        self.call_id = call_id
        self.kind = kind
        self._emit = emit
        self._channel = channel  # for hangups that the peer starts
        self._pump: asyncio.Task | None = None
        # The UA node watches RTP activity itself (inactivityTimeout -> hangup event).
        self.last_activity = float("inf")
        self._closing = False

    async def start(self, option: cmd.CallOption) -> ev.EventBase | None:
        if self.ua is None and self._place is not None:
            self.ua = await self._place()
        if self.ua is None:
            raise ProtocolError(f"no UA worker can take a {self.kind} call now; place the call again", 503)
        result = await self.ua.open_call.remote(self.call_id, self.kind, option.model_dump(by_alias=True))
        if not result.ok:
            raise ProtocolError(result.error or "call setup failed", result.code or 500)
        self._pump = asyncio.get_running_loop().create_task(self._pump_events())
        return None  # the UA node's own `answer` event arrives through the pump

    async def _next_batch(self) -> list[ev.EventBase] | str:
        """The next events of the call, or why there are none any more: the worker no
        longer holds the call (`media_lost`) or its process died (`ua_worker_lost`)."""
        try:
            batch = await self.ua.next_events.remote(self.call_id, 10.0)
        except (RayActorError, ActorUnavailableError) as exc:
            log.warning("ua worker lost", extra={"error": type(exc).__name__})
            return lost_reason(exc)
        except Exception as exc:
            log.warning("ua worker unreachable", extra={"error": repr(exc)})
            return "media_lost"
        return "media_lost" if batch is None else batch

    async def _pump_events(self) -> None:
        while True:
            batch = await self._next_batch()
            if isinstance(batch, str):
                if not self._closing:
                    await self._channel.hangup(batch, "system")
                return
            for event in batch:
                if isinstance(event, ev.HangupEvent):
                    if not self._closing:
                        asyncio.get_running_loop().create_task(
                            self._channel.hangup(event.reason or "hangup", event.initiator or "caller"))
                    return
                await self._emit(event)

    async def feed(self, payload: bytes) -> None:
        raise ProtocolError(f"audio travels over {self.kind} on this path; binary frames are not accepted", 400)

    async def command(self, c: cmd.Command) -> None:
        result = await self.ua.command.remote(self.call_id, c.model_dump_json(by_alias=True))
        if not result.ok:
            raise ProtocolError(result.error or "command failed", result.code or 500)

    async def close(self, reason: str) -> None:
        self._closing = True
        try:
            await self.ua.end_call.remote(self.call_id, reason, "agent")
        except Exception as exc:
            log.warning("ua node end_call failed", extra={"error": repr(exc)})
        if self._pump and self._pump is not asyncio.current_task():
            self._pump.cancel()
