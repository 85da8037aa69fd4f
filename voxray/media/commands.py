"""How agent commands and a session's output meet one call's media session, whatever carries its audio.

`SessionSink` routes a session's events and hangups to whoever speaks for the agent
and its audio to the call's transport; `apply_command` applies the commands every
session understands (tts, play, background, interrupt, pause/resume, mute/unmute).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from voxray.media.session import MediaSession
from voxray.protocol import commands as cmd
from voxray.protocol import events as ev
from voxray.protocol.errors import ProtocolError

Emit = Callable[[ev.EventBase], Awaitable[None]]
Hangup = Callable[[str, str], Awaitable[None]]
SendAudio = Callable[[bytes], Awaitable[None]]


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
    """The commands every media session understands, whatever carries its audio.

    Whether a command is allowed now is voxray.protocol.rules' call, checked before this.
    """
    if isinstance(c, cmd.Tts):
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
            session.listener.muted = on
        if c.track_id is None or c.track_id != call_id:
            session.speaker.muted = on
    else:
        raise ProtocolError(f"'{c.command}' is not supported on this call yet", 501)
