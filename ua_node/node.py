"""The UA node: one per Ray node, holding the SIP/RTP and WebRTC calls that node serves.

Each call here pairs a network transport with a MediaSession; the models are
reached through Serve handles (VAD batched across this node's calls). The agent's
WebSocket stays on the ingress, which forwards commands here and long-polls
events back (a batch per poll, never a call per audio frame).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from voxray.admission import Admission, AdmissionSettings, Refusal
from voxray.media.commands import SessionSink, apply_command
from voxray.logs import bind_call, get_logger
from voxray.protocol import commands as cmd
from voxray.protocol import events as ev
from voxray.protocol import rules
from voxray.protocol.errors import ProtocolError
from voxray.media.services import ModelServices
from voxray.media.config import MediaConfig
from voxray.media.session import MediaSession
from voxray.ua_node.transport import MediaTransport

log = get_logger("voxray.ua_node")

# Opens a transport for a new call: (call_id, option) -> (transport, answer event or None)
TransportFactory = Callable[[str, cmd.CallOption], Awaitable[tuple[MediaTransport, ev.EventBase | None]]]
# Handles a command itself (True) or leaves it to the media session (False).
CommandHandler = Callable[["NodeCall", cmd.Command], Awaitable[bool]]


class CommandResult(BaseModel):
    ok: bool = True
    error: str | None = None
    code: int | None = None


class NodeCall:
    def __init__(self, call_id: str, kind: str, option: cmd.CallOption) -> None:
        self.call_id = call_id
        self.kind = kind
        self.option = option
        self.events: asyncio.Queue[ev.EventBase] = asyncio.Queue()
        self.transport: MediaTransport | None = None
        self.session: MediaSession | None = None
        self.ended = False
        self.finished = False  # ended and its hangup event queued: the last event
        self.polled = True  # an agent (through the ingress) reads this call's events
        self.created = time.time()
        self.watchdog: asyncio.Task | None = None  # inactivity timeout

    def put(self, event: ev.EventBase) -> None:
        """Queue an event for the agent's next poll (events cross Ray as models, never as JSON)."""
        if event.track_id is None:
            event.track_id = self.call_id
        self.events.put_nowait(event)

    async def emit(self, event: ev.EventBase) -> None:
        """The session's and the node's own events (the session's sink awaits its emit)."""
        self.put(event)

    def from_transport(self, event: ev.EventBase) -> None:
        """The transport's events; none once the call is ending (its hangup is the last word)."""
        if not self.ended:
            self.put(event)


class UaNodeCore:
    """The node's calls and their life cycle, without Ray (tests drive it directly)."""

    def __init__(self, services: ModelServices, media_config: MediaConfig | None = None,
                 admission: Admission | None = None) -> None:
        self.services = services
        self.admission = admission
        if admission is not None:
            admission.count_active = self.live_calls
        self.media_config = media_config or MediaConfig()
        self.calls: dict[str, NodeCall] = {}
        self.transports: dict[str, TransportFactory] = {}
        self.command_handlers: dict[str, CommandHandler] = {}
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        # Set by drain(): the node is leaving (scale-down, upgrade), takes no new calls
        # and lets the live ones end. Transports with inbound calls check it too (SIP: 503).
        self.draining = False
        self._calls_changed = asyncio.Event()

    def register_transport(self, kind: str, factory: TransportFactory) -> None:
        self.transports[kind] = factory

    def register_command_handler(self, kind: str, handler: CommandHandler) -> None:
        """Commands a transport handles itself (SIP: accept/reject/ringing/refer) before the session."""
        self.command_handlers[kind] = handler

    def add_shutdown_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        self.shutdown_hooks.append(hook)

    def add_call(self, call: NodeCall) -> None:
        """A call a transport created before any agent (inbound SIP); the agent attaches later."""
        call.polled = False
        self.calls[call.call_id] = call
        if call.transport is not None:
            call.transport.wire_events(call.from_transport)

    def has_call(self, call_id: str) -> bool:
        call = self.calls.get(call_id)
        return call is not None and not call.ended

    async def shutdown(self) -> None:
        for call_id in [c.call_id for c in self.calls.values() if not c.ended]:
            await self.end_call(call_id, "shutdown", "system")
        for hook in self.shutdown_hooks:
            try:
                await hook()
            except Exception as exc:
                log.warning("shutdown hook failed", extra={"error": repr(exc)})

    def live_calls(self) -> int:
        return sum(1 for c in self.calls.values() if not c.ended)

    async def drain(self, timeout_s: float = 300.0) -> int:
        """Refuse new calls and wait (bounded) for the live ones to end; returns how many are left."""
        self.draining = True
        log.info("draining", extra={"live_calls": self.live_calls()})
        deadline = time.monotonic() + timeout_s
        while self.live_calls() and time.monotonic() < deadline:
            self._calls_changed.clear()
            try:
                await asyncio.wait_for(self._calls_changed.wait(), min(1.0, max(0.0, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                pass
        return self.live_calls()

    def refusal(self) -> Refusal | None:
        """Why this node takes no new call now (draining, at capacity, overloaded), or None."""
        if self.draining:
            return Refusal("draining", "this node is draining")
        if self.admission is not None:
            return self.admission.refusal()
        return None

    @property
    def retry_after_s(self) -> int:
        """What refused callers are told to wait."""
        return (self.admission.settings if self.admission is not None else AdmissionSettings()).retry_after_s

    def undrain(self) -> None:
        self.draining = False
        log.info("draining called off", extra={"live_calls": self.live_calls()})

    async def open_call(self, call_id: str, kind: str, option: dict) -> CommandResult:
        why = self.refusal()
        if why is not None:
            with bind_call(call_id):
                log.warning("call refused", extra={"why": why.text})
            return CommandResult(ok=False, error=f"{why.text}; place the call again", code=503)
        if call_id in self.calls:
            return CommandResult(ok=False, error=f"call id '{call_id}' is in use", code=409)
        factory = self.transports.get(kind)
        if factory is None:
            return CommandResult(ok=False, error=f"this node has no '{kind}' transport", code=501)
        call = NodeCall(call_id, kind, cmd.CallOption.model_validate(option))
        self.calls[call_id] = call
        with bind_call(call_id):
            try:
                transport, answer = await factory(call_id, call.option)
            except ProtocolError as exc:
                self.calls.pop(call_id, None)
                return CommandResult(ok=False, error=exc.message, code=exc.code)
            self.attach(call, transport)
            if answer is not None:
                await call.emit(answer)
            log.info("call opened", extra={"kind": kind})
        return CommandResult()

    def attach(self, call: NodeCall, transport: MediaTransport) -> None:
        """Start the media session of a call whose transport is up."""
        call.transport = transport
        # The transport speaks 16 kHz PCM to the session; codecs live in the transport.
        option = call.option.model_copy(update={"codec": "pcm"})
        sink = SessionSink(call.emit, transport.send_audio,
                           lambda reason, initiator: self.end_call(call.call_id, reason, initiator),
                           clear_audio=transport.clear_output)
        call.session = MediaSession(call.call_id, option, self.services, sink, self.media_config,
                                    played=transport.playout_log)
        transport.on_audio = call.session.feed
        transport.on_closed = lambda reason, initiator: asyncio.get_running_loop().create_task(
            self.end_call(call.call_id, reason, initiator))
        transport.wire_events(call.from_transport)
        call.session.start()
        if call.option.inactivity_timeout:
            call.watchdog = asyncio.get_running_loop().create_task(self._watch_inactivity(call))
        if transport.closed_early is not None:  # the peer left while the call was being set up
            asyncio.get_running_loop().create_task(self.end_call(call.call_id, *transport.closed_early))

    async def _watch_inactivity(self, call: NodeCall) -> None:
        """The call's one inactivity timer: a peer that stops sending media (gone without a
        BYE) is hung up and reported."""
        limit = call.option.inactivity_timeout
        while not call.ended and call.session is not None:
            heard = call.transport.last_heard() if call.transport is not None else None
            idle = time.monotonic() - (heard if heard is not None else call.session.last_audio_in)
            if idle >= limit:
                with bind_call(call.call_id):
                    log.info("peer inactive", extra={"idle_s": round(idle, 1), "timeout_s": limit})
                # active-call tells the agent (`inactivity`) before the hangup it causes.
                await call.emit(ev.Inactivity(track_id=call.call_id))
                await self.end_call(call.call_id, "inactivity_timeout", "server")
                return
            await asyncio.sleep(min(0.5, limit - idle))

    async def command(self, call_id: str, command_json: str) -> CommandResult:
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return CommandResult(ok=False, error=f"no active call '{call_id}' on this node", code=404)
        try:
            c = cmd.parse_command(command_json)
            if call.transport is not None:  # the agent's channel checked too, with what it knows
                rules.check(c, call.transport.call_state())
            handler = self.command_handlers.get(call.kind)
            if handler is not None:
                with bind_call(call_id):
                    if await handler(call, c):
                        return CommandResult()
            if call.session is None:  # a transport's command that its handler did not take
                raise ProtocolError(f"'{c.command}' is not supported on this call yet", 501)
            with bind_call(call_id):
                await apply_command(call.session, c, call_id)
        except ProtocolError as exc:
            return CommandResult(ok=False, error=exc.message, code=exc.code)
        return CommandResult()

    async def next_events(self, call_id: str, timeout_s: float = 10.0) -> list[ev.EventBase] | None:
        """Events since the last poll; waits up to timeout_s for the first. None: call gone."""
        call = self.calls.get(call_id)
        if call is None:
            return None
        call.polled = True
        try:
            first = await asyncio.wait_for(call.events.get(), timeout_s)
        except asyncio.TimeoutError:
            return None if call.finished and call.events.empty() else []
        out = [first]
        while not call.events.empty():
            out.append(call.events.get_nowait())
        if call.finished and call.events.empty():
            self.calls.pop(call_id, None)
        return out

    async def end_call(self, call_id: str, reason: str, initiator: str) -> None:
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return
        call.ended = True
        if call.watchdog is not None and call.watchdog is not asyncio.current_task():
            call.watchdog.cancel()
        try:
            with bind_call(call_id):
                if call.session:
                    await call.session.close()
                if call.transport:
                    await call.transport.close()
                log.info("call closed", extra={"reason": reason, "initiator": initiator})
        finally:
            # The ingress turns this into the agent's `hangup` event with its own timings.
            await call.emit(ev.HangupEvent(track_id=call_id, reason=reason, initiator=initiator))
            call.finished = True
            self._calls_changed.set()
            if not call.polled:  # no agent ever attached (e.g. an inbound call nobody answered)
                self.calls.pop(call_id, None)

    def list_calls(self) -> list[dict]:
        return [{"id": c.call_id, "kind": c.kind, "created": c.created} for c in self.calls.values() if not c.ended]
