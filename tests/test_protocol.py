"""The wire protocol as typed models: names, camelCase, and clear errors for bad input."""

from __future__ import annotations

import json

import pytest

from voxray.protocol import commands as c
from voxray.protocol import events as e
from voxray.protocol.errors import ProtocolError
from voxray.protocol.schema import protocol_schema

PROTOCOL_COMMANDS = {"invite", "accept", "reject", "ringing", "tts", "play", "interrupt", "pause",
                     "resume", "refer", "mute", "unmute", "hangup", "history"}
EXT_COMMANDS = {"background"}
PROTOCOL_EVENTS = {"incoming", "answer", "reject", "ringing", "hangup", "speaking", "silence", "eou",
                   "asrDelta", "asrFinal", "trackStart", "trackEnd", "interruption", "dtmf", "metrics",
                   "error", "addHistory", "answerMachineDetection", "binary", "other"}


def test_every_protocol_command_name_parses():
    assert c.COMMAND_NAMES == PROTOCOL_COMMANDS | EXT_COMMANDS
    samples = {"play": {"url": "file:///x.wav"}, "refer": {"callee": "sip:a@b"},
               "history": {"speaker": "user", "text": "hi"}}
    for name in PROTOCOL_COMMANDS:
        parsed = c.parse_command(json.dumps({"command": name, **samples.get(name, {})}))
        assert parsed.command == name


def test_wait_input_timeout_in_seconds_or_active_call_code_milliseconds():
    assert c.parse_command('{"command":"tts","text":"hi","waitInputTimeout":5}').wait_input_timeout == 5
    assert c.parse_command('{"command":"tts","text":"hi","waitInputTimeout":5000}').wait_input_timeout == 5
    assert c.parse_command('{"command":"play","url":"x.wav","waitInputTimeout":1500}').wait_input_timeout == 1.5
    assert c.parse_command('{"command":"play","url":"x.wav"}').wait_input_timeout is None


def test_camel_case_fields_and_nested_options():
    cmd = c.parse_command(json.dumps({
        "command": "invite",
        "option": {"codec": "pcmu", "caller": "alice", "inactivityTimeout": 30,
                   "vad": {"voiceThreshold": 0.6, "silencePadding": 200},
                   "asr": {"provider": "whisper", "startWhenAnswer": True},
                   "tts": {"provider": "piper", "speed": 1.2}},
    }))
    assert isinstance(cmd, c.Invite)
    assert cmd.option.codec == "pcmu"
    assert cmd.option.inactivity_timeout == 30
    assert cmd.option.vad.voice_threshold == 0.6
    assert cmd.option.vad.silence_padding == 200
    assert cmd.option.asr.start_when_answer is True
    tts = c.parse_command('{"command":"tts","text":"hi","playId":"p1","autoHangup":true,"waitInputTimeout":5}')
    assert (tts.play_id, tts.auto_hangup, tts.wait_input_timeout) == ("p1", True, 5)


@pytest.mark.parametrize("text, code, fragment", [
    ("{not json", 400, "malformed JSON"),
    ("[1,2,3]", 400, "JSON object"),
    ('{"text":"hi"}', 400, "command"),
    ('{"command":"dance"}', 404, "unknown command 'dance'"),
    ('{"command":"tts","text":123}', 422, "text"),
    ('{"command":"tts","text":"x","autoHangup":"maybe"}', 422, "autoHangup"),
    ('{"command":"invite","option":{"codec":"opus9"}}', 422, "codec"),
    ('{"command":"reject","code":99}', 422, "code"),
    ('{"command":"refer"}', 422, "callee"),
])
def test_bad_commands_are_refused_with_a_reason(text, code, fragment):
    with pytest.raises(ProtocolError) as info:
        c.parse_command(text)
    assert info.value.code == code
    assert fragment.lower() in info.value.message.lower()


def test_oversized_command_is_refused_before_parsing():
    huge = json.dumps({"command": "tts", "text": "a" * (c.MAX_COMMAND_BYTES + 10)})
    with pytest.raises(ProtocolError) as info:
        c.parse_command(huge)
    assert info.value.code == 413


def test_events_serialize_camel_case_and_omit_absent_fields():
    out = json.loads(e.dump_event(e.AsrFinal(index=2, start_time=10, end_time=20, text="hi", track_id="t")))
    assert out["event"] == "asrFinal" and out["startTime"] == 10 and out["endTime"] == 20
    assert out["trackId"] == "t" and isinstance(out["timestamp"], int)
    hang = json.loads(e.dump_event(e.HangupEvent(reason="bye", from_=e.Attendee(username="alice"))))
    # A party's fields are all there, as strict active-call clients require.
    assert hang["from"] == {"username": "alice", "realm": "", "source": ""} and "to" not in hang
    # Round trip through the discriminated union.
    assert isinstance(e.parse_event(e.dump_event(e.TrackEnd(play_id="p", duration=5))), e.TrackEnd)


def test_schema_covers_every_command_and_event():
    schema = protocol_schema()
    text = json.dumps(schema)
    for name in PROTOCOL_COMMANDS | PROTOCOL_EVENTS:
        assert f'"{name}"' in text, name
    assert schema["commands"]["discriminator"]["propertyName"] == "command"
    assert schema["events"]["discriminator"]["propertyName"] == "event"
    assert "playId" in text and "play_id" not in text


def test_cli_schema_writes_valid_json(tmp_path):
    from voxray.cli import main

    out = tmp_path / "schema.json"
    main(["schema", "-o", str(out)])
    assert set(json.loads(out.read_text())) >= {"commands", "events"}
