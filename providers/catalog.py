"""Provider settings and the factory that turns them into provider objects."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from voxray.providers.base import AsrProvider, TtsProvider


class ProviderSpec(BaseModel):
    name: str
    kind: Literal["whisper", "piper", "openai", "deepgram"]
    endpoint: str | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    model: str | None = None
    voice: str | None = None
    model_path: str | None = None  # local models
    cpu_threads: int = 2
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


def build_asr(spec: ProviderSpec) -> AsrProvider:
    if spec.kind == "whisper":
        from voxray.providers.whisper_local import WhisperLocal

        p = WhisperLocal(model_path=spec.model_path, cpu_threads=spec.cpu_threads)
    elif spec.kind == "openai":
        from voxray.providers.openai_compat import OpenAiAsr

        p = OpenAiAsr(name=spec.name, **_http_kwargs(spec))
    elif spec.kind == "deepgram":
        from voxray.providers.deepgram import DeepgramAsr

        p = DeepgramAsr(name=spec.name, **_http_kwargs(spec))
    else:
        raise ValueError(f"'{spec.kind}' is not an ASR provider")
    p.name = spec.name
    return p


def build_tts(spec: ProviderSpec) -> TtsProvider:
    if spec.kind == "piper":
        from voxray.providers.piper_local import PiperLocal

        p = PiperLocal(voice_path=spec.model_path)
    elif spec.kind == "openai":
        from voxray.providers.openai_compat import OpenAiTts

        p = OpenAiTts(name=spec.name, voice=spec.voice or "alloy", **_http_kwargs(spec))
    elif spec.kind == "deepgram":
        from voxray.providers.deepgram import DeepgramTts

        p = DeepgramTts(name=spec.name, **_http_kwargs(spec))
    else:
        raise ValueError(f"'{spec.kind}' is not a TTS provider")
    p.name = spec.name
    return p
