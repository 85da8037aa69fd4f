"""A WebRTC caller for tests: an aiortc peer that speaks a PCM buffer and records what it hears."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from voxray.media.pacing import FrameClock
from voxray.ua_node.webrtc import to_mono16

RATE = 16000
FRAME = 320  # 20 ms


class SpeechTrack(MediaStreamTrack):
    """Plays `pcm` (16 kHz mono int16) once in real time, then silence for ever."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray) -> None:
        super().__init__()
        self.pcm = pcm.astype(np.int16)
        self.pos: int | None = None
        self.clock = FrameClock(FRAME / RATE)
        self.done = asyncio.Event()  # set when the speech has been played out

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.pos = 0 if self.pos is None else self.pos + FRAME
        await self.clock.tick()
        chunk = self.pcm[self.pos:self.pos + FRAME]
        if chunk.size < FRAME:
            self.done.set()
            chunk = np.pad(chunk, (0, FRAME - chunk.size))
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.pos
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class RtcPeer:
    """The caller's side of a WebRTC call; `heard` collects the remote audio (48 kHz mono)."""

    def __init__(self, pcm: np.ndarray) -> None:
        self.pc = RTCPeerConnection()
        self.speech = SpeechTrack(pcm)
        self.pc.addTrack(self.speech)
        self.heard: list[np.ndarray] = []
        self.heard_rate = 48000
        self._reader: asyncio.Task | None = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.heard_rate = frame.sample_rate
                self.heard.append(to_mono16(frame))
        except MediaStreamError:
            pass

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    def heard_since(self, index: int) -> np.ndarray:
        return np.concatenate(self.heard[index:]) if len(self.heard) > index else np.zeros(0, np.int16)

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
        await self.pc.close()
