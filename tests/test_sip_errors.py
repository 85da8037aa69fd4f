"""SIP error scenarios replayed by sipp: each hostile or erroneous request gets its one
correct final response, and the UA node goes on answering.

The requests come from one sipp template (tests/sip/errors/request.xml) filled per case;
sipp itself fails the run on any other response or on none.
"""

from __future__ import annotations

import pytest

from tests.sip_env import SIP_ENV
from tests.test_sip import (  # noqa: F401
    HERE,
    peers,
    render,
    sip_request,
    sip_workdir,
    sipp,
    sipp_messages,
    udp_exchange,
    webhook,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ERRORS = HERE / "errors"
SDP = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000"""
SDP_CT = "Content-Type: application/sdp"

# name: (method, callee, extra headers, body, expected final response)
CASES: dict[str, tuple[str, str, str, str, int]] = {
    # An SDP offer that does not parse.
    "invite_unparsable_sdp": ("INVITE", "agent", SDP_CT, "v=0\nm=audio notaport RTP/AVP\nc=IN IP4", 400),
    # Only a codec this node does not have (G.729).
    "invite_no_common_codec": ("INVITE", "agent", SDP_CT,
                               SDP.replace("RTP/AVP 0", "RTP/AVP 18").replace("0 PCMU/8000", "18 G729/8000"), 488),
    # A required extension nobody here supports.
    "invite_unsupported_require": ("INVITE", "agent", SDP_CT + "\nRequire: x-voxray-nonsense", SDP, 420),
    # A body that is not SDP.
    "invite_unsupported_body": ("INVITE", "agent", "Content-Type: text/plain", "hello", 415),
    # In-dialog requests for a dialog that does not exist.
    "bye_without_dialog": ("BYE", "agent", "", "", 481),
    "reinvite_without_dialog": ("INVITE", "agent", SDP_CT, SDP, 481),
    "cancel_without_invite": ("CANCEL", "agent", "", "", 481),
    # Media this node cannot take: video only, SRTP only.
    "invite_video_only": ("INVITE", "agent", SDP_CT,
                          SDP.replace("m=audio [media_port] RTP/AVP 0", "m=video [media_port] RTP/AVP 31")
                          .replace("0 PCMU/8000", "31 H261/90000"), 488),
    "invite_srtp_only": ("INVITE", "agent", SDP_CT, SDP.replace("RTP/AVP", "RTP/SAVP"), 488),
    # A session timer below this node's minimum (RFC 4028).
    "invite_session_interval_too_small": ("INVITE", "agent", SDP_CT + "\nSupported: timer\nSession-Expires: 10",
                                          SDP, 422),
    # No Contact: a dialog cannot be formed.
    "invite_without_contact": ("INVITE", "agent", SDP_CT, SDP, 400),
    # From outside the trusted sources (127.0.0.1/32 in the tests).
    "invite_untrusted_source": ("INVITE", "agent", SDP_CT, SDP, 403),
}
IN_DIALOG = {"bye_without_dialog", "reinvite_without_dialog"}
SOURCE_IP = {"invite_untrusted_source": "127.0.0.2"}


def _request(workdir, method: str, callee: str, headers: str, body: str, expect: int, *,
             in_dialog: bool = False, contact: bool = True):
    """tests/sip/errors/request.xml filled in: one request, the one response it must get."""
    ack = (ERRORS / "ack.inc").read_text() if method == "INVITE" else ""
    return render("errors/request.xml", workdir, ACK=ack, METHOD=method, CALLEE=callee,
                  CONTACT="\n      Contact: <sip:caller@[local_ip]:[local_port]>" if contact else "",
                  TO_TAG=";tag=no-such-dialog" if in_dialog else "",
                  CSEQ=f"{2 if in_dialog else 1} {method}",
                  HEADERS="".join(f"\n      {h}" for h in headers.splitlines()), BODY=body, EXPECT=expect)


def _scenario(name: str, workdir):
    return _request(workdir, *CASES[name], in_dialog=name in IN_DIALOG, contact=name != "invite_without_contact")


@pytest.mark.parametrize("name", list(CASES))
async def test_error_scenario_gets_its_response(voxray_server, sip_workdir, peers, name):  # noqa: F811
    scenario = _scenario(name, sip_workdir)
    run = await peers(sipp(scenario, sip_workdir, f"127.0.0.1:{SIP_ENV.sip_port}", timeout_s=40,
                           ip=SOURCE_IP.get(name, "127.0.0.1")))
    rc = await run.wait(40)
    assert rc == 0, f"{name}: sipp exit {rc}\n{sipp_messages(scenario, sip_workdir)[-3000:]}\n{run.text()[-1500:]}"


async def test_cancel_while_ringing_gets_487(voxray_server, webhook, sip_workdir, peers):  # noqa: F811
    run = await peers(sipp(ERRORS / "cancel_ringing.xml", sip_workdir, "-s", "rule-cancel",
                           f"127.0.0.1:{SIP_ENV.sip_port}", timeout_s=40))
    routed = await webhook.next("/rule")  # the call reached routing before it was cancelled
    assert routed["callee"].startswith("sip:rule-cancel@")
    rc = await run.wait(40)
    assert rc == 0, f"sipp exit {rc}\n{sipp_messages(ERRORS / 'cancel_ringing.xml', sip_workdir)[-3000:]}"


def test_node_still_answers_after_the_error_scenarios(voxray_server):
    msg, _ = sip_request("OPTIONS", f"sip:voxray@127.0.0.1:{SIP_ENV.sip_port}")
    replies = udp_exchange(msg, 5.0, "SIP/2.0 200")
    assert any(r.startswith("SIP/2.0 200") for r in replies), replies


async def test_a_draining_node_answers_invites_503_with_retry_after(voxray_server, sip_workdir, peers):  # noqa: F811
    import ray
    from voxray.cluster.placement import NAMESPACE, ua_node_name

    node = ray.get_actor(ua_node_name(ray.get_runtime_context().get_node_id()), namespace=NAMESPACE)
    assert await node.drain.remote(0.0) >= 0
    try:
        scenario = _request(sip_workdir, "INVITE", "agent", SDP_CT, SDP, 503)
        run = await peers(sipp(scenario, sip_workdir, f"127.0.0.1:{SIP_ENV.sip_port}", timeout_s=40))
        rc = await run.wait(40)
        messages = sipp_messages(scenario, sip_workdir)
        assert rc == 0, f"sipp exit {rc}\n{messages[-3000:]}"
        assert "Retry-After: 5" in messages, messages[-3000:]
    finally:
        await node.undrain.remote()
    assert not await node.draining.remote()
