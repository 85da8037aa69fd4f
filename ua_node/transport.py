"""The seam between a network transport (SIP/RTP, WebRTC) and a call's MediaSession.

A transport delivers the caller's audio as 16 kHz PCM frames to `on_audio`, its own
events (ringing, answer, dtmf, refer progress, ...) to `emit`, and the peer's
hang-up to `on_closed`; it plays the session's 20 ms PCM frames (`send_audio`) at
its own clock, keeping a small queue so that session pacing and network pacing need
not agree exactly. The node wires all three (`UaNodeCore.attach`/`add_call`).
"""

from __future__ import annotations

import collections
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from voxray.protocol import events as ev
from voxray.protocol.rules import CallState

FRAME_16K = 320  # samples in 20 ms at 16 kHz


class MediaTransport(ABC):
    kind: str  # "sip" | "webrtc"

    def __init__(self) -> None:
        self.on_audio: Callable[[bytes], None] | None = None  # set by the call; PCM16 LE @ 16 kHz
        self.on_closed: Callable[[str, str], None] | None = None  # (reason, initiator) when the peer ends it
        self._events_to: Callable[[ev.EventBase], None] | None = None
        self._early: list[ev.EventBase] = []  # emitted before the node wired the call
        self.closed_early: tuple[str, str] | None = None  # the peer left before the node attached
        self._out: collections.deque[np.ndarray] = collections.deque()
        self._out_max = 25  # 500 ms: beyond this the network side stalled; drop the oldest
        # (time.monotonic(), frame) of each frame as the network clock takes it: the echo
        # canceller's reference (appended from pjmedia's clock thread for SIP: deque
        # appends are atomic; the session drains it on the loop).
        self.playout_log: collections.deque[tuple[float, np.ndarray]] = collections.deque(maxlen=64)

    def last_heard(self) -> float | None:
        """Monotonic time the peer was last heard, where the transport knows better than the
        session's decoded frames (None: the session's last frame counts)."""
        return None

    def call_state(self) -> CallState:
        """What the command rules (voxray.protocol.rules) need to know of this call here."""
        return CallState(media=self.kind, set_up=True, answered=True)

    def wire_events(self, events_to: Callable[[ev.EventBase], None]) -> None:
        self._events_to = events_to
        early, self._early = self._early, []
        for event in early:
            events_to(event)

    @property
    def wired(self) -> bool:
        return self._events_to is not None

    def peer_closed(self, reason: str, initiator: str) -> None:
        """The peer ended the call. Before the node attached this transport (a callee that
        answers 486 while the INVITE is still being placed), it is held for the node, so
        that the events emitted first (`reject`) reach the agent before the `hangup`."""
        if self.on_closed is not None:
            self.on_closed(reason, initiator)
        else:
            self.closed_early = (reason, initiator)

    def emit(self, event: ev.EventBase) -> None:
        """An event of this call for its agent (held until the node has wired the call)."""
        if self._events_to is None:
            self._early.append(event)
        else:
            self._events_to(event)

    async def send_audio(self, pcm16k: bytes) -> None:
        """One 20 ms frame from the session's playout."""
        self._out.append(np.frombuffer(pcm16k, dtype="<i2"))
        while len(self._out) > self._out_max:
            self._out.popleft()

    def next_frame(self) -> np.ndarray:
        """What the network clock plays now: queued speech, else silence."""
        if not self._out:
            return np.zeros(FRAME_16K, dtype=np.int16)
        frame = self._out.popleft()
        self.playout_log.append((time.monotonic(), frame))
        return frame

    def clear_output(self) -> None:
        self._out.clear()

    @abstractmethod
    async def close(self) -> None: ...
