"""SIP routing and message helpers, without a network or Ray."""

from __future__ import annotations

import pytest

from voxray.ua_node.sip.config import SipRule, SipSettings
from voxray.ua_node.sip.routing import choose_route, validate_rules


def test_rules_first_then_webhook_then_480():
    s = SipSettings(webhook_url="http://hook/in", rules=[
        SipRule(caller=r"^sip:spam", reject=603),
        SipRule(callee=r"^sip:support@", url="http://support/in"),
        SipRule(caller=r"alice", callee=r"sales", url="http://sales/in"),
    ])
    assert choose_route(s, "sip:spam1@x", "sip:support@y").reject == 603
    assert choose_route(s, "sip:bob@x", "sip:support@y").url == "http://support/in"
    assert choose_route(s, "sip:alice@x", "sip:sales@y").url == "http://sales/in"
    assert choose_route(s, "sip:bob@x", "sip:sales@y").url == "http://hook/in"  # both regexes must match
    assert choose_route(SipSettings(), "sip:a@x", "sip:b@y").reject == 480


def test_bad_rule_regex_is_refused_at_startup():
    import re

    with pytest.raises(re.error):
        validate_rules([SipRule(callee="([unclosed")])


def test_sip_message_helpers():
    pytest.importorskip("pjsua2")
    from voxray.ua_node.sip.pjcall import header_tag, plain_uri, sip_body, sip_header

    msg = ("INVITE sip:agent@127.0.0.1 SIP/2.0\r\n"
           "f: \"Alice\" <sip:alice@10.0.0.1:5062>;tag=abc123\r\n"
           "To: <sip:agent@127.0.0.1>\r\nCall-ID: xyz@host\r\n\r\nv=0\r\n")
    assert sip_header(msg, "from", "f") == "\"Alice\" <sip:alice@10.0.0.1:5062>;tag=abc123"
    assert plain_uri(sip_header(msg, "from", "f")) == "sip:alice@10.0.0.1:5062"
    assert header_tag(sip_header(msg, "from", "f")) == "abc123"
    assert header_tag(sip_header(msg, "to", "t")) is None
    assert sip_body(msg) == "v=0\r\n"
    assert sip_body("OPTIONS sip:x SIP/2.0\r\n\r\n") is None


async def test_music_on_hold_refuses_what_play_refuses(tmp_path):
    import asyncio
    import wave

    import numpy as np

    from tests.fake_models import FakeModels, Sink, tone
    from voxray.media.config import MediaConfig
    from voxray.media.speaker import Speaker
    from voxray.protocol.commands import Play
    from voxray.protocol.errors import ProtocolError
    from voxray.protocol.options import CallOption
    from voxray.ua_node.node import UaNodeCore
    from voxray.ua_node.sip.endpoint import SipEndpoint
    from voxray.ua_node.sip.incall import InCallCommands

    allowed, other = tmp_path / "media", tmp_path / "secret"
    allowed.mkdir()
    other.mkdir()
    for path in (allowed / "hold.wav", other / "hold.wav"):
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(tone(200, 8000).astype("<i2").tobytes())
    (allowed / "notes.txt").write_text("not audio")
    config = MediaConfig(play_dirs=(str(allowed),))
    endpoint = SipEndpoint(UaNodeCore(FakeModels(), config), SipSettings(enabled=True),
                           asyncio.get_running_loop())
    incall = InCallCommands(endpoint)
    speaker = Speaker("c", CallOption(codec="pcm"), FakeModels(), Sink(), config, caller_speaking=lambda: False)

    async def outcome(load) -> int | np.ndarray:
        try:
            return await load()
        except ProtocolError as exc:
            return exc.code

    cases = [str(other / "hold.wav"),                       # outside the allowed folders: 403
             f"file://{other / 'hold.wav'}",                # the same as a file:// URL: 403
             "http://127.0.0.1:9/hold.wav",                 # a loopback URL: 403
             "ftp://example.com/hold.wav",                  # an unsupported scheme: 400
             str(allowed / "missing.wav"),                  # no such file: 404
             str(allowed / "notes.txt")]                    # not audio: 415
    for url in cases:
        moh = await outcome(lambda: incall.load_moh(url))
        play = await outcome(lambda: speaker.play(Play(url=url)))
        assert isinstance(moh, int) and moh == play, (url, moh, play)
    ok = await incall.load_moh(str(allowed / "hold.wav"))
    assert ok.size == 3200 and np.abs(ok).max() > 4000  # 200 ms at 16 kHz
    await endpoint.http.aclose()


def test_the_invite_headers_for_the_webhook_are_its_header_lines():
    from voxray.ua_node.sip.pjcall import sip_headers

    msg = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x\r\nCall-ID: 1\r\nContent-Length: 3\r\n\r\nv=0"
    assert sip_headers(msg) == ["Via: SIP/2.0/UDP x", "Call-ID: 1", "Content-Length: 3"]


def test_webhook_urls_are_logged_without_their_tokens():
    from voxray.ua_node.sip.routing import redacted

    assert redacted("http://127.0.0.1:8000/agent/webhook?token=s3cret") == "http://127.0.0.1:8000/agent/webhook?token=***"
    assert "s3cret" not in redacted("https://h/x?a=1&token=s3cret") and redacted("http://h/x") == "http://h/x"
