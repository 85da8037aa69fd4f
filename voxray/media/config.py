"""What a call's media session is set up with, and where its output goes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from voxray.protocol import events as ev


@dataclass(frozen=True)
class MediaConfig:
    ptime_ms: int = 20
    vad_chunk_windows: int = 3  # 96 ms of audio per VAD request per call
    vad_speech_chunk_windows: int = 1  # ... while the caller speaks (0: vad_chunk_windows throughout)
    vad_in_process: bool = True  # Silero in the process holding the audio (ingress, UA worker), not a deployment
    vad_model: str | None = None  # its ONNX file (None: the packaged one)
    vad_quiet_margin_db: float = 6.0  # between turns, chunks this close to the line's quiet skip Silero (0: never)
    vad_batch_window_ms: int = 20  # the most a chunk waits for other calls' chunks (0: none)
    ws_receive_max_wait_ms: int = 110  # /call: the most a message waits in Serve's proxy (0: one read per message)
    ws_compression: bool = False  # /call and the API: accept permessage-deflate (direct ingress)
    end_silence_ms: int = 480  # silence that ends a turn when its transcript says nothing either way
    eou_complete_ms: int = 200  # ... when it reads as a finished sentence
    eou_incomplete_ms: int = 1200  # ... when it stops mid-thought
    speculative_asr: bool = True  # transcribe a pause before the turn ends (its audio is final by then)
    tts_first_clause: bool = True  # `tts` of a whole text: synthesize its first clause alone, first
    echo_cancel: bool = False  # cancel our own voice in the caller's audio (voxray/media/echo.py): lines with echo
    echo_delay_ms: int = 0  # expected echo delay beyond what the canceller finds itself (~500 ms)
    tts_cache_mb: float = 64.0  # audio of `tts` with a cacheKey, per process (0: no cache)
    tts_phrase_max_chars: int = 24  # pieces this short ("Sure,", "One moment.") replay from that cache (0: never)
    recordings_dir: str = "~/.voxray/recordings"  # `recorder.recorderFile` names a file in here
    asr_provider: str | None = None
    tts_provider: str | None = None
    play_dirs: tuple[str, ...] = ()  # folders `play` (and SIP music on hold) may read files from
    play_cache_dir: str | None = None
    play_allow_private_urls: bool = False


class MediaSink(Protocol):
    """Where a session's output goes: events to the agent, encoded audio to the caller.

    A sink may also have `clear_audio()` (drop audio queued toward the caller: barge-in).
    """

    async def emit(self, event: ev.EventBase) -> None: ...
    async def send_audio(self, payload: bytes) -> None: ...
    async def request_hangup(self, reason: str, initiator: str) -> None: ...


def fallback_metrics(kind: str, used: str, failures: list[str]) -> ev.Metrics:
    """Tells the agent a provider (or model replica) failed and which one served instead."""
    return ev.Metrics(key=f"fallback.{kind}", duration=0, data={"provider": used, "failures": failures})
