"""The `/call` WebSocket: commands and caller audio in, events and TTS audio out.

The socket is the call's transport here, so the media session lives in this
ingress replica; only batched VAD chunks, whole utterances and TTS requests leave
the process. Bad input of any kind gets an `error` event and the call goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxray.logs import bind_call, get_logger
from voxray.protocol import commands as cmd
from voxray.protocol import events as ev
from voxray.protocol.errors import ProtocolError
from voxray.ua_node.media.codecs import CodecError
from voxray.ua_node.media.session import MediaConfig, MediaSession, ModelServices

log = get_logger("voxray.call")

MAX_AUDIO_FRAME_BYTES = 64 * 1024  # 2 s of 16 kHz PCM: far more than any sane frame
DEFAULT_HANDSHAKE_TIMEOUT_S = 60.0


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


class WsCall:
    def __init__(self, ws: WebSocket, call_id: str, services: ModelServices,
                 media_config: MediaConfig | None = None,
                 on_answer: Callable[["WsCall"], Awaitable[None]] | None = None,
                 on_end: Callable[["WsCall"], Awaitable[None]] | None = None) -> None:
        self.ws = ws
        self.call_id = call_id
        self.services = services
        self.media_config = media_config or MediaConfig()
        self._on_answer = on_answer
        self._on_end = on_end
        self.session: MediaSession | None = None
        self.start_time = time.time()
        self.answer_time: float | None = None
        self.hangup_time: float | None = None
        self._send_lock = asyncio.Lock()
        self._ended = asyncio.Event()
        self._hangup_once = asyncio.Lock()
        self.option: cmd.CallOption | None = None
        self.frames_in = 0
        self.frames_out = 0

    # -- MediaSink ---------------------------------------------------------------

    async def emit(self, event: ev.EventBase) -> None:
        await self._send(text=ev.dump_event(event))

    async def send_audio(self, payload: bytes) -> None:
        self.frames_out += 1
        await self._send(data=payload)

    async def request_hangup(self, reason: str, initiator: str) -> None:
        # Called from the session's own tasks: hang up from outside them.
        asyncio.get_running_loop().create_task(self.hangup(reason, initiator))

    async def _send(self, text: str | None = None, data: bytes | None = None) -> None:
        if self.ws.client_state != WebSocketState.CONNECTED or self.hangup_time is not None and text is None:
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
            log.info("call connected", extra={"path": self.ws.url.path})
            reader = asyncio.create_task(self._read_loop(), name=f"ws-read-{self.call_id}")
            watchdog = asyncio.create_task(self._watchdog(), name=f"watchdog-{self.call_id}")
            try:
                await self._ended.wait()
            finally:
                reader.cancel()
                watchdog.cancel()
                await asyncio.gather(reader, watchdog, return_exceptions=True)
                if self.hangup_time is None:
                    # The agent went away without a hangup: end the call quietly.
                    self.hangup_time = time.time()
                    log.info("agent disconnected")
                if self.session:
                    await self.session.close()
                if self._on_end:
                    await self._on_end(self)
                log.info("call ended", extra={"frames_in": self.frames_in, "frames_out": self.frames_out,
                                              "duration_s": round(self.hangup_time - self.start_time, 3)})

    async def hangup(self, reason: str, initiator: str) -> None:
        async with self._hangup_once:
            if self.hangup_time is not None:
                return
            if self.session:
                await self.session.close()
            self.hangup_time = time.time()
            log.info("hangup", extra={"reason": reason, "initiator": initiator})
            opt = self.option
            async with self._send_lock:
                try:
                    await self.ws.send_text(ev.dump_event(ev.HangupEvent(
                        reason=reason, initiator=initiator,
                        start_time=iso(self.start_time), answer_time=iso(self.answer_time),
                        hangup_time=iso(self.hangup_time),
                        from_=ev.Attendee(username=opt.caller, source="websocket") if opt and opt.caller else None,
                        to=ev.Attendee(username=opt.callee) if opt and opt.callee else None,
                    )))
                    await self.ws.close(1000)
                except (WebSocketDisconnect, RuntimeError, ConnectionError):
                    pass
            self._ended.set()

    async def _watchdog(self) -> None:
        """Handshake and inactivity timeouts."""
        handshake = DEFAULT_HANDSHAKE_TIMEOUT_S
        while True:
            await asyncio.sleep(0.5)
            if self.session is None:
                if time.time() - self.start_time > handshake:
                    await self.emit(ev.Error(sender="protocol", error="no invite within the handshake timeout", code=408))
                    await self.hangup("handshake_timeout", "server")
                    return
                continue
            limit = self.option.inactivity_timeout if self.option else None
            if limit and time.monotonic() - self.session.last_audio_in > limit:
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
        if self.session is None:
            await self._error("media", "audio before invite: send an invite command first", 409)
            return
        if len(payload) > MAX_AUDIO_FRAME_BYTES:
            await self._error("media", f"audio frame of {len(payload)} bytes exceeds {MAX_AUDIO_FRAME_BYTES}", 413)
            return
        self.frames_in += 1
        try:
            self.session.feed(payload)
        except CodecError as exc:
            await self._error("media", str(exc), 400)

    async def _on_text(self, text: str) -> None:
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

    async def _dispatch(self, c: cmd.Command) -> None:
        if isinstance(c, (cmd.Invite, cmd.Accept)):
            if self.session is not None:
                raise ProtocolError("call already answered", 409)
            await self._answer(c.option)
            return
        if isinstance(c, cmd.Hangup):
            await self.hangup(c.reason or "hangup", c.initiator or "agent")
            return
        if isinstance(c, cmd.History):
            await self.emit(ev.AddHistory(sender="agent", speaker=c.speaker, text=c.text))
            return
        if self.session is None:
            raise ProtocolError(f"'{c.command}' needs an answered call: send invite first", 409)
        s = self.session
        if isinstance(c, cmd.Tts):
            if c.base64 or c.streaming:
                raise ProtocolError("tts with base64 or streaming is not supported on this server yet", 501)
            if not c.text.strip():
                raise ProtocolError("tts text is empty", 422)
            await s.tts(c)
        elif isinstance(c, cmd.Interrupt):
            await s.interrupt(graceful=c.graceful)
        elif isinstance(c, cmd.Pause):
            s.pause()
        elif isinstance(c, cmd.Resume):
            s.resume()
        elif isinstance(c, (cmd.Mute, cmd.Unmute)):
            on = isinstance(c, cmd.Mute)
            if c.track_id in (None, self.call_id):
                s.inbound_muted = on
            if c.track_id is None or c.track_id != self.call_id:
                s.outbound_muted = on
        elif isinstance(c, cmd.Refer):
            raise ProtocolError("refer needs a SIP call (/call/sip); this call's media is the WebSocket", 405)
        elif isinstance(c, (cmd.Reject, cmd.Ringing)):
            raise ProtocolError(f"'{c.command}' applies to inbound SIP calls only", 405)
        else:
            raise ProtocolError(f"'{c.command}' is not supported on /call yet", 501)

    async def _answer(self, option: cmd.CallOption) -> None:
        self.option = option
        self.session = MediaSession(self.call_id, option, self.services, self, self.media_config)
        self.session.start()
        self.answer_time = time.time()
        log.info("answered", extra={"codec": option.codec, "caller": option.caller, "callee": option.callee})
        await self.emit(ev.Answer(track_id=self.call_id))
        if self._on_answer:
            await self._on_answer(self)
