"""The provider interfaces. A deployment hosts providers; a call picks one by name.

Providers are plain objects that load in a replica's process. Their blocking work
runs off the event loop (in a thread) so one replica serves many calls.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextvars import ContextVar
from typing import TypeVar

import numpy as np
from pydantic import BaseModel

from voxray.media.messages import CallCredentials

__all__ = ["AsrProvider", "CallCredentials", "Transcript", "TtsProvider", "model_lane", "run_model_step"]

T = TypeVar("T")

# Where a local provider's blocking model steps run: None is asyncio's default executor.
# The TTS replica sets it around each step of a reply's later sentences to threads at the
# lowest CPU priority (voxray/priority.py), so they never slow a turn's transcript.
model_lane: ContextVar[Executor | None] = ContextVar("model_lane", default=None)


async def run_model_step(fn: Callable[..., T], *args) -> T:
    """Run one blocking model step off the event loop, in the current `model_lane`."""
    return await asyncio.get_running_loop().run_in_executor(model_lane.get(), functools.partial(fn, *args))


class Transcript(BaseModel):
    text: str
    language: str | None = None
    # seconds of audio and of compute, for metrics
    audio_s: float = 0.0
    compute_s: float = 0.0
    window_s: float | None = None  # the encoder window a local Whisper used


class AsrProvider(ABC):
    name: str

    @abstractmethod
    def load(self) -> None:
        """Load models or open clients (blocking); called once when the replica starts."""

    @abstractmethod
    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None,
                         creds: CallCredentials | None = None) -> Transcript:
        """Transcribe one utterance of int16 mono 16 kHz audio."""


class TtsChunk(BaseModel):
    pcm: bytes  # int16 little-endian mono
    sample_rate: int


class TtsProvider(ABC):
    name: str
    computes_locally = False  # its synthesis runs on this replica's cores (not a network call)

    @abstractmethod
    def load(self) -> None:
        """Load models or open clients (blocking); called once when the replica starts."""

    @abstractmethod
    def synthesize(self, text: str, speed: float = 1.0, speaker: str | None = None,
                   creds: CallCredentials | None = None) -> AsyncIterator[TtsChunk]:
        """Yield audio chunks as they are ready."""


class ProviderError(RuntimeError):
    """A provider failed; the message is safe to show to the agent."""
