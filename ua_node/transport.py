"""The seam between a network transport (SIP/RTP, WebRTC) and a call's MediaSession.

A transport delivers the caller's audio as 16 kHz PCM frames to `on_audio` and
plays the session's 20 ms PCM frames (`send_audio`) at its own clock, keeping a
small queue so that session pacing and network pacing need not agree exactly.
"""

from __future__ import annotations

import collections
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

FRAME_16K = 320  # samples in 20 ms at 16 kHz


class MediaTransport(ABC):
    kind: str  # "sip" | "webrtc"

    def __init__(self) -> None:
        self.on_audio: Callable[[bytes], None] | None = None  # set by the call; PCM16 LE @ 16 kHz
        self.on_closed: Callable[[str, str], None] | None = None  # (reason, initiator) when the peer ends it
        self.on_dtmf: Callable[[str], None] | None = None
        self._out: collections.deque[np.ndarray] = collections.deque()
        self._out_max = 25  # 500 ms: beyond this the network side stalled; drop the oldest

    async def send_audio(self, pcm16k: bytes) -> None:
        """One 20 ms frame from the session's playout."""
        self._out.append(np.frombuffer(pcm16k, dtype="<i2"))
        while len(self._out) > self._out_max:
            self._out.popleft()

    def next_frame(self) -> np.ndarray:
        """What the network clock plays now: queued speech, else silence."""
        return self._out.popleft() if self._out else np.zeros(FRAME_16K, dtype=np.int16)

    def clear_output(self) -> None:
        self._out.clear()

    @abstractmethod
    async def close(self) -> None: ...
