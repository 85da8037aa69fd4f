"""Which command an agent may send when: the protocol's call rules in one place, free of I/O.

The agent's channel checks every command against what it knows of its call (path,
invite or accept done, answered, early media); the UA node checks the answering
commands again with what only it knows (the caller hung up while ringing). Codes:
405 not on this kind of call, 409 not in this state, 410 the caller has gone,
501 nothing on this call acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from voxray.protocol import commands as cmd
from voxray.protocol.errors import ProtocolError

Media = Literal["socket", "webrtc", "sip"]  # where the call's audio travels

# Commands a media session acts on (voxray.media.commands.apply_command).
SESSION_COMMANDS = (cmd.Tts, cmd.Play, cmd.Background, cmd.Interrupt, cmd.Pause, cmd.Resume,
                    cmd.Mute, cmd.Unmute)
_ANSWERING = (cmd.Accept, cmd.Reject, cmd.Ringing)
_NEEDS_ANSWER = (cmd.Tts, cmd.Play, cmd.Interrupt, cmd.Pause, cmd.Resume, cmd.Refer)
_EARLY_MEDIA = (cmd.Tts, cmd.Play)


@dataclass(frozen=True)
class CallState:
    media: Media
    inbound: bool = False  # an inbound SIP call, which the agent answers instead of inviting
    set_up: bool = False  # invite sent, or the inbound call accepted
    answered: bool = False
    early_media: bool = False  # ringing with earlyMedia: tts and play may start before the answer
    caller_gone: bool = False  # an inbound call whose caller hung up while it rang


def media_of(path: str) -> Media:
    """The media of a call by the agent's socket path (/call, /call/webrtc, /call/sip)."""
    return {"/call/webrtc": "webrtc", "/call/sip": "sip"}.get(path, "socket")


def check(c: cmd.Command, s: CallState) -> None:
    """Raise the ProtocolError the protocol gives when `c` is not allowed on this call now."""
    if isinstance(c, (cmd.Hangup, cmd.History)):
        return
    if isinstance(c, cmd.Invite):
        if s.inbound:
            raise ProtocolError("this is an inbound call: answer it with accept (or reject/ringing), not invite", 409)
        if s.set_up:
            raise ProtocolError("call already set up: one invite per call", 409)
        return
    if isinstance(c, _ANSWERING):
        if s.media != "sip":
            raise ProtocolError(f"'{c.command}' applies to inbound SIP calls only", 405)
        if not s.inbound or s.set_up:
            raise ProtocolError(f"'{c.command}' applies to a ringing inbound call", 409)
        if s.caller_gone:
            raise ProtocolError("the caller has gone", 410)
        return
    if not s.set_up:
        raise ProtocolError(f"'{c.command}' needs a call: send invite first", 409)
    if isinstance(c, cmd.Refer) and s.media != "sip":
        raise ProtocolError(f"refer needs a SIP call (/call/sip); this call's media is {s.media}", 405)
    if isinstance(c, cmd.Tts) and not c.text.strip() and not (c.streaming and c.end_of_stream):
        raise ProtocolError("tts text is empty", 422)
    if isinstance(c, _NEEDS_ANSWER) and not (s.answered or (s.early_media and isinstance(c, _EARLY_MEDIA))):
        raise ProtocolError(f"'{c.command}' needs an answered call", 409)
    if not isinstance(c, (*SESSION_COMMANDS, cmd.Refer)):
        raise ProtocolError(f"'{c.command}' is not supported on this call yet", 501)
