"""`CallMedia` for calls whose media a UA node holds (SIP/RTP, WebRTC).

Commands go to the UA node one actor call each; events come back by long poll,
a batch per poll. Audio never passes through here.
"""

from __future__ import annotations

import asyncio

from voxray.deployments.call_media import Emit
from voxray.logs import get_logger
from voxray.protocol import commands as cmd
from voxray.protocol import events as ev
from voxray.protocol.errors import ProtocolError

log = get_logger("voxray.remote_media")


class RemoteMedia:
    inbound = False

    def __init__(self, ua_node, call_id: str, kind: str, emit: Emit, channel) -> None:
        self.ua = ua_node
        self.call_id = call_id
        self.kind = kind
        self._emit = emit
        self._channel = channel  # for hangups that the peer starts
        self._pump: asyncio.Task | None = None
        # The UA node watches RTP activity itself (inactivityTimeout -> hangup event).
        self.last_activity = float("inf")
        self._closing = False

    async def start(self, option: cmd.CallOption) -> ev.EventBase | None:
        result = await self.ua.open_call.remote(self.call_id, self.kind, option.model_dump(by_alias=True))
        if not result.ok:
            raise ProtocolError(result.error or "call setup failed", result.code or 500)
        self._pump = asyncio.get_running_loop().create_task(self._pump_events())
        return None  # the UA node's own `answer` event arrives through the pump

    async def _next_batch(self) -> list[ev.EventBase] | None:
        """The next events of the call; None once the UA node no longer holds it (or is gone)."""
        try:
            return await self.ua.next_events.remote(self.call_id, 10.0)
        except Exception as exc:
            log.warning("ua node unreachable", extra={"error": repr(exc)})
            return None

    async def _pump_events(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                if not self._closing:
                    await self._channel.hangup("media_lost", "system")
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
