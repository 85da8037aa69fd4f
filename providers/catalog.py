"""Provider settings and the factory that turns them into provider objects."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from voxray.providers.base import AsrProvider, TtsProvider
from voxray.providers.device import ComputeType, Device


class ProviderSpec(BaseModel):
    name: str
    kind: Literal["whisper", "piper", "openai", "deepgram"]
    endpoint: str | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    model: str | None = None
    voice: str | None = None
    model_path: str | None = None  # local models
    cpu_threads: int = Field(2, ge=0, le=64, description="local models on the CPU: intra-op threads (whisper: "
                             "per worker; piper: 0 is onnxruntime's default, a spinning thread per core)")
    workers: int = Field(1, ge=1, le=8, description="local Whisper: model calls run at once (CTranslate2 workers)")
    # Local models (whisper, piper): where they run (None: the models section's setting).
    device: Device | None = Field(None, description="auto: CUDA when the replica has a GPU, else the CPU")
    compute_type: ComputeType | None = Field(None, description="whisper: CTranslate2 compute type; "
                                             "auto: float16 on CUDA, int8 on the CPU")
    # Local Whisper encoder windows (None: the models section's settings).
    window_bucket_s: float | None = Field(None, ge=1.0, le=30.0)
    min_window_s: float | None = Field(None, ge=1.0, le=30.0)
    timeout_s: float | None = Field(None, description="per attempt; None = no limit (local models)")


class ProvidersConfig(BaseModel):
    """Providers in fallback order: a call's chosen provider first, then these in turn."""

    asr: list[ProviderSpec] = Field(default_factory=lambda: [ProviderSpec(name="whisper", kind="whisper")])
    tts: list[ProviderSpec] = Field(default_factory=lambda: [ProviderSpec(name="piper", kind="piper")])
    retries: int = Field(1, ge=0, le=5, description="retries per provider before falling back")


def _http_kwargs(spec: ProviderSpec) -> dict:
    kw = {"api_key_env": spec.api_key_env, "timeout_s": spec.timeout_s or 10.0}
    if spec.endpoint:
        kw["endpoint"] = spec.endpoint
    if spec.model:
        kw["model"] = spec.model
    return kw


def _build(spec: ProviderSpec, factories: dict, what: str):
    make = factories.get(spec.kind)
    if make is None:
        raise ValueError(f"'{spec.kind}' is not {what} provider")
    p = make(spec)
    p.name = spec.name
    return p


def _whisper(spec: ProviderSpec) -> AsrProvider:
    from voxray.providers.whisper_local import WhisperLocal

    windows = {k: v for k, v in (("window_bucket_s", spec.window_bucket_s), ("min_window_s", spec.min_window_s))
               if v is not None}
    placement = {k: v for k, v in (("device", spec.device), ("compute_type", spec.compute_type)) if v is not None}
    return WhisperLocal(model_path=spec.model_path, cpu_threads=spec.cpu_threads, workers=spec.workers,
                        **windows, **placement)


def _openai_asr(spec: ProviderSpec) -> AsrProvider:
    from voxray.providers.openai_compat import OpenAiAsr

    return OpenAiAsr(name=spec.name, **_http_kwargs(spec))


def _deepgram_asr(spec: ProviderSpec) -> AsrProvider:
    from voxray.providers.deepgram import DeepgramAsr

    return DeepgramAsr(name=spec.name, **_http_kwargs(spec))


def _piper(spec: ProviderSpec) -> TtsProvider:
    from voxray.providers.piper_local import PiperLocal

    return PiperLocal(voice_path=spec.model_path, threads=spec.cpu_threads,
                      **({"device": spec.device} if spec.device else {}))


def _openai_tts(spec: ProviderSpec) -> TtsProvider:
    from voxray.providers.openai_compat import OpenAiTts

    return OpenAiTts(name=spec.name, voice=spec.voice or "alloy", **_http_kwargs(spec))


def _deepgram_tts(spec: ProviderSpec) -> TtsProvider:
    from voxray.providers.deepgram import DeepgramTts

    return DeepgramTts(name=spec.name, **_http_kwargs(spec))


# Plugins load their heavy modules only when configured.
ASR_KINDS = {"whisper": _whisper, "openai": _openai_asr, "deepgram": _deepgram_asr}
TTS_KINDS = {"piper": _piper, "openai": _openai_tts, "deepgram": _deepgram_tts}


def build_asr(spec: ProviderSpec) -> AsrProvider:
    return _build(spec, ASR_KINDS, "an ASR")


def build_tts(spec: ProviderSpec) -> TtsProvider:
    return _build(spec, TTS_KINDS, "a TTS")
