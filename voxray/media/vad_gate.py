"""Which VAD chunks need Silero at all. Pure logic, no I/O.

Most of a call is not the caller talking: they listen, or the line carries its own
steady noise between turns. Silero costs the same for every 32 ms window, so a call
that only streams spends most of its media-plane CPU telling line noise from speech
over and over. Speech is louder than the noise it is heard over, so between turns a
chunk whose every window is within `margin_db` of the noise Silero itself last called
quiet is scored as quiet without running the model.

What keeps this safe:
- the reference is learnt only from windows Silero scored as not speech (`quiet_prob`),
  `learn_windows` of them before anything is skipped, and it is the quietest of the
  recent ones, so a loud non-speech sound cannot raise it over a caller's voice;
- a window louder than the reference by more than the margin, any window while a turn
  may be starting or going on, and any chunk after one Silero was unsure of, run the
  model;
- the model runs at least once every `refresh_windows` even on steady noise, so a
  change the levels do not show (the noise stops and a soft voice starts below its old
  level) is seen within that time, and Silero's state keeps up with the line.

A skipped window costs a few microseconds (its level) instead of Silero's ~60-150 µs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from voxray.media.vad_segmenter import WINDOW  # Silero's window at 16 kHz (32 ms)

_FLOOR = 1e-10  # -100 dBFS: digital silence has a level too


@dataclass(frozen=True)
class GateConfig:
    margin_db: float = 6.0  # above the quiet reference by more than this: run Silero (0: always run)
    quiet_prob: float = 0.1  # Silero below this: the window was line noise, not a voice
    learn_windows: int = 8  # quiet windows scored before any chunk is skipped
    memory_windows: int = 16  # the reference is the quietest of this many recent quiet windows
    refresh_windows: int = 16  # run Silero at least this often (windows, 512 ms)


def window_levels_db(pcm16k: np.ndarray) -> np.ndarray:
    """The RMS level of each whole 512-sample window of int16 audio, in dBFS."""
    n = pcm16k.size // WINDOW
    x = pcm16k[: n * WINDOW].reshape(n, WINDOW).astype(np.float32) / 32768.0
    return 10.0 * np.log10(np.maximum(np.einsum("ij,ij->i", x, x) / WINDOW, _FLOOR))


class QuietGate:
    """Fed each chunk's window levels, says whether Silero must score it; fed Silero's scores back."""

    def __init__(self, config: GateConfig | None = None) -> None:
        self.config = config or GateConfig()
        self._quiet: deque[float] = deque(maxlen=self.config.memory_windows)
        self._learnt = 0  # quiet windows seen since the last one Silero was unsure of
        self._since_run = 0  # windows skipped since the model last ran
        self.skipped = 0  # windows scored without the model (for logs and tests)
        # The chunk just let through is louder than the line after skipped ones: Silero's
        # state is as old as the skipping, so it should hear the last skipped chunk first.
        self.stale = False

    @property
    def reference_db(self) -> float | None:
        """The line's quiet level as Silero last confirmed it; None until it has learnt one."""
        return min(self._quiet) if self._learnt >= self.config.learn_windows else None

    def skip(self, levels_db: np.ndarray, in_turn: bool) -> bool:
        """True: score this chunk's windows as quiet (0.0) without the model."""
        c = self.config
        ref = self.reference_db
        loud = ref is not None and float(np.max(levels_db)) > ref + c.margin_db
        run = (c.margin_db <= 0 or in_turn or ref is None
               or self._since_run + len(levels_db) > c.refresh_windows or loud)
        self.stale = run and loud and self._since_run > 0
        if run:
            return False
        self._since_run += len(levels_db)
        self.skipped += len(levels_db)
        return True

    def observe(self, levels_db: np.ndarray, probs: list[float]) -> None:
        """Silero's scores of a chunk it ran on."""
        self._since_run = 0
        for level, prob in zip(levels_db, probs, strict=True):
            if prob < self.config.quiet_prob:
                self._quiet.append(float(level))
                self._learnt += 1
            else:
                # Unsure, or a voice: learn the line again after this turn.
                self._quiet.clear()
                self._learnt = 0
