"""A clip looped under or instead of a call's audio: background music, music on hold."""

from __future__ import annotations

import numpy as np


class LoopedAudio:
    """Hands out a clip `n` samples at a time, from where it left off, looping if asked.

    `take` returns float32 samples times `gain` (for mixing), zero-padded after the
    end of a clip that does not loop, and None once such a clip is over.
    """

    def __init__(self, pcm: np.ndarray, loop: bool = True) -> None:
        self.pcm = np.asarray(pcm, dtype=np.int16)
        self.loop = loop
        self.pos = 0

    @property
    def over(self) -> bool:
        return self.pcm.size == 0 or (not self.loop and self.pos >= self.pcm.size)

    def take(self, n: int, gain: float = 1.0) -> np.ndarray | None:
        if self.over:
            return None
        if self.pos >= self.pcm.size:
            self.pos = 0
        out = np.zeros(n, dtype=np.float32)
        filled = 0
        while filled < n:
            k = min(n - filled, self.pcm.size - self.pos)
            out[filled:filled + k] = self.pcm[self.pos:self.pos + k]
            filled += k
            self.pos += k
            if self.pos >= self.pcm.size:
                if not self.loop:
                    break
                self.pos = 0
        return out * gain if gain != 1.0 else out
