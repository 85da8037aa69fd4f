"""Outgoing audio: a queue of tracks cut into fixed frames. Pure bookkeeping, no I/O.

A track is one `tts` (or `play`) command's audio. Its audio may still be arriving
(streamed synthesis) while earlier frames play. The session's pacing loop asks for
one frame per ptime and sends it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Track:
    play_id: str
    sample_rate: int
    auto_hangup: bool = False
    wait_input_timeout: float | None = None
    text: str = ""
    chunks: deque = field(default_factory=deque)
    buffered: int = 0  # samples waiting
    fed: int = 0  # samples received in all
    played: int = 0  # samples sent
    feeding_done: bool = False
    started: bool = False
    started_at: float = 0.0  # monotonic time of the first frame
    failed: str | None = None

    def feed(self, pcm: np.ndarray) -> None:
        if pcm.size:
            self.chunks.append(pcm)
            self.buffered += pcm.size
            self.fed += pcm.size

    def finish_feeding(self) -> None:
        self.feeding_done = True

    @property
    def exhausted(self) -> bool:
        return self.feeding_done and self.buffered == 0

    def take(self, n: int) -> np.ndarray | None:
        """Next n samples; a short final frame is padded with silence. None if not ready."""
        if self.buffered < n and not self.feeding_done:
            return None
        if self.buffered == 0:
            return None
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n and self.chunks:
            head = self.chunks[0]
            k = min(n - filled, head.size)
            out[filled:filled + k] = head[:k]
            filled += k
            if k == head.size:
                self.chunks.popleft()
            else:
                self.chunks[0] = head[k:]
        self.buffered -= filled
        self.played += filled
        return out

    def ms(self, samples: int) -> int:
        return int(samples * 1000 / self.sample_rate)


class Playout:
    """Tracks in play order; the head track is the one playing."""

    def __init__(self) -> None:
        self.tracks: deque[Track] = deque()
        self.paused = False

    @property
    def current(self) -> Track | None:
        return self.tracks[0] if self.tracks else None

    def enqueue(self, track: Track) -> None:
        self.tracks.append(track)

    def drop_all(self) -> list[Track]:
        dropped = list(self.tracks)
        self.tracks.clear()
        return dropped

    def drop_queued(self) -> list[Track]:
        """Everything behind the playing track (graceful interrupt)."""
        if len(self.tracks) <= 1:
            return []
        head = self.tracks.popleft()
        dropped = list(self.tracks)
        self.tracks.clear()
        self.tracks.append(head)
        return dropped

    def pop_finished(self) -> Track | None:
        if self.tracks and self.tracks[0].exhausted:
            return self.tracks.popleft()
        return None
