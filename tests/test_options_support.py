"""active-call options voxray refuses by name (voxray/protocol/support.py), the schema marks
them, and the small pure helpers behind the options it does act on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxray.deployments.agent_channel import DEFAULT_PING_S, ping_interval
from voxray.media.codecs import CodecError, make_codec
from voxray.media.tts_cache import TtsCache, cache_key
from voxray.protocol.commands import parse_command
from voxray.protocol.errors import ProtocolError
from voxray.protocol.schema import protocol_schema
from voxray.protocol.support import check_supported, problems
from voxray.ua_node.webrtc import strip_ipv6_candidates


def fields(command: dict) -> list[str]:
    return [f for f, _ in problems(parse_command(json.dumps(command)))]


@pytest.mark.parametrize("command, field", [
    ({"command": "invite", "option": {"mediaPass": {"url": "ws://x"}}}, "option.mediaPass"),
    ({"command": "invite", "option": {"subscribe": True}}, "option.subscribe"),
    ({"command": "accept", "option": {"eou": {"type": "tencent", "endpoint": "https://e"}}}, "option.eou.endpoint"),
    ({"command": "invite", "option": {"eou": {"type": "smart-turn"}}}, "option.eou.type"),
    ({"command": "invite", "option": {"vad": {"type": "webrtc"}}}, "option.vad.type"),
    ({"command": "invite", "option": {"tts": {"emotion": "happy"}}}, "option.tts.emotion"),
    ({"command": "tts", "text": "hi", "option": {"maxConcurrentTasks": 2}}, "option.maxConcurrentTasks"),
    ({"command": "tts", "text": "hi", "option": {"codec": "mp3"}}, "option.codec"),
    ({"command": "refer", "callee": "sip:b@x", "options": {"timeout": 30}}, "refer.options.timeout"),
])
def test_an_option_voxray_cannot_honour_is_named_in_a_501(command, field):
    assert fields(command)[0] == field
    with pytest.raises(ProtocolError) as err:
        check_supported(parse_command(json.dumps(command)))
    assert err.value.code == 501 and field in err.value.message


@pytest.mark.parametrize("command", [
    {"command": "invite", "option": {"codec": "opus", "subscribe": False, "eou": {"type": "transcript"},
                                     "vad": {"type": "silero"}, "tts": {"codec": "pcm", "samplerate": 16000}}},
    {"command": "tts", "text": "hi", "cacheKey": "greeting", "option": {"volume": 8, "speed": 1.1}},
    {"command": "refer", "callee": "sip:b@x", "options": {"moh": "hold.wav", "autoHangup": False}},
])
def test_what_voxray_does_passes(command):
    assert fields(command) == []
    check_supported(parse_command(json.dumps(command)))


def test_the_schema_marks_the_refused_fields():
    defs = protocol_schema()["commands"]["$defs"]
    assert "x-voxray-unsupported" in defs["CallOption"]["properties"]["mediaPass"]
    assert "x-voxray-unsupported" in defs["SynthesisOption"]["properties"]["emotion"]
    assert "x-voxray-unsupported" not in defs["SynthesisOption"]["properties"]["cacheKey"]
    assert "x-voxray-unsupported" not in defs["CallOption"]["properties"]["codec"]


def test_ping_interval_reads_the_query():
    assert ping_interval(None) == DEFAULT_PING_S == 20
    assert ping_interval("5") == 5 and ping_interval("0") == 0
    for bad in ("abc", "-1", "99999"):
        with pytest.raises(ProtocolError):
            ping_interval(bad)


def test_tts_cache_keys_and_evicts_least_recent():
    k = dict(provider="piper", speaker=None, speed=1.0, sample_rate=16000, volume=5)
    assert cache_key("hello", **k) == cache_key("hello", **k)
    assert cache_key("hello", **k) != cache_key("hello", **{**k, "speaker": "2"})
    assert cache_key("hello", **k) != cache_key("hello", **{**k, "volume": 8})
    cache = TtsCache(max_bytes=3000)
    a, b, c = (np.full(500, i, np.int16) for i in (1, 2, 3))  # 1000 bytes each
    cache.put("a", a, "piper")
    cache.put("b", b, "piper")
    assert cache.get("a").provider == "piper"  # a is now the most recent
    cache.put("c", c, "piper")
    cache.put("d", c, "piper")
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 3
    assert not cache.put("huge", np.zeros(5000, np.int16), "piper") and cache.bytes <= 3000
    with pytest.raises(ValueError):
        cache.get("a").pcm[0] = 7  # shared between calls: read-only


def test_ipv6_candidates_are_stripped():
    sdp = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
           "a=candidate:1 1 udp 2130706431 192.168.1.5 5000 typ host\r\n"
           "a=candidate:2 1 udp 2130706431 2001:db8::1 5001 typ host\r\n"
           "a=candidate:3 1 udp 2130706431 fe80::1%eth0 5002 typ host\r\n")
    out = strip_ipv6_candidates(sdp)
    assert "192.168.1.5" in out and "2001:db8" not in out and "fe80" not in out
    assert strip_ipv6_candidates("v=0\r\na=candidate:1 1 udp 1 10.0.0.1 1 typ host\r\n").count("candidate") == 1


def test_opus_round_trip_keeps_the_voice():
    enc, dec = make_codec("opus"), make_codec("opus")
    t = np.arange(16000) / 16000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    packets = [enc.encode(pcm[i:i + 320]) for i in range(0, pcm.size, 320)]
    assert all(0 < len(p) < 200 for p in packets)  # one packet per 20 ms, ~32 kbit/s
    out = np.concatenate([dec.decode(p) for p in packets])
    assert abs(out.size - pcm.size) <= 320
    # Same tone back (after the coder's delay): the 440 Hz bin dominates.
    spectrum = np.abs(np.fft.rfft(out[4000:12000].astype(float)))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) < 10
    with pytest.raises(CodecError):  # a bad packet is the agent's error, not the call's end
        dec.decode(b"\xff\xff\xff")
