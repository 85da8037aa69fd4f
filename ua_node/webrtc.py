"""WebRTC transport for the UA node: aiortc answers the caller's SDP offer.

The caller (a browser, or any WebRTC peer) sends `invite` with `option.offer`; this
module answers it, and audio then flows over SRTP. Inbound Opus arrives decoded at
48 kHz and is turned into 16 kHz mono PCM for the call's MediaSession; outbound, an
audio track hands aiortc one 20 ms frame of the session's playout per tick.
"""

from __future__ import annotations

import asyncio
import fractions
import re
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from voxray.logs import get_logger
from voxray.protocol import events as ev
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import CallOption
from voxray.media.pacing import FrameClock
from voxray.ua_node.node import UaNodeCore
from voxray.ua_node.transport import FRAME_16K, MediaTransport

log = get_logger("voxray.webrtc")

RATE = 16000
PTIME_S = FRAME_16K / RATE  # 20 ms
_AUDIO_MLINE = re.compile(r"^m=audio\s", re.MULTILINE)


# -- SDP and configuration -------------------------------------------------------------

def ice_servers(config: dict[str, Any]) -> list[RTCIceServer]:
    """RTCIceServer list from the `transports.webrtc` config section (IceServer dicts)."""
    return [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in config.get("ice_servers") or []]


def offer_from(option: CallOption) -> RTCSessionDescription:
    """The caller's offer, checked enough to give the agent a clear error before aiortc sees it."""
    sdp = option.offer
    if not sdp or not sdp.strip():
        raise ProtocolError("invite.option.offer must hold the caller's SDP offer on /call/webrtc", 400)
    if not sdp.lstrip().startswith("v=0"):
        raise ProtocolError("invite.option.offer is not SDP: it must start with 'v=0'", 400)
    if not _AUDIO_MLINE.search(sdp):
        raise ProtocolError("the SDP offer has no audio m-line ('m=audio ...'): voxray calls carry audio", 400)
    return RTCSessionDescription(sdp=sdp, type="offer")


def to_mono16(frame: av.AudioFrame) -> np.ndarray:
    """Any decoded frame (aiortc gives packed s16, often stereo) -> mono int16 samples."""
    pcm = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if pcm.dtype != np.int16:  # float formats: scale to int16 range
        pcm = np.clip(pcm * 32767.0, -32768, 32767)
    if frame.format.is_planar:
        mono = pcm.mean(axis=0) if channels > 1 else pcm[0]
    else:
        mono = pcm.reshape(-1, channels).mean(axis=1) if channels > 1 else pcm.reshape(-1)
    return mono.astype(np.int16)


# -- outbound audio --------------------------------------------------------------------

class PlayoutTrack(MediaStreamTrack):
    """The session's playout as a WebRTC audio track, 20 ms per `recv()`.

    Paced by an absolute clock (like aiortc's AudioStreamTrack) so that a late tick
    does not shift every later frame: the remote side's jitter buffer sees a steady rate.
    """

    kind = "audio"

    def __init__(self, transport: MediaTransport) -> None:
        super().__init__()
        self._transport = transport
        self._clock = FrameClock(PTIME_S)
        self._pts: int | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._pts = 0 if self._pts is None else self._pts + FRAME_16K
        await self._clock.tick()
        return self._frame(self._transport.next_frame())

    def _frame(self, pcm: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(pcm.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


# -- the transport ---------------------------------------------------------------------

class WebRtcTransport(MediaTransport):
    kind = "webrtc"

    def __init__(self, call_id: str, pc: RTCPeerConnection) -> None:
        super().__init__()
        self.call_id = call_id
        self.pc = pc
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        # Decoded Opus (48 kHz, stereo) -> 16 kHz mono in one libswresample call: 18 us a
        # frame, where numpy's channel mean plus our FIR resampler took 47.
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)

    async def answer(self, offer: RTCSessionDescription) -> str:
        """Apply the offer, add our audio, and return the answer with its ICE candidates."""
        try:
            await self.pc.setRemoteDescription(offer)
        except Exception as exc:  # aiortc raises ValueError/OperationError/... for bad offers
            raise ProtocolError(f"the SDP offer was refused: {exc or type(exc).__name__}", 400) from exc
        if not any(t.kind == "audio" for t in self.pc.getTransceivers()):
            raise ProtocolError("the SDP offer has no usable audio section", 400)
        self.pc.addTrack(PlayoutTrack(self))
        try:
            # aiortc finishes ICE gathering inside setLocalDescription: the answer is complete.
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:
            raise ProtocolError(f"no answer to this SDP offer: {exc or type(exc).__name__}", 400) from exc
        return self.pc.localDescription.sdp

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return  # a video track in the offer is answered but ignored
        self._spawn(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        """Remote audio -> mono -> 16 kHz -> the session, frame by frame."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self._peer_gone("remote track ended")
                return
            pcm = self._to16k(frame)
            if not pcm.size or self.on_audio is None:
                continue
            try:
                self.on_audio(pcm.astype("<i2").tobytes())
            except Exception:  # one bad frame must not stop the caller's audio for the rest of the call
                log.exception("inbound frame dropped")

    def _to16k(self, frame: av.AudioFrame) -> np.ndarray:
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if len(out) == 1:
            return out[0]
        return np.concatenate(out) if out else np.zeros(0, np.int16)

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("peer connection state", extra={"state": state})
        if state in ("failed", "closed"):
            self._peer_gone(f"peer connection {state}")

    def _peer_gone(self, why: str) -> None:
        if self._closing:
            return
        self._closing = True
        log.info("peer gone", extra={"why": why})
        self.peer_closed("peer_gone", "caller")

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # keep a reference: the loop holds tasks only weakly
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        await self.pc.close()


# -- registration ----------------------------------------------------------------------

def strip_ipv6_candidates(sdp: str) -> str:
    """The SDP without IPv6 ICE candidates (active-call's default; `enableIpv6: true` keeps them)."""
    def ipv6(line: str) -> bool:
        if not line.startswith("a=candidate:"):
            return False
        parts = line.split()
        return len(parts) > 4 and ":" in parts[4]  # foundation component transport priority ADDRESS
    lines = sdp.splitlines()
    kept = [line for line in lines if not ipv6(line)]
    return sdp if len(kept) == len(lines) else "\r\n".join(kept) + "\r\n"


async def open_webrtc(call_id: str, option: CallOption, config: dict[str, Any]) -> tuple[WebRtcTransport, ev.Answer]:
    offer = offer_from(option)  # validate before allocating sockets
    if not option.enable_ipv6:
        offer = RTCSessionDescription(sdp=strip_ipv6_candidates(offer.sdp), type="offer")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(config)))
    transport = WebRtcTransport(call_id, pc)
    try:
        # active-call's handshakeTimeout (seconds): how long setting up the answer may take.
        sdp = await asyncio.wait_for(transport.answer(offer), option.handshake_timeout or None)
    except asyncio.TimeoutError:
        await transport.close()
        raise ProtocolError(f"no WebRTC answer within handshakeTimeout ({option.handshake_timeout:g} s)",
                            408) from None
    except BaseException:
        await transport.close()
        raise
    if not option.enable_ipv6:
        sdp = strip_ipv6_candidates(sdp)
    return transport, ev.Answer(track_id=call_id, sdp=sdp)


def register(core: UaNodeCore, config: dict[str, Any]) -> None:
    """Make `webrtc` calls available on this UA node."""
    async def factory(call_id: str, option: CallOption) -> tuple[WebRtcTransport, ev.Answer]:
        return await open_webrtc(call_id, option, config)

    core.register_transport("webrtc", factory)
