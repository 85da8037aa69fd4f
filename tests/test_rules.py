"""The command rules (voxray.protocol.rules): which command is allowed when, with which code."""

from __future__ import annotations

import pytest

from voxray.protocol import commands as cmd
from voxray.protocol.errors import ProtocolError
from voxray.protocol.rules import CallState, check, media_of

NEW_SOCKET = CallState(media="socket")
LIVE_SOCKET = CallState(media="socket", set_up=True, answered=True)
RINGING_SIP = CallState(media="sip", inbound=True)
EARLY_SIP = CallState(media="sip", inbound=True, early_media=True)
LIVE_SIP_IN = CallState(media="sip", inbound=True, set_up=True, answered=True)
DIALING_SIP = CallState(media="sip", set_up=True)
LIVE_WEBRTC = CallState(media="webrtc", set_up=True, answered=True)


def code(c: dict, state: CallState) -> int | None:
    try:
        check(cmd.parse_command(__import__("json").dumps(c)), state)
    except ProtocolError as exc:
        return exc.code
    return None


@pytest.mark.parametrize("command, state, expected", [
    ({"command": "tts", "text": "hi"}, NEW_SOCKET, 409),             # before invite
    ({"command": "invite"}, NEW_SOCKET, None),
    ({"command": "invite"}, LIVE_SOCKET, 409),                      # one invite per call
    ({"command": "invite"}, RINGING_SIP, 409),                      # inbound: answer it instead
    ({"command": "tts", "text": "hi"}, LIVE_SOCKET, None),
    ({"command": "tts", "text": "  "}, LIVE_SOCKET, 422),           # nothing to say
    ({"command": "tts", "text": "", "streaming": True, "endOfStream": True}, LIVE_SOCKET, None),
    ({"command": "refer", "callee": "sip:x@y"}, LIVE_SOCKET, 405),  # not a SIP call
    ({"command": "refer", "callee": "sip:x@y"}, LIVE_WEBRTC, 405),
    ({"command": "refer", "callee": "sip:x@y"}, LIVE_SIP_IN, None),
    ({"command": "refer", "callee": "sip:x@y"}, DIALING_SIP, 409),  # not answered yet
    ({"command": "accept"}, LIVE_SOCKET, 405),                      # answering is for inbound SIP
    ({"command": "reject"}, LIVE_WEBRTC, 405),
    ({"command": "ringing"}, NEW_SOCKET, 405),
    ({"command": "accept"}, RINGING_SIP, None),
    ({"command": "accept"}, LIVE_SIP_IN, 409),                      # answered already
    ({"command": "reject"}, DIALING_SIP, 409),                      # an outbound call
    ({"command": "accept"}, CallState(media="sip", inbound=True, caller_gone=True), 410),
    ({"command": "tts", "text": "hi"}, RINGING_SIP, 409),           # needs accept first
    ({"command": "tts", "text": "hi"}, CallState(media="sip", inbound=True, set_up=True, early_media=True), None),
    ({"command": "pause"}, CallState(media="sip", inbound=True, set_up=True, early_media=True), 409),
    ({"command": "mute"}, DIALING_SIP, None),                       # muting needs no answer
    ({"command": "hangup"}, NEW_SOCKET, None),                      # always
    ({"command": "history", "speaker": "user", "text": "x"}, NEW_SOCKET, None),
])
def test_command_rules(command, state, expected):
    assert code(command, state) == expected


def test_paths_name_their_media():
    assert [media_of(p) for p in ("/call", "/call/webrtc", "/call/sip")] == ["socket", "webrtc", "sip"]
    assert EARLY_SIP.early_media
