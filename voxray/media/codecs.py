"""Audio codecs for the media path: raw PCM, G.711 mu/A-law and G.722.

Each codec turns payload bytes into int16 samples at its own clock rate and back.
"""

from __future__ import annotations

import fractions
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from voxray.media import g711


class CodecError(ValueError):
    """Undecodable payload or unsupported codec."""


class Codec(ABC):
    name: str
    sample_rate: int
    bytes_per_sample: float

    @abstractmethod
    def decode(self, payload: bytes) -> np.ndarray: ...

    @abstractmethod
    def encode(self, pcm: np.ndarray) -> bytes: ...

    def frame_bytes(self, ptime_ms: int = 20) -> int:
        return int(self.sample_rate * ptime_ms / 1000 * self.bytes_per_sample)


class Pcm16(Codec):
    name = "pcm"
    sample_rate = 16000
    bytes_per_sample = 2

    def decode(self, payload: bytes) -> np.ndarray:
        if len(payload) % 2:
            raise CodecError("pcm payload must hold whole 16-bit samples")
        return np.frombuffer(payload, dtype="<i2").astype(np.int16)

    def encode(self, pcm: np.ndarray) -> bytes:
        return pcm.astype("<i2", copy=False).tobytes()


class G711(Codec):
    """G.711 at 8 kHz, one byte a sample: table-driven, bit-exact with the ITU reference."""

    sample_rate = 8000
    bytes_per_sample = 1

    def __init__(self, law: str) -> None:
        self.name = law
        self._decode = g711.ulaw_decode if law == "pcmu" else g711.alaw_decode
        self._encode = g711.ulaw_encode if law == "pcmu" else g711.alaw_encode

    def decode(self, payload: bytes) -> np.ndarray:
        return self._decode(payload)

    def encode(self, pcm: np.ndarray) -> bytes:
        return self._encode(pcm)


class _FFmpegCodec(Codec):
    """A stateful coder through FFmpeg (PyAV ships it), 16 kHz mono int16 on our side.
    Each direction of a call keeps state, so every call needs its own instance."""

    sample_rate = 16000

    def __init__(self, codec: str, decoder_rate: int, decoder_s16: bool = False, **encoder: object) -> None:
        import av  # imported lazily: only calls with this codec pay for it

        self._av = av
        self._dec = av.CodecContext.create(codec, "r")
        self._dec.sample_rate = decoder_rate
        self._dec.layout = "mono"
        if decoder_s16:
            self._dec.format = "s16"
        self._enc = av.CodecContext.create(codec, "w")
        self._enc.sample_rate = 16000
        self._enc.layout = "mono"
        self._enc.format = "s16"
        for key, value in encoder.items():
            setattr(self._enc, key, value)
        self._enc.time_base = fractions.Fraction(1, 16000)
        self._enc.open()
        self._pts = 0

    def _decoded(self, payload: bytes) -> tuple[np.ndarray, int]:
        """The samples of one packet and their rate (none: an empty array at our rate)."""
        try:
            frames = self._dec.decode(self._av.Packet(payload))
        except self._av.error.FFmpegError as exc:
            raise CodecError(f"{self.name} decode failed: {exc}") from None
        if not frames:
            return np.zeros(0, dtype=np.int16), self.sample_rate
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)
        return pcm, frames[0].sample_rate

    def decode(self, payload: bytes) -> np.ndarray:
        return self._decoded(payload)[0]

    def encode(self, pcm: np.ndarray) -> bytes:
        frame = self._av.AudioFrame.from_ndarray(
            pcm.astype(np.int16, copy=False).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        frame.pts = self._pts
        self._pts += pcm.size
        return b"".join(bytes(p) for p in self._enc.encode(frame))


class G722(_FFmpegCodec):
    """G.722 (ADPCM): 16 kHz audio, 64 kbit/s."""

    name = "g722"
    bytes_per_sample = 0.5

    def __init__(self) -> None:
        super().__init__("g722", decoder_rate=16000)


class Opus(_FFmpegCodec):
    """Opus through libopus: one packet per WebSocket message each way, 16 kHz mono voice
    (20 ms frames: the session's ptime)."""

    name = "opus"
    bytes_per_sample = 0.1  # ~32 kbit/s; packets vary (frame_bytes is only a hint)

    def __init__(self) -> None:
        from voxray.media.resample import Resampler

        # libopus decodes at 48 kHz whatever was asked
        super().__init__("libopus", decoder_rate=48000, decoder_s16=True, bit_rate=32000,
                         options={"application": "voip"})
        self._down = Resampler(48000, 16000)

    def decode(self, payload: bytes) -> np.ndarray:
        pcm, rate = self._decoded(payload)
        return self._down.process(pcm) if rate == 48000 else pcm


_CODECS: dict[str, Callable[[], Codec]] = {
    "pcm": Pcm16, "pcmu": lambda: G711("pcmu"), "pcma": lambda: G711("pcma"), "g722": G722, "opus": Opus,
}


def make_codec(name: str) -> Codec:
    try:
        return _CODECS[name.lower()]()
    except KeyError:
        raise CodecError(f"unsupported codec '{name}' (supported: {', '.join(_CODECS)})") from None
