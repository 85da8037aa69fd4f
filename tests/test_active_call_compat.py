"""Events as strict active-call clients parse them (tests/active_call_rules.py), no server.

Real calls on /call, /call/webrtc and /call/sip are checked too: every CallClient
validates every event it receives (tests/wsclient.py, tests/conftest.py)."""

from __future__ import annotations

import json

import voxray.protocol.events as e
from tests.active_call_rules import violations


def wire(event: e.EventBase, track_id: str = "call-1") -> dict:
    return json.loads(e.dump_event(event, track_id))


def test_the_rules_catch_what_a_strict_client_refuses():
    assert violations({"event": "answer", "timestamp": 1}) == ["answer.trackId missing", "answer.sdp missing"]
    assert violations({"event": "other", "trackId": "t", "timestamp": 1, "sender": "x", "extra": {"n": 1}}) == [
        "other.extra is {'n': 1}, not strmap"]
    assert violations({"event": "hangup", "trackId": "t", "timestamp": 1, "startTime": "a", "hangupTime": "b",
                       "from": {"username": "alice"}})[0].startswith("hangup.from is")
    assert violations({"event": "nope"}) == ["unknown event 'nope'"]


def test_every_event_voxray_sends_parses_once_filled():
    events = [
        e.Incoming(), e.Answer(), e.RejectEvent(), e.RingingEvent(), e.Speaking(start_time=1),
        e.Silence(start_time=1, duration=2), e.Eou(), e.AsrDelta(index=0, start_time=1, end_time=2, text="hi"),
        e.AsrFinal(index=0, start_time=1, end_time=2, text="hi"), e.TrackStart(play_id="p"), e.TrackEnd(),
        e.Interruption(play_id="p"), e.Dtmf(digit="5"), e.Metrics(key="ttfb.asr.whisper", duration=3),
        e.Error(sender="protocol", error="bad"), e.AddHistory(speaker="user", text="hi"),
        e.AnswerMachineDetection(start_time=1, end_time=2, text="hi"), e.Binary(data=[1, 2]),
        e.Other(sender="x", extra={"n": 1, "s": "v", "o": {"a": 1}}),
        e.HangupEvent(reason="done", from_=e.Attendee.from_uri("sip:alice@example.com:5060;transport=udp"),
                      to=e.Attendee(username="bob")),
    ]
    for event in events:
        out = wire(event)
        assert violations(out) == [], (out, violations(out))
    assert wire(e.Answer())["sdp"] == "" and wire(e.Error(sender="x", error="y"))["trackId"] == "call-1"
    assert wire(e.Other(extra={"n": 1}))["extra"] == {"n": "1"}
    assert wire(e.TrackStart(track_id="tts-1"))["trackId"] == "tts-1"  # a track's own id is kept


def test_a_sip_uri_becomes_user_realm_and_source():
    a = e.Attendee.from_uri("sip:alice@example.com:5060;transport=udp")
    assert (a.username, a.realm, a.source) == ("alice", "example.com", "sip:alice@example.com:5060;transport=udp")
    assert e.Attendee.from_uri("alice").model_dump() == {"username": "alice", "realm": "", "source": "alice"}
    assert e.Attendee.from_uri("sip:gw.example.com").username == ""
    assert e.Attendee.from_uri("tel:+15551234").username == "+15551234"
