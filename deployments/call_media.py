"""What an agent's commands act on: one call's media, wherever it lives.

`AgentChannel` (the agent's WebSocket) drives a `CallMedia`. `LocalMedia` holds
the media session in this process and carries audio over the agent's socket
(`/call`); `RemoteMedia` (in remote_media.py) drives a session held by a UA node
(SIP/RTP, WebRTC).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from voxray.protocol import commands as cmd
from voxray.protocol import events as ev
from voxray.protocol.errors import ProtocolError
from voxray.ua_node.media.session import MediaConfig, MediaSession, ModelServices

Emit = Callable[[ev.EventBase], Awaitable[None]]
Hangup = Callable[[str, str], Awaitable[None]]
SendAudio = Callable[[bytes], Awaitable[None]]


class CallMedia(Protocol):
    last_activity: float  # monotonic time of the last audio from the caller

    async def start(self, option: cmd.CallOption) -> ev.EventBase | None:
        """Set the call up; return the `answer` event, or None if it comes later."""

    async def feed(self, payload: bytes) -> None:
        """Binary frames the agent sent (only where the agent's socket carries audio)."""

    async def command(self, c: cmd.Command) -> None:
        """Every command other than invite/accept/hangup/history."""

    async def close(self, reason: str) -> None: ...


class SessionSink:
    """Routes a MediaSession's output: events and hangups to the agent, audio to a transport."""

    def __init__(self, emit: Emit, send_audio: SendAudio, hangup: Hangup,
                 clear_audio: Callable[[], None] | None = None) -> None:
        self.emit = emit
        self.send_audio = send_audio
        self._hangup = hangup
        self._clear = clear_audio

    def clear_audio(self) -> None:
        """Drop audio queued toward the caller (barge-in must cut it at once)."""
        if self._clear is not None:
            self._clear()

    async def request_hangup(self, reason: str, initiator: str) -> None:
        await self._hangup(reason, initiator)


async def apply_command(session: MediaSession, c: cmd.Command, call_id: str) -> None:
    """The commands every media session understands, whatever carries its audio."""
    if isinstance(c, cmd.Tts):
        if not c.text.strip() and not (c.streaming and c.end_of_stream):
            raise ProtocolError("tts text is empty", 422)
        await session.tts(c)
    elif isinstance(c, cmd.Play):
        await session.play(c)
    elif isinstance(c, cmd.Background):
        await session.background(c)
    elif isinstance(c, cmd.Interrupt):
        await session.interrupt(graceful=c.graceful)
    elif isinstance(c, cmd.Pause):
        session.pause()
    elif isinstance(c, cmd.Resume):
        session.resume()
    elif isinstance(c, (cmd.Mute, cmd.Unmute)):
        on = isinstance(c, cmd.Mute)
        if c.track_id in (None, call_id):
            session.inbound_muted = on
        if c.track_id is None or c.track_id != call_id:
            session.outbound_muted = on
    else:
        raise ProtocolError(f"'{c.command}' is not supported on this call yet", 501)


class LocalMedia:
    """`/call`: the session lives here; caller audio and TTS audio ride the agent's socket."""

    def __init__(self, call_id: str, services: ModelServices, config: MediaConfig,
                 emit: Emit, send_audio: SendAudio, hangup: Hangup) -> None:
        self.call_id = call_id
        self.services = services
        self.config = config
        self.sink = SessionSink(emit, send_audio, hangup)
        self.session: MediaSession | None = None
        self._created = time.monotonic()

    @property
    def last_activity(self) -> float:
        # The session already stamps each frame it decodes.
        return self.session.last_audio_in if self.session else self._created

    async def start(self, option: cmd.CallOption) -> ev.EventBase | None:
        self.session = MediaSession(self.call_id, option, self.services, self.sink, self.config)
        self.session.start()
        return ev.Answer(track_id=self.call_id)

    async def feed(self, payload: bytes) -> None:
        self.session.feed(payload)

    async def command(self, c: cmd.Command) -> None:
        if isinstance(c, cmd.Refer):
            raise ProtocolError("refer needs a SIP call (/call/sip); this call's media is the WebSocket", 405)
        if isinstance(c, (cmd.Reject, cmd.Ringing)):
            raise ProtocolError(f"'{c.command}' applies to inbound SIP calls only", 405)
        await apply_command(self.session, c, self.call_id)

    async def close(self, reason: str) -> None:
        if self.session:
            await self.session.close()
