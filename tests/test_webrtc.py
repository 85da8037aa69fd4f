"""WebRTC calls, aiortc to aiortc: the transport alone, then whole calls on Ray Serve
(an offer in `invite`, SRTP audio both ways)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import numpy as np
import pytest

from tests.conftest import RECORDINGS, SENTENCE
from tests.recordings import assert_recorded
from tests.rtcpeer import RtcPeer
from tests.test_models import wer
from tests.wsclient import CallClient
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import CallOption
from voxray.ua_node.webrtc import offer_from, open_webrtc, to_mono16

VIDEO_ONLY_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n"
)


def _tone(seconds: float, rate: int = 16000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


# -- the transport alone (no Ray) -------------------------------------------------------

async def test_transport_moves_audio_both_ways():
    peer = RtcPeer(_tone(3.0))
    transport, answer = await open_webrtc("t1", CallOption(offer=await peer.offer()), {})
    got: list[bytes] = []
    transport.on_audio = got.append
    closed: list[tuple[str, str]] = []
    transport.on_closed = lambda reason, initiator: closed.append((reason, initiator))
    try:
        assert answer.track_id == "t1" and "a=candidate" in answer.sdp
        for frame in _tone(1.0).reshape(-1, 320):
            await transport.send_audio(frame.tobytes())
        await peer.accept(answer.sdp)
        await asyncio.sleep(2.5)
        inbound = np.frombuffer(b"".join(got), dtype="<i2")
        assert inbound.size > 16000 and _rms(inbound) > 2000, "caller audio did not arrive at 16 kHz"
        assert all(len(b) % 2 == 0 for b in got)
        heard = peer.heard_since(0)
        assert _rms(heard) > 1000, "session audio did not reach the peer"
        await peer.close()
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.1)
        assert closed and closed[0] == ("peer_gone", "caller")
    finally:
        await transport.close()
        await peer.close()


async def test_handshake_timeout_bounds_the_answer():
    """active-call's handshakeTimeout (s): an answer that takes longer is a 408, nothing left open."""
    peer = RtcPeer(_tone(1.0))
    try:
        offer = await peer.offer()
        with pytest.raises(ProtocolError) as err:
            await open_webrtc("t2", CallOption(offer=offer, handshake_timeout=0.0005), {})
        assert err.value.code == 408 and "handshakeTimeout" in err.value.message
        transport, answer = await open_webrtc("t3", CallOption(offer=offer, handshake_timeout=30), {})
        await transport.close()
        assert answer.sdp.startswith("v=0")
    finally:
        await peer.close()


@pytest.mark.parametrize("offer, says", [
    (None, "must hold"), ("  ", "must hold"), ("hello", "is not SDP"), (VIDEO_ONLY_OFFER, "no audio m-line"),
])
def test_offer_checks(offer, says):
    with pytest.raises(ProtocolError) as err:
        offer_from(CallOption(offer=offer))
    assert err.value.code == 400 and says in err.value.message


def test_to_mono16_averages_stereo():
    import av

    stereo = np.array([[1000, 3000] * 480], dtype=np.int16)  # packed L R L R ...
    frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    mono = to_mono16(frame)
    assert mono.dtype == np.int16 and mono.size == 480 and np.all(mono == 2000)


# -- whole calls on Ray Serve -------------------------------------------------------------

async def _call(server: str, peer: RtcPeer, call_id: str | None = None, **option) -> CallClient:
    """Connect as the agent, invite with the peer's offer, and hand the peer the answer."""
    client = await CallClient.connect(f"ws://{server}/call/webrtc" + (f"?id={call_id}" if call_id else ""))
    await client.send({"command": "invite", "option": {"caller": "rtc-tester", "offer": await peer.offer(),
                                                       **option}})
    answer = await client.wait_for("answer", timeout=60)
    assert answer["sdp"].startswith("v=0") and "m=audio" in answer["sdp"]
    await peer.accept(answer["sdp"])
    return client


def _rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0


@pytest.mark.e2e
async def test_webrtc_speech_becomes_asr_final_and_tts_comes_back_over_srtp(voxray_server, speech16k):
    # Half a second of lead-in: the first packets go out while DTLS is still settling.
    peer = RtcPeer(np.concatenate([np.zeros(8000, np.int16), speech16k]))
    call_id = uuid.uuid4().hex
    client = await _call(voxray_server, peer, call_id, recorder={"recorderFile": "rtc-{id}"})
    try:
        final = await client.wait_for("asrFinal", timeout=90)
        assert wer(SENTENCE, final["text"]) <= 0.5, final["text"]
        assert "speaking" in client.names()[:client.names().index("asrFinal")]

        calls = httpx.get(f"http://{voxray_server}/call/lists", timeout=10).json()["calls"]
        assert any(c["path"] == "/call/webrtc" and c["caller"] == "rtc-tester" for c in calls), calls

        n, heard_from = len(client.events), len(peer.heard)
        await client.send({"command": "tts", "text": "Sure, a table for two at seven.", "playId": "r1"})
        await client.wait_for("trackStart", timeout=60, after=n, playId="r1")
        end = await client.wait_for("trackEnd", timeout=60, after=n, playId="r1")
        assert end["duration"] > 500
        await asyncio.sleep(0.5)  # the last packets and the receiver's jitter buffer
        heard = peer.heard_since(heard_from)
        assert heard.size > peer.heard_rate, "less than a second of audio came back"
        assert _rms(heard) > 300 and np.abs(heard).max() > 3000, f"TTS audio is silent (rms {_rms(heard):.0f})"

        await client.send({"command": "hangup", "reason": "done"})
        hangup = await client.wait_for("hangup", timeout=20)
        assert hangup["reason"] == "done" and hangup["initiator"] == "agent"
    finally:
        await client.close()
        await peer.close()
    # The UA worker recorded the call: the caller left, the agent right, linked from its record.
    await assert_recorded(voxray_server, call_id, RECORDINGS / f"rtc-{call_id}.wav", caller_s=1.0, agent_s=1.0)


@pytest.mark.e2e
async def test_peer_going_away_hangs_the_call_up(voxray_server):
    peer = RtcPeer(np.zeros(16000, np.int16))
    client = await _call(voxray_server, peer)
    try:
        await asyncio.sleep(1.0)
        await peer.close()
        hangup = await client.wait_for("hangup", timeout=60)
        assert hangup["initiator"] == "caller", hangup
    finally:
        await client.close()


@pytest.mark.e2e
@pytest.mark.parametrize("offer, says", [
    (None, "must hold the caller's SDP offer"),
    ("not sdp at all", "is not SDP"),
    (VIDEO_ONLY_OFFER, "no audio m-line"),
    ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "refused"),
])
async def test_bad_offer_gets_an_error_and_the_socket_stays_usable(voxray_server, offer, says):
    client = await CallClient.connect(f"ws://{voxray_server}/call/webrtc")
    peer = RtcPeer(np.zeros(1600, np.int16))
    try:
        option = {"caller": "bad"} | ({"offer": offer} if offer is not None else {})
        await client.send({"command": "invite", "option": option})
        err = await client.wait_for("error", timeout=60)
        assert err["code"] == 400 and says in err["error"], err
        # Same socket: a good offer now sets the call up.
        await client.send({"command": "invite", "option": {"caller": "good", "offer": await peer.offer()}})
        await client.wait_for("answer", timeout=60)
        await client.send({"command": "hangup"})
        await client.wait_for("hangup", timeout=20)
    finally:
        await client.close()
        await peer.close()


@pytest.mark.e2e
async def test_iceservers_returns_a_list(voxray_server):
    r = httpx.get(f"http://{voxray_server}/iceservers", timeout=10)
    assert r.status_code == 200 and isinstance(r.json(), list)
