"""What an agent's commands act on: one call's media, wherever it lives.

`AgentChannel` (the agent's WebSocket) drives a `CallMedia`. `LocalMedia` holds
the media session in this process and carries audio over the agent's socket
(`/call`); `RemoteMedia` (in remote_media.py) drives a session held by a UA node
(SIP/RTP, WebRTC).
"""

from __future__ import annotations

import time
from typing import Protocol

from voxray.media.commands import Emit, Hangup, SendAudio, SessionSink, apply_command
from voxray.media.services import ModelServices
from voxray.media.config import MediaConfig
from voxray.media.session import MediaSession
from voxray.protocol import commands as cmd
from voxray.protocol import events as ev

__all__ = ["CallMedia", "Emit", "Hangup", "LocalMedia", "SendAudio"]


class CallMedia(Protocol):
    last_activity: float  # monotonic time of the last audio from the caller
    inbound: bool  # an inbound call the agent answers (accept/reject/ringing) instead of inviting

    async def start(self, option: cmd.CallOption) -> ev.EventBase | None:
        """Set the call up; return the `answer` event, or None if it comes later."""

    async def feed(self, payload: bytes) -> None:
        """Binary frames the agent sent (only where the agent's socket carries audio)."""

    async def command(self, c: cmd.Command) -> None:
        """Every command other than invite/accept/hangup/history."""

    async def close(self, reason: str) -> None: ...


class LocalMedia:
    """`/call`: the session lives here; caller audio and TTS audio ride the agent's socket."""

    inbound = False

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

    def audio_due(self) -> float | None:
        """When the caller's audio is next needed (see `MediaSession.audio_due`)."""
        return self.session.audio_due() if self.session else None

    async def command(self, c: cmd.Command) -> None:
        await apply_command(self.session, c, self.call_id)

    async def close(self, reason: str) -> None:
        if self.session:
            await self.session.close()
