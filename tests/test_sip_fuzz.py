"""Fuzzing the SIP entry: mutated and hostile datagrams never take the UA node down."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sip_env import SIP_ENV
from tests.test_sip import sip_request, udp_exchange

pytestmark = pytest.mark.e2e

SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 49170 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")


def _template(method: str) -> bytes:
    ruri = f"sip:busy@127.0.0.1:{SIP_ENV.sip_port}"
    body = SDP if method == "INVITE" else ""
    extra = "Content-Type: application/sdp\r\n" if body else ""
    return sip_request(method, ruri, body, extra)[0]


@st.composite
def hostile_datagram(draw) -> bytes:
    msg = _template(draw(st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER", "INFO"])))
    head, _, body = msg.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "dup", "garble", "bytes", "huge", "truncate", "length", "sdp"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop" and len(lines) > 1:
            lines.pop(i)
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "garble":
            name = lines[i].split(b":", 1)[0]
            lines[i] = name + b": " + draw(st.binary(max_size=80))
        elif op == "bytes":
            lines[i] = draw(st.binary(min_size=1, max_size=200))
        elif op == "huge":
            lines.append(b"X-Huge: " + b"A" * draw(st.integers(1000, 60000)))
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, max(len(lines[i]) - 1, 0)))]
        elif op == "length":
            lines.append(b"Content-Length: " + str(draw(st.integers(-5, 10**9))).encode())
        elif op == "sdp":
            body = draw(st.sampled_from([b"v=0\r\nm=audio x RTP/AVP\r\n", b"m=video 0 RTP/AVP 31\r\n",
                                         b"\x00\x01\x02", b"c=IN IP4 999.1.1.1\r\n" * 50]))
    return (b"\r\n".join(lines) + b"\r\n\r\n" + body)[:65000]


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(datagram=hostile_datagram())
def test_hostile_datagrams_get_sip_errors_or_silence(voxray_server, datagram):
    replies = udp_exchange(datagram, 0.15)
    for r in replies:
        # Whatever comes back is a SIP response (an error or, for a still-valid request, its
        # normal answer): never garbage, never a crash.
        assert r.startswith("SIP/2.0 "), r[:200]


def _front_loads() -> list[int]:
    import ray

    from voxray.cluster.placement import NAMESPACE, ua_node_name

    node = ray.get_actor(ua_node_name(ray.get_runtime_context().get_node_id()), namespace=NAMESPACE)
    return [t["load"] for t in (ray.get(node.front_state.remote(), timeout=30) or {}).get("targets", [])]


def test_node_is_alive_and_routing_after_the_fuzz(voxray_server):
    import time

    # The fuzz's INVITEs hold no slot in the front's call count once answered: the last of
    # them is answered within 16 s (4 workers x 4 s each when none answers). A count left
    # over held a slot on a worker with no call for up to a minute (the SIP pool tests' CI
    # failure).
    deadline = time.monotonic() + 25
    while any(loads := _front_loads()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(loads), loads
    msg, _ = sip_request("OPTIONS", f"sip:voxray@127.0.0.1:{SIP_ENV.sip_port}")
    replies = udp_exchange(msg, 5.0, "SIP/2.0 200")
    assert any(r.startswith("SIP/2.0 200") for r in replies), replies
    replies = udp_exchange(_template("INVITE"), 10.0, "SIP/2.0 486")
    assert any(r.startswith("SIP/2.0 486") for r in replies), replies


def _exchange_from(source_ip: str, payload: bytes, timeout: float, want: str) -> list[str]:
    import socket
    import time

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source_ip, 0))
        port = s.getsockname()[1]
        s.sendto(payload.replace(b"127.0.0.1:0", f"{source_ip}:{port}".encode()), ("127.0.0.1", SIP_ENV.sip_port))
        s.settimeout(0.3)
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(r.startswith(want) for r in out):
            try:
                out.append(s.recv(65535).decode(errors="replace"))
            except socket.timeout:
                pass
        return out


def test_invite_from_an_untrusted_source_is_forbidden(voxray_server):
    # 127.0.0.2 is loopback too, but not in the trusted list (127.0.0.1/32).
    ruri = f"sip:someone@127.0.0.1:{SIP_ENV.sip_port}"
    msg = sip_request("INVITE", ruri, SDP, "Content-Type: application/sdp\r\n")[0]
    replies = _exchange_from("127.0.0.2", msg, 10.0, "SIP/2.0 403")
    assert any(r.startswith("SIP/2.0 403") for r in replies), replies
    # The same INVITE from a trusted address is routed as usual (busy@ is rejected by a rule).
    replies = udp_exchange(_template("INVITE"), 10.0, "SIP/2.0 486")
    assert any(r.startswith("SIP/2.0 486") for r in replies), replies


def test_trusted_sources_rules():
    from voxray.ua_node.sip.trust import TrustedSources, registrar_host

    t = TrustedSources(["10.1.0.0/16", "::1/128"], ["192.0.2.7"])
    assert t.allows("10.1.2.3:5060") and t.allows("[::1]:5060") and t.allows("192.0.2.7:5070")
    assert not t.allows("10.2.0.1:5060") and not t.allows("garbage") and t.rejected == 2
    assert TrustedSources([]).allows("203.0.113.9:5060")  # nothing configured: open
    assert registrar_host("sip:pbx.example:5060;transport=udp") == "pbx.example"
    assert registrar_host("sip:127.0.0.1") == "127.0.0.1"
