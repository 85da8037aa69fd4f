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
