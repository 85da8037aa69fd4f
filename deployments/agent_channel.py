"""The agent's WebSocket: JSON commands in, JSON events out, for one call.

Generic over where the call's media lives (`CallMedia`): on `/call` the socket also
carries the audio; on `/call/sip` and `/call/webrtc` a UA node holds it. Bad input of
any kind gets an `error` event and the call goes on.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxray.deployments.call_dump import CallDump
from voxray.deployments.call_media import CallMedia
from voxray.deployments.cdr import CallRecord
from voxray import metrics
from voxray.logs import bind_call, get_logger
from voxray.protocol import commands as cmd
from voxray.protocol import events as ev
from voxray.protocol import rules
from voxray.protocol.errors import ProtocolError
from voxray.protocol.support import check_supported
from voxray.media.codecs import CodecError
from voxray.media.config import MediaConfig
from voxray.media.recorder import check_format, recording_path

log = get_logger("voxray.call")

MAX_AUDIO_FRAME_BYTES = 64 * 1024  # 2 s of 16 kHz PCM: far more than any sane frame
# After these events an agent usually answers (a `tts` for the turn just heard): its
# command is read at once for this long, not when the next audio chunk is due.
REPLY_EXPECTED = (ev.AsrFinal, ev.Eou, ev.AsrDelta)
REPLY_WINDOW_S = 1.5
DEFAULT_HANDSHAKE_TIMEOUT_S = 60.0
DEFAULT_PING_S = 20.0  # active-call's `?ping=` default: a `ping` event every 20 s (0: none)


def ping_interval(value: str | None) -> float:
    """`?ping=N`: seconds between `ping` events; absent: active-call's 20; 0 turns them off."""
    if value is None or value == "":
        return DEFAULT_PING_S
    try:
        seconds = float(value)
    except ValueError:
        raise ProtocolError(f"?ping= must be a number of seconds, not {value!r}", 400) from None
    if not 0 <= seconds <= 3600:
        raise ProtocolError("?ping= must be 0 (off) to 3600 seconds", 400)
    return seconds

MediaFactory = Callable[["AgentChannel"], CallMedia]


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


_finishing: set[asyncio.Task] = set()


async def outlive_cancel(coro) -> None:
    """Run `coro` (a call, a call's end) to completion even when the socket's handler is
    being cancelled: Serve's direct ingress cancels it as the socket closes, and its cancel
    scope would cancel every await after that in turn. A context of its own: Serve cancels
    the Ray calls made in a cancelled request's context too (the registry's)."""
    task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)
    await asyncio.shield(task)


class AgentChannel:
    def __init__(self, ws: WebSocket, call_id: str, path: str, media_factory: MediaFactory,
                 on_answer: Callable[["AgentChannel"], Awaitable[None]] | None = None,
                 on_end: Callable[["AgentChannel"], Awaitable[None]] | None = None,
                 handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
                 resume_grace_s: float = 0.0, dump: CallDump | None = None,
                 ping_s: float = DEFAULT_PING_S, recordings_dir: str | None = None) -> None:
        self.ws = ws
        self.dump = dump
        self.call_id = call_id
        self.path = path
        self.media: CallMedia = media_factory(self)
        self._on_answer = on_answer
        self._on_end = on_end
        self.handshake_timeout_s = handshake_timeout_s
        self.ping_s = ping_s
        self.recordings_dir = recordings_dir
        self.recording: str | None = None  # the call's WAV, where its media's node writes it
        self.answered = False
        self.early_media = False
        self.start_time = time.time()
        self.answer_time: float | None = None
        self.hangup_time: float | None = None
        self._send_lock = asyncio.Lock()
        self._ended = asyncio.Event()
        self._hangup_once = asyncio.Lock()
        self.option: cmd.CallOption | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.errors = 0
        self.metrics: dict[str, dict] = {}
        self.info = None  # the call registry's CallInfo once answered (set by the ingress)
        self.parties: tuple[str | None, str | None] = (None, None)  # an inbound call's caller, callee
        self.reason: str | None = None
        self.initiator: str | None = None
        # Resume: a dropped agent socket holds the call this long for a reconnect.
        self.resume_grace_s = resume_grace_s
        self.suspended = False
        self._resumed = asyncio.Event()
        self._detached = asyncio.Event()  # the current socket is done (dropped or call over)
        self._backlog: collections.deque[str] = collections.deque(maxlen=2000)
        self.reply_expected_until = 0.0  # monotonic time; see REPLY_EXPECTED
        self.on_reply_expected: Callable[[], None] | None = None  # e.g. read the socket now

    # -- output ------------------------------------------------------------------

    def input_due(self) -> float | None:
        """When (time.monotonic()) the socket should next be read; None: as soon as anything comes.

        Read at once while the agent is likely to answer; otherwise when the media needs
        its next audio (`/call`), if the media says.
        """
        if time.monotonic() < self.reply_expected_until:
            return None
        due = getattr(self.media, "audio_due", None)
        return due() if due else None

    async def emit(self, event: ev.EventBase) -> None:
        if isinstance(event, ev.Incoming):  # an inbound call's parties, for its hangup event
            self.parties = (event.caller, event.callee)
        if isinstance(event, ev.Answer) and not self.answered:
            await self._answered()
        elif isinstance(event, ev.RingingEvent) and event.early_media:
            self.early_media = True
        elif isinstance(event, ev.Metrics):
            m = self.metrics.setdefault(event.key, {"count": 0, "last": 0, "max": 0})
            m["count"] += 1
            m["last"] = event.duration
            m["max"] = max(m["max"], event.duration)
            kind, _, provider = event.key.removeprefix("ttfb.").partition(".")
            if event.key.startswith("ttfb.") and kind in ("asr", "tts"):
                metrics.observe(f"{kind}_ms", event.duration, provider=provider)
        elif isinstance(event, ev.Error):
            self.errors += 1
            metrics.inc("errors_total", sender=event.sender)
        elif isinstance(event, REPLY_EXPECTED):
            self.reply_expected_until = time.monotonic() + REPLY_WINDOW_S
            if self.on_reply_expected is not None:
                self.on_reply_expected()
        text = ev.dump_event(event, self.call_id)
        if self.dump is not None:
            self.dump.record("out", text)
        if self.suspended:
            self._backlog.append(text)  # delivered when the agent reconnects
            return
        await self._send(text=text)

    async def send_audio(self, payload: bytes) -> None:
        if self.hangup_time is None and not self.suspended:
            self.frames_out += 1
            if self.frames_out % 50 == 0:  # per second of audio, not per frame
                metrics.inc("frames_total", 50, direction="out")
            await self._send(data=payload)

    async def request_hangup(self, reason: str, initiator: str) -> None:
        # Called from the media's own tasks: hang up from outside them.
        asyncio.get_running_loop().create_task(self.hangup(reason, initiator))

    async def _send(self, text: str | None = None, data: bytes | None = None) -> None:
        if self.ws.client_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            try:
                if text is not None:
                    await self.ws.send_text(text)
                else:
                    await self.ws.send_bytes(data)
            except (WebSocketDisconnect, RuntimeError, ConnectionError):
                self._ended.set()

    # -- call lifecycle ------------------------------------------------------------

    async def run(self) -> None:
        with bind_call(self.call_id):
            log.info("agent connected", extra={"path": self.path})
            try:
                while True:
                    await self._serve_socket()
                    if not self._hold_for_resume():
                        break
                    log.info("agent disconnected; holding the call", extra={"grace_s": self.resume_grace_s})
                    try:
                        await asyncio.wait_for(self._resumed.wait(), self.resume_grace_s)
                    except asyncio.TimeoutError:
                        self.suspended = False
                        await self.hangup("agent_gone", "system")
                        break
                    self._resumed.clear()
            finally:
                await outlive_cancel(self._finish())

    async def _finish(self) -> None:
        with bind_call(self.call_id):
            if self.hangup_time is None:
                # The agent went away without a hangup: end the call.
                self.hangup_time = time.time()
                self.reason, self.initiator = "agent_disconnected", "agent"
                log.info("agent disconnected")
                await self.media.close("agent_disconnected")
            self._detached.set()
            if self.dump is not None:
                await self.dump.flush()
            if self._on_end:
                await self._on_end(self)
            log.info("call ended", extra={"frames_in": self.frames_in, "frames_out": self.frames_out,
                                          "duration_s": round(self.hangup_time - self.start_time, 3)})

    async def _serve_socket(self) -> None:
        reader = asyncio.create_task(self._read_loop(), name=f"ws-read-{self.call_id}")
        tasks = [reader, asyncio.create_task(self._watchdog(), name=f"watchdog-{self.call_id}")]
        if self.ping_s > 0:
            tasks.append(asyncio.create_task(self._pinger(), name=f"ping-{self.call_id}"))
        try:
            await self._ended.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pinger(self) -> None:
        """active-call's keep-alive: a `ping` event every `?ping=` seconds, its payload the time."""
        while True:
            await asyncio.sleep(self.ping_s)
            if self.hangup_time is not None:
                return
            if self.suspended:  # no agent to keep alive: nothing to queue for it either
                continue
            await self.emit(ev.Ping(payload=datetime.now(timezone.utc).isoformat()))

    def _hold_for_resume(self) -> bool:
        if self.hangup_time is not None or not self.answered or self.resume_grace_s <= 0:
            return False
        self.suspended = True
        self._ended.clear()
        self._detached.set()
        return True

    async def resume(self, ws: WebSocket) -> None:
        """A reconnect with this call's id: carry on over the new socket until it ends too."""
        self.ws = ws
        self._detached.clear()
        self.suspended = False
        log.info("agent reconnected", extra={"backlog": len(self._backlog)})
        backlog, self._backlog = list(self._backlog), collections.deque(maxlen=2000)
        for text in backlog:
            await self._send(text=text)
        self._resumed.set()
        await self._detached.wait()

    def record(self) -> CallRecord:
        opt = self.option
        return CallRecord(
            id=self.call_id, path=self.path, caller=opt.caller if opt else None,
            callee=opt.callee if opt else None, codec=opt.codec if opt else None,
            start_time=iso(self.start_time), answer_time=iso(self.answer_time),
            hangup_time=iso(self.hangup_time), reason=self.reason, initiator=self.initiator,
            frames_in=self.frames_in, frames_out=self.frames_out, errors=self.errors, metrics=self.metrics,
            recording=self.recording,
        )

    async def hangup(self, reason: str, initiator: str, extra: dict | None = None) -> None:
        async with self._hangup_once:
            if self.hangup_time is not None:
                return
            await self.media.close(reason)
            self.hangup_time = time.time()
            self.reason, self.initiator = reason, initiator
            log.info("hangup", extra={"reason": reason, "initiator": initiator})
            opt = self.option
            caller = (opt.caller if opt else None) or self.parties[0]
            callee = (opt.callee if opt else None) or self.parties[1]
            event = ev.HangupEvent(
                reason=reason, initiator=initiator,
                start_time=iso(self.start_time), answer_time=iso(self.answer_time),
                hangup_time=iso(self.hangup_time),
                from_=ev.Attendee.from_uri(caller) if caller else None,
                to=ev.Attendee.from_uri(callee) if callee else None,
                extra=extra,
            )
            text = ev.dump_event(event, self.call_id)
            if self.dump is not None:
                self.dump.record("out", text)
            async with self._send_lock:
                try:
                    await self.ws.send_text(text)
                    await self.ws.close(1000)
                except (WebSocketDisconnect, RuntimeError, ConnectionError):
                    pass
            self._ended.set()

    async def _watchdog(self) -> None:
        """Handshake and inactivity timeouts."""
        while True:
            await asyncio.sleep(0.25)
            if self.option is None:
                if time.time() - self.start_time > self.handshake_timeout_s:
                    await self.emit(ev.Error(sender="protocol", code=408,
                                             error="no invite within the handshake timeout"))
                    await self.hangup("handshake_timeout", "server")
                    return
                continue
            limit = self.option.inactivity_timeout
            if limit and self.answered and time.monotonic() - self.media.last_activity > limit:
                await self.emit(ev.Inactivity(track_id=self.call_id))
                await self.hangup("inactivity_timeout", "server")
                return

    async def _read_loop(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg.get("bytes") is not None:
                    await self._on_audio(msg["bytes"])
                elif msg.get("text") is not None:
                    await self._on_text(msg["text"])
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._ended.set()

    async def _error(self, sender: str, message: str, code: int) -> None:
        log.info("rejected input", extra={"sender": sender, "error": message, "code": code})
        await self.emit(ev.Error(sender=sender, error=message, code=code))

    async def _on_audio(self, payload: bytes) -> None:
        if not self.answered:
            await self._error("media", "audio before invite: send an invite command first", 409)
            return
        if len(payload) > MAX_AUDIO_FRAME_BYTES:
            await self._error("media", f"audio frame of {len(payload)} bytes exceeds {MAX_AUDIO_FRAME_BYTES}", 413)
            return
        self.frames_in += 1
        if self.frames_in % 50 == 0:
            metrics.inc("frames_total", 50, direction="in")
        try:
            await self.media.feed(payload)
        except CodecError as exc:
            await self._error("media", str(exc), 400)
        except ProtocolError as exc:
            await self._error("media", exc.message, exc.code)

    async def _on_text(self, text: str) -> None:
        if self.dump is not None:
            self.dump.record("in", text[:65536])
        try:
            command = cmd.parse_command(text)
        except ProtocolError as exc:
            await self._error("protocol", exc.message, exc.code)
            return
        try:
            await self._dispatch(command)
        except ProtocolError as exc:
            await self._error("protocol", exc.message, exc.code)
        except CodecError as exc:
            await self._error("media", str(exc), 400)

    def call_state(self) -> rules.CallState:
        return rules.CallState(media=rules.media_of(self.path), inbound=self.media.inbound,
                               set_up=self.option is not None, answered=self.answered,
                               early_media=self.early_media)

    async def _dispatch(self, c: cmd.Command) -> None:
        rules.check(c, self.call_state())
        check_supported(c)  # active-call fields voxray cannot act on: a 501 naming the field
        recorder = c.option.recorder if isinstance(c, (cmd.Invite, cmd.Accept)) else getattr(c, "recorder", None)
        if isinstance(c, (cmd.Invite, cmd.Accept, cmd.Ringing)) and recorder and recorder.recorder_file:
            # Checked here, so a bad name is this command's error, before any media is set up.
            check_format(recorder)
            path = recording_path(self.recordings_dir or MediaConfig.recordings_dir, recorder.recorder_file,
                                  self.call_id)
            self.recording = self.recording or str(path)
        if isinstance(c, cmd.Hangup):
            await self.hangup(c.reason or "hangup", c.initiator or "agent")
        elif isinstance(c, cmd.History):
            await self.emit(ev.AddHistory(sender="agent", speaker=c.speaker, text=c.text))
        elif isinstance(c, cmd.Invite):
            self.option = c.option
            try:
                answer = await self.media.start(c.option)
            except ProtocolError:
                self.option = None
                raise
            if answer is not None:
                await self.emit(answer)
        elif isinstance(c, cmd.Accept):
            # An inbound call: `accept` sets it up as `invite` does an outbound one. The
            # option is set first: the UA's `answer` can come back before the command returns.
            previous, self.option = self.option, c.option
            try:
                await self.media.command(c)
            except ProtocolError:
                self.option = previous
                raise
        else:
            await self.media.command(c)

    async def _answered(self) -> None:
        self.answered = True
        self.answer_time = time.time()
        opt = self.option
        log.info("answered", extra={"codec": opt.codec if opt else None,
                                    "caller": opt.caller if opt else None,
                                    "callee": opt.callee if opt else None})
        if self._on_answer:
            await self._on_answer(self)
