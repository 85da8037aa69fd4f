"""Sample-rate conversion.

`Resampler` converts a live stream frame by frame. For the small integer ratios of
telephony (8k <-> 16k, 48k -> 16k) it runs a windowed-sinc polyphase FIR whose
delay is about a millisecond; soxr's stream API buffers ~100 ms before it emits
anything, which a 20 ms frame path cannot afford. `resample` converts a whole
buffer at once (TTS output) with soxr.
"""

from __future__ import annotations

from math import gcd

import numpy as np
import soxr

_MAX_FIR_FACTOR = 6  # beyond this, the zero-stuffed FIR costs more than soxr


def _design_lowpass(up: int, down: int, half_taps_per_phase: int = 12) -> np.ndarray:
    factor = max(up, down)
    n = 2 * half_taps_per_phase * factor + 1
    cutoff = 0.5 / factor * 0.92  # cycles/sample at the upsampled rate, with a transition band
    t = np.arange(n) - (n - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n, 8.0)
    return h * (up / h.sum())


class Resampler:
    """Converts a stream of int16 chunks from `src_rate` to `dst_rate`, keeping state."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        g = gcd(src_rate, dst_rate)
        self._up, self._down = dst_rate // g, src_rate // g
        self._identity = src_rate == dst_rate
        self._soxr = None
        if not self._identity and max(self._up, self._down) > _MAX_FIR_FACTOR:
            self._soxr = soxr.ResampleStream(src_rate, dst_rate, 1, dtype="int16", quality="HQ")
        elif not self._identity:
            self._h = _design_lowpass(self._up, self._down)
            self._hist = np.zeros(self._h.size - 1, dtype=np.float64)
            self._phase = 0

    def process(self, pcm: np.ndarray) -> np.ndarray:
        if self._identity:
            return pcm
        if self._soxr is not None:
            return self._soxr.resample_chunk(pcm.astype(np.int16, copy=False))
        up = np.zeros(pcm.size * self._up, dtype=np.float64)
        up[:: self._up] = pcm
        buf = np.concatenate((self._hist, up))
        y = np.convolve(buf, self._h, mode="valid")
        self._hist = buf[buf.size - self._hist.size:]
        out = y[self._phase:: self._down]
        # Where the next output sample falls relative to the next chunk's start.
        self._phase = (self._phase + out.size * self._down) - up.size
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """One-shot conversion of a whole buffer."""
    if src_rate == dst_rate:
        return pcm
    return soxr.resample(pcm.astype(np.int16, copy=False), src_rate, dst_rate, quality="HQ")
