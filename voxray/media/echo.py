"""Acoustic/line echo cancellation for one call: WebRTC's AudioProcessingModule (AEC3).

The server knows exactly what the caller hears: every frame the speaker paces out is
the far-end reference. `EchoCanceller.far_end` records it on a wall-clock timeline
when it is handed to the transport; `near_end` takes the caller's 16 kHz audio (after
decoding and resampling, before denoise/VAD/ASR) and returns it with our own voice
taken out. Pure computation, no I/O; one instance per call, one event loop.

Timing. The APM wants 10 ms render and capture frames in lockstep, the render frame
being what was played "now". Media frames are 20 ms, and the caller's frames can come
in bursts (`/call` reads Serve's proxy once per VAD chunk), so both streams are put on
one clock:
- far-end samples are written into a ring at `at * 16000` (the moment they were sent);
- the caller's stream position p maps to time `t0 + p / 16000`, where `t0` is the
  earliest arrival seen (`arrival - samples so far`, a minimum that creeps up 1 ms/s
  to follow a slower sender clock), as a jitter buffer estimates its base delay;
- each 10 ms block of the caller's audio is processed after the 10 ms of far-end audio
  sent `delay_ms - delay_headroom_ms` before it. AEC3 finds the rest of the echo
  path's delay itself (measured: 40-500 ms with no hint; at 700 ms it gave 2 dB, with
  `delay_ms=650` 26 dB), so `delay_ms` only needs to be set for longer paths.

Bypass: echo can only come back for a while after we played something; outside
`delay_ms + tail_ms` after the last non-silent far-end sample `near_end` returns its
input untouched (no copy, no APM call), and the APM is only created on the first
audio we play: calls where the agent is silent pay nothing.

ERLE (echo return loss enhancement): 10*log10(input energy / output energy) over the
last `erle_window_ms` of processed (echo-possible) audio, `erle_db`. Caller speech
over our audio (double talk) lowers it, so read it as a per-call gauge or histogram,
not a per-frame truth.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from voxray.media.resample import Resampler

__all__ = ["EchoConfig", "EchoCanceller", "SAMPLE_RATE", "BLOCK", "preload"]


def preload() -> None:
    """Import the canceller's native module now (~0.3 s once per process), at process start
    rather than inside the first call that plays audio."""
    import livekit.rtc.apm  # noqa: F401

SAMPLE_RATE = 16000
BLOCK = SAMPLE_RATE // 100  # the APM's 10 ms frame
_RING_S = 4.0  # far-end history kept (covers delay_ms up to ~3 s with jitter)
_SILENT = 4  # |sample| at or below this is silence (a zeroed or dithered frame)
_ENERGY_FLOOR = 100.0  # mean square of a block below ~-70 dBFS: left out of ERLE (noise floor)


@dataclass(frozen=True)
class EchoConfig:
    """Per call (or per deployment) echo-cancellation settings."""

    enabled: bool = True
    delay_ms: int = 0  # expected echo path delay (send -> echo back); AEC3 searches ~0-500 ms beyond it
    delay_headroom_ms: int = 40  # the reference leads the estimate by this much (echo must not precede it)
    tail_ms: int = 800  # echo may still come back this long (plus delay_ms) after our last audio
    noise_suppression: bool = False  # the APM's own noise suppressor (RNNoise is `denoise`)
    high_pass_filter: bool = True  # removes DC/rumble before the canceller
    auto_gain_control: bool = False  # changes levels the VAD threshold was tuned on: off
    erle_window_ms: int = 2000  # the sliding window of `erle_db`
    resync_ms: int = 8  # the reference pointer jumps only when timing moved more than this
    send_slack_ms: int = 30  # far-end frames within this of where the last one ended stay contiguous

    def __post_init__(self) -> None:
        if not 0 <= self.delay_ms <= 3000:
            raise ValueError("echo delay_ms must be within 0..3000")
        if self.delay_headroom_ms < 0 or self.tail_ms < 0 or self.erle_window_ms < 100:
            raise ValueError("echo headroom/tail must be >= 0 and erle_window_ms >= 100")


def _as_int16(pcm: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(pcm, np.ndarray):
        return pcm if pcm.dtype == np.int16 else np.clip(np.rint(pcm), -32768, 32767).astype(np.int16)
    return np.frombuffer(pcm, dtype="<i2")


class EchoCanceller:
    """One call's echo canceller: `far_end` what we send, `near_end` what the caller sends."""

    def __init__(self, config: EchoConfig | None = None, clock=time.monotonic) -> None:
        self.config = config or EchoConfig()
        self._clock = clock
        # Imported here (not at module load): importing livekit.rtc costs ~0.3 s once per process.
        from livekit.rtc.apm import AudioProcessingModule

        self._apm_cls = AudioProcessingModule
        self._apm = None  # created on the first far-end audio
        self._bulk = max(0, self.config.delay_ms - self.config.delay_headroom_ms) * SAMPLE_RATE // 1000
        # far-end ring, indexed by absolute sample number on a 16 kHz wall clock
        self._ring = np.zeros(int(_RING_S * SAMPLE_RATE), dtype=np.int16)
        self._far_write: int | None = None  # absolute index after the last sample written
        self._far_voice_end: int | None = None  # absolute index after the last non-silent sample
        self._resamplers: dict[int, Resampler] = {}
        self._slack = self.config.send_slack_ms * SAMPLE_RATE // 1000
        # caller's stream
        self._near_pos = 0  # samples seen
        self._t0: float | None = None  # wall time of near stream position 0
        self._last_at: float | None = None
        self._pending = np.zeros(0, dtype=np.int16)  # < BLOCK samples waiting for a full block
        self._ref_pos: int | None = None  # absolute far index of the next reference block
        # the APM's in-place buffers (numpy views over the bytearrays the FFI writes into)
        self._near_buf = bytearray(BLOCK * 2)
        self._far_buf = bytearray(BLOCK * 2)
        self._near_view = np.frombuffer(self._near_buf, dtype=np.int16)
        self._far_view = np.frombuffer(self._far_buf, dtype=np.int16)
        self._near_frame = self._far_frame = None
        # ERLE over processed blocks
        n = max(1, self.config.erle_window_ms // 10)
        self._erle_hist: deque[tuple[float, float]] = deque(maxlen=n)
        self._erle_in = 0.0
        self._erle_out = 0.0
        # counters (for metrics / tests)
        self.blocks_processed = 0
        self.samples_bypassed = 0

    # -- far end: what the caller hears ----------------------------------------------

    def far_end(self, pcm: bytes | np.ndarray, sample_rate: int = SAMPLE_RATE, at: float | None = None) -> None:
        """A frame we sent to the caller, at `at` (time.monotonic(); default now): the
        moment it is handed to the transport / paced out. Any sample rate; kept at 16 kHz."""
        if not self.config.enabled:
            return
        x = _as_int16(pcm)
        if sample_rate != SAMPLE_RATE:
            rs = self._resamplers.get(sample_rate)
            if rs is None:
                rs = self._resamplers[sample_rate] = Resampler(sample_rate, SAMPLE_RATE)
            x = rs.process(x)
        if x.size == 0:
            return
        at = self._clock() if at is None else at
        pos = round(at * SAMPLE_RATE)
        cap = self._ring.size
        if self._far_write is None or abs(pos - self._far_write) > self._slack:
            # A gap (nothing sent for a while: zero it) or a clock jump: start writing at `pos`.
            if self._far_write is not None and 0 < pos - self._far_write < cap:
                self._write(self._far_write, np.zeros(pos - self._far_write, np.int16))
            elif self._far_write is not None:
                self._ring[:] = 0  # nothing in the ring belongs before `pos` any more
            self._far_write = pos
        # else: frames paced a little early or late (a loop stall, then catching up on the
        # speaker's absolute schedule) stay contiguous: a steady reference
        self._write(self._far_write, x)
        self._far_write += x.size
        loud = np.flatnonzero(np.abs(x) > _SILENT)
        if loud.size:
            self._far_voice_end = self._far_write - x.size + int(loud[-1]) + 1
            if self._apm is None:
                self._create_apm()

    def _write(self, start: int, x: np.ndarray) -> None:
        cap = self._ring.size
        if x.size >= cap:
            start, x = start + x.size - cap, x[-cap:]
        i = start % cap
        first = min(x.size, cap - i)
        self._ring[i:i + first] = x[:first]
        if first < x.size:
            self._ring[:x.size - first] = x[first:]

    def _read(self, start: int, out: np.ndarray) -> None:
        """Far-end samples [start, start+len(out)) into `out`; zeros where none were written."""
        out[:] = 0
        if self._far_write is None:
            return
        cap = self._ring.size
        lo = max(start, self._far_write - cap)
        hi = min(start + out.size, self._far_write)
        if hi <= lo:
            return
        i = lo % cap
        m = min(hi - lo, cap - i)  # at most one wrap
        out[lo - start:lo - start + m] = self._ring[i:i + m]
        if m < hi - lo:
            out[lo - start + m:hi - start] = self._ring[:hi - lo - m]

    def _create_apm(self) -> None:
        from livekit.rtc import AudioFrame

        c = self.config
        self._apm = self._apm_cls(echo_cancellation=True, noise_suppression=c.noise_suppression,
                                  high_pass_filter=c.high_pass_filter, auto_gain_control=c.auto_gain_control)
        # Required while echo cancellation is on; AEC3 estimates the delay itself, this is a hint.
        self._apm.set_stream_delay_ms(max(0, c.delay_ms - self._bulk * 1000 // SAMPLE_RATE))
        self._near_frame = AudioFrame(self._near_buf, SAMPLE_RATE, 1, BLOCK)
        self._far_frame = AudioFrame(self._far_buf, SAMPLE_RATE, 1, BLOCK)

    # -- near end: the caller ----------------------------------------------------------

    def near_end(self, pcm16k: bytes | np.ndarray, at: float | None = None) -> np.ndarray:
        """The caller's 16 kHz int16 audio that arrived at `at` (default now); returns the
        audio with our echo removed. While echo cannot be present it is the input itself;
        while processing, 10 ms blocks come out (a remainder waits for the next call)."""
        x = _as_int16(pcm16k)
        if not self.config.enabled:
            return x
        at = self._clock() if at is None else at
        start = self._near_pos
        self._near_pos += x.size
        # Position 0 of the caller's stream in wall time: the earliest arrival wins.
        cand = at - self._near_pos / SAMPLE_RATE
        if self._t0 is None:
            self._t0 = cand
        else:
            creep = max(0.0, at - (self._last_at or at)) * 1e-3
            self._t0 = min(self._t0 + creep, cand)
        self._last_at = at
        # Is this chunk's end within reach of echo of our last audio?
        if not self._echo_possible(start + x.size):
            if self._pending.size:
                x = np.concatenate((self._pending, x))
                self._pending = np.zeros(0, dtype=np.int16)
            self.samples_bypassed += x.size
            return x
        buf = np.concatenate((self._pending, x)) if self._pending.size else x
        nblocks = buf.size // BLOCK
        first_pos = start - self._pending.size  # near stream position of buf[0]
        out = np.empty(nblocks * BLOCK, dtype=np.int16)
        for b in range(nblocks):
            blk = buf[b * BLOCK:(b + 1) * BLOCK]
            out[b * BLOCK:(b + 1) * BLOCK] = self._process_block(blk, first_pos + b * BLOCK)
        self._pending = buf[nblocks * BLOCK:].copy()
        return out

    def _near_abs(self, pos: int) -> int:
        """Absolute (wall-clock) sample index of the caller's stream position `pos`."""
        return round((self._t0 or 0.0) * SAMPLE_RATE) + pos

    def _echo_possible(self, near_end_pos: int) -> bool:
        if self._apm is None or self._far_voice_end is None:
            return False
        reach = (self.config.delay_ms + self.config.tail_ms) * SAMPLE_RATE // 1000
        return self._near_abs(near_end_pos) - BLOCK <= self._far_voice_end + reach

    def _process_block(self, blk: np.ndarray, pos: int) -> np.ndarray:
        target = self._near_abs(pos) - self._bulk
        if self._ref_pos is None or abs(target - self._ref_pos) > self.config.resync_ms * SAMPLE_RATE // 1000:
            self._ref_pos = target
        self._read(self._ref_pos, self._far_view)
        self._ref_pos += BLOCK
        self._near_view[:] = blk
        self._apm.process_reverse_stream(self._far_frame)
        self._apm.process_stream(self._near_frame)
        cleaned = self._near_view.copy()
        self.blocks_processed += 1
        e_in = float(np.dot(blk.astype(np.float32), blk.astype(np.float32))) / BLOCK
        if e_in >= _ENERGY_FLOOR and np.any(self._far_view):
            e_out = float(np.dot(cleaned.astype(np.float32), cleaned.astype(np.float32))) / BLOCK
            if len(self._erle_hist) == self._erle_hist.maxlen:
                old_in, old_out = self._erle_hist[0]
                self._erle_in -= old_in
                self._erle_out -= old_out
            self._erle_hist.append((e_in, e_out))
            self._erle_in += e_in
            self._erle_out += e_out
        return cleaned

    # -- state -------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether the caller's audio now goes through the canceller."""
        return self._echo_possible(self._near_pos)

    @property
    def erle_db(self) -> float | None:
        """Echo return loss enhancement over the last `erle_window_ms` of processed audio
        in which we played something and the line was not silent; None with under 0.5 s."""
        if len(self._erle_hist) < 50:
            return None
        return 10 * math.log10(max(self._erle_in, 1e-9) / max(self._erle_out, 1e-3))

    def flush(self) -> np.ndarray:
        """The caller's samples still waiting for a full 10 ms block (unprocessed)."""
        out, self._pending = self._pending, np.zeros(0, dtype=np.int16)
        return out

    def close(self) -> None:
        self._apm = None  # the FFI handle is dropped with the object
