"""When caller speech over our audio is a barge-in: the rule, free of I/O and clocks.

The listener feeds it one VAD window at a time while a track plays; bench/echo.py runs
the same rule offline over recorded probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxray.media.vad_segmenter import WINDOW_MS

MAX_THRESHOLD = 0.95  # a margin never asks for more certainty than Silero gives speech


def barge_in_threshold(vad_threshold: float, echo_guard: float) -> float:
    """The speech probability a window needs to count: the VAD's threshold plus the echo guard."""
    return min(vad_threshold + echo_guard, MAX_THRESHOLD)


@dataclass
class BargeInRun:
    """Sustained speech: `min_speech_ms` of windows at or above the threshold in a row, once
    the track has played `ignore_ms` (the first instants of a track are often its own echo)."""

    run_ms: float = 0.0

    def reset(self) -> None:
        self.run_ms = 0.0

    def step(self, speech: bool, played_ms: float, min_speech_ms: float, ignore_ms: float) -> bool:
        """One window (`speech`: at or above the threshold); True: barge in now."""
        self.run_ms = self.run_ms + WINDOW_MS if speech else 0.0
        if self.run_ms >= min_speech_ms and played_ms >= ignore_ms:
            self.run_ms = 0.0
            return True
        return False
