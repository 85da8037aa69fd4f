"""What a call's media session is set up with, and where its output goes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from voxray.protocol import events as ev


@dataclass(frozen=True)
class MediaConfig:
    ptime_ms: int = 20
    vad_chunk_windows: int = 2  # 64 ms of audio per VAD request per call
    end_silence_ms: int = 480
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
