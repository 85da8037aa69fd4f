"""Call recording: the caller and the agent, time-aligned, into one WAV (active-call's recorder).

The media session hands every frame it hears from the caller and every frame it sends
to the caller to a `CallRecorder`, whatever carries the call (`/call`, WebRTC, SIP), so
one recorder serves every path. Stereo by default (caller left, agent right, as
active-call records its two tracks); `stereo: false` mixes them into mono.

Each side is written as it comes to its own raw temp file, with silence where that side
sent nothing (the agent between replies, a caller whose RTP paused); `close()` joins
them into the WAV in one-second blocks, so memory stays flat however long the call.
File writes go to one writer thread per process, in order, off the event loop.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxray.logs import get_logger
from voxray.media.g711 import alaw_encode, ulaw_encode
from voxray.media.resample import Resampler
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import RecorderOption

log = get_logger("voxray.media")

# WAV format tags: PCM, A-law, mu-law (what active-call's `format` names).
_FORMATS = {"wav": (1, 16), "pcm": (1, 16), "pcma": (6, 8), "pcmu": (7, 8)}
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voxray-recorder")
_FLUSH_BYTES = 32_000  # a side's pending audio goes to disk about once a second
# A side that sent nothing for longer than this gets silence in its place. The caller's
# frames come in bursts on /call (one socket read per VAD chunk, ~100 ms), the agent's
# are paced every ptime; either way a smaller lag is delivery, not a pause.
_GAP_S = {"caller": 0.25, "agent": 0.06}


def recording_path(recordings_dir: str, name: str, call_id: str, fmt: str | None = None) -> Path:
    """Where `recorder.recorderFile` is written: inside `media.recordings_dir` (a name or a
    path below it; an absolute path must lie inside it too), `{id}` the call id, `.wav` added."""
    if not name.strip():
        raise ProtocolError("recorder.recorderFile must name the file to record to", 400)
    base = Path(recordings_dir).expanduser().resolve()
    path = Path(name.replace("{id}", call_id)).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if path == base or base not in path.parents:
        raise ProtocolError(f"recorder.recorderFile must be a file inside the recordings folder {base} "
                            "(media.recordings_dir)", 403)
    if path.suffix.lower() != ".wav":
        path = path.with_name(path.name + ".wav")
    return path


def check_format(option: RecorderOption) -> str:
    fmt = (option.format or "wav").lower()
    if fmt not in _FORMATS:
        raise ProtocolError(f"recorder.format {option.format!r} is not supported (wav, pcm, pcmu, pcma)", 501)
    return fmt


def wav_header(fmt: str, sample_rate: int, channels: int, data_bytes: int) -> bytes:
    tag, bits = _FORMATS[fmt]
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, tag, channels, sample_rate, sample_rate * block, block, bits)
            + b"data" + struct.pack("<I", data_bytes))


@dataclass
class Recording:
    path: str
    duration_ms: int
    bytes: int


class _Side:
    """One party's audio at the recording's rate, written to a raw temp file with gaps filled."""

    def __init__(self, name: str, path: Path, rate: int) -> None:
        self.name = name
        self.path = path
        self.rate = rate
        self.written = 0  # samples, including filled gaps
        self._pending = bytearray()
        self._resamplers: dict[int, Resampler] = {}
        self._file = None

    def add(self, pcm: np.ndarray, rate: int, at_s: float) -> None:
        if rate != self.rate:
            rs = self._resamplers.get(rate)
            if rs is None:
                rs = self._resamplers[rate] = Resampler(rate, self.rate)
            pcm = rs.process(pcm)
        due = int(at_s * self.rate) - pcm.size  # where this frame starts if it arrived on time
        gap = due - self.written
        if gap > _GAP_S[self.name] * self.rate:
            self._pending += bytes(2 * gap)
            self.written += gap
        self._pending += pcm.astype("<i2").tobytes()
        self.written += pcm.size
        if len(self._pending) >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data, self._pending = bytes(self._pending), bytearray()
        _WRITER.submit(self._write, data)

    def _write(self, data: bytes) -> None:
        if self._file is None:
            self._file = open(self.path, "wb")
        self._file.write(data)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class CallRecorder:
    """Feed it both sides of a call; `close()` writes the WAV and says where it is."""

    def __init__(self, path: Path, option: RecorderOption, stereo: bool = True,
                 clock=time.monotonic) -> None:
        self.fmt = check_format(option)
        self.path = path
        self.rate = option.samplerate or 16000
        self.stereo = stereo
        self._clock = clock
        self._t0 = clock()
        path.parent.mkdir(parents=True, exist_ok=True)
        stem = f".{path.name}.{os.getpid()}.{id(self):x}"
        self.caller = _Side("caller", path.with_name(stem + ".caller.raw"), self.rate)
        self.agent = _Side("agent", path.with_name(stem + ".agent.raw"), self.rate)
        self.closed = False

    def heard(self, pcm: np.ndarray, rate: int) -> None:
        """A frame from the caller (decoded, at its codec's rate)."""
        if not self.closed:
            self.caller.add(pcm, rate, self._clock() - self._t0)

    def sent(self, pcm: np.ndarray, rate: int) -> None:
        """A frame the caller is sent (before encoding)."""
        if not self.closed:
            self.agent.add(pcm, rate, self._clock() - self._t0)

    async def close(self) -> Recording:
        """Write the WAV (off the event loop) and remove the temp files."""
        self.closed = True
        for side in (self.caller, self.agent):
            side.flush()
        future = _WRITER.submit(self._assemble)
        return await asyncio.wrap_future(future)

    def _assemble(self) -> Recording:
        for side in (self.caller, self.agent):
            side._close_file()
        n = max(self.caller.written, self.agent.written)
        channels = 2 if self.stereo else 1
        tag_bits = _FORMATS[self.fmt][1]
        data_bytes = n * channels * tag_bits // 8
        block = self.rate  # a second at a time
        try:
            with open(self.path, "wb") as out:
                out.write(wav_header(self.fmt, self.rate, channels, data_bytes))
                files = [open(s.path, "rb") if s.path.exists() else None for s in (self.caller, self.agent)]
                try:
                    for start in range(0, n, block):
                        count = min(block, n - start)
                        left, right = (_read(f, count) for f in files)
                        if self.stereo:
                            frame = np.empty(count * 2, dtype=np.int16)
                            frame[0::2], frame[1::2] = left, right
                        else:
                            frame = np.clip(left.astype(np.int32) + right, -32768, 32767).astype(np.int16)
                        out.write(_encode(frame, self.fmt))
                finally:
                    for f in files:
                        if f is not None:
                            f.close()
        finally:
            for side in (self.caller, self.agent):
                side.path.unlink(missing_ok=True)
        return Recording(path=str(self.path), duration_ms=int(n * 1000 / self.rate),
                         bytes=self.path.stat().st_size)


def _read(f, count: int) -> np.ndarray:
    """`count` samples from a side's raw file, zeros past its end (that side stopped earlier)."""
    data = f.read(count * 2) if f is not None else b""
    pcm = np.frombuffer(data, dtype="<i2")
    return pcm if pcm.size == count else np.concatenate((pcm, np.zeros(count - pcm.size, np.int16)))


def _encode(pcm: np.ndarray, fmt: str) -> bytes:
    if fmt == "pcmu":
        return ulaw_encode(pcm)
    if fmt == "pcma":
        return alaw_encode(pcm)
    return pcm.astype("<i2").tobytes()


def open_recorder(recordings_dir: str, option: RecorderOption | None, call_id: str) -> CallRecorder | None:
    """The call's recorder, if its option asks for one (errors: ProtocolError, for the agent)."""
    if option is None or not option.recorder_file:
        return None
    check_format(option)
    path = recording_path(recordings_dir, option.recorder_file, call_id)
    try:
        return CallRecorder(path, option, stereo=option.stereo)
    except OSError as exc:  # the folder cannot be made: the call goes on unrecorded
        log.warning("recording not started", extra={"error": repr(exc), "file": str(path)})
        return None
