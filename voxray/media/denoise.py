"""Noise suppression with RNNoise (pyrnnoise's bundled library, driven frame by frame).

RNNoise works on 10 ms frames at 48 kHz; the call path is 16 kHz, so audio is
resampled up, denoised and resampled back, keeping state across frames.
"""

from __future__ import annotations

import ctypes

import numpy as np

from voxray.media.resample import Resampler

FRAME_48K = 480


class Denoiser:
    def __init__(self) -> None:
        from pyrnnoise import rnnoise  # the low-level API: its high-level helper crashes if called first

        self._lib = rnnoise.lib
        self._state = self._lib.rnnoise_create(None)
        self._up = Resampler(16000, 48000)
        self._down = Resampler(48000, 16000)
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, pcm16k: np.ndarray) -> np.ndarray:
        """Denoise a chunk of 16 kHz int16; returns what is ready (delay ~10 ms)."""
        up = self._up.process(pcm16k).astype(np.float32)
        buf = np.concatenate((self._pending, up))
        n = buf.size // FRAME_48K * FRAME_48K
        out = np.empty(n, dtype=np.float32)
        for i in range(0, n, FRAME_48K):
            frame = np.ascontiguousarray(buf[i:i + FRAME_48K])
            ptr = frame.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            self._lib.rnnoise_process_frame(self._state, ptr, ptr)
            out[i:i + FRAME_48K] = frame
        self._pending = buf[n:]
        clean = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
        return self._down.process(clean)

    def close(self) -> None:
        if self._state:
            self._lib.rnnoise_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
