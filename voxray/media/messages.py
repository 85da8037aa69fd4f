"""Typed requests and replies between a call's media session and the models (VAD, ASR, TTS)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CallCredentials(BaseModel):
    """Per-call overrides the agent may pass (`asr`/`tts` options): endpoint, key, model."""

    endpoint: str | None = None
    secret_key: str | None = None
    model: str | None = None


class VadChunk(BaseModel):
    """Audio of one stream plus the stream's model state, so any replica can serve it."""

    key: str
    pcm: bytes  # int16 LE @ 16 kHz, a whole number of 512-sample windows
    state: bytes | None = None  # float32 [2, 128] recurrent state; None = fresh stream
    context: bytes | None = None  # float32 [64] last samples of the previous window


class VadChunkResult(BaseModel):
    key: str
    probs: list[float]
    state: bytes
    context: bytes


class VadBatch(BaseModel):
    chunks: list[VadChunk]


class VadBatchResult(BaseModel):
    results: list[VadChunkResult]
    compute_ms: float = 0.0


class AsrRequest(BaseModel):
    call_id: str
    pcm: bytes  # int16 LE mono 16 kHz
    language: str | None = None
    provider: str | None = None
    creds: CallCredentials | None = None
    # A partial may wait behind finals and be dropped for a newer one from the same call.
    partial: bool = False


class AsrResult(BaseModel):
    text: str
    provider: str
    language: str | None = None
    audio_s: float = 0.0
    compute_s: float = 0.0
    failures: list[str] = Field(default_factory=list)  # providers that failed before this one
    batch_size: int = 1  # utterances transcribed in the same model call (ASR batching)
    queued_s: float = 0.0  # how long it waited in the replica's queue for a model worker
    skipped: bool = False  # a partial dropped unheard: a newer request of the same call superseded it


class TtsRequest(BaseModel):
    call_id: str
    text: str
    sample_rate: int = Field(16000, ge=8000, le=48000)
    speed: float = 1.0
    speaker: str | None = None
    provider: str | None = None
    creds: CallCredentials | None = None
    # The first piece of a track (what the caller waits for): a replica synthesizes it
    # before other tracks' later pieces (deployments/tts_gate.py).
    first_piece: bool = True


class TtsAudio(BaseModel):
    pcm: bytes  # int16 LE mono at the requested rate
    sample_rate: int
    provider: str
    failures: list[str] = Field(default_factory=list)  # on the first chunk: providers that failed first
